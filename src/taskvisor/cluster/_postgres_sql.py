"""The PostgreSQL schema: three tables, one sequence and one PL/pgSQL function per round trip.

``{p}`` is the versioned prefix (``taskvisor_v1`` by default). Each function runs as one
statement in its own transaction, so one call is one round trip and one atomic step. Every
operation on a key first locks its row in ``{p}_keys`` (``_lock``), which serialises all
work on that key across the cluster; the renewal round locks only rows this instance holds,
and tries the keys it waits for with ``SKIP LOCKED``, so it never waits in a lock cycle.
Time is ``clock_timestamp()``: the server's clock.

Status codes returned by the functions: 0 granted, 1 queued / waiting, 2 busy, 3 queue full,
4 ticket gone, 5 superseded.
"""

from __future__ import annotations

SCHEMA = r"""
CREATE TABLE IF NOT EXISTS {p}_keys (
    key text PRIMARY KEY,
    fence bigint NOT NULL DEFAULT 0,
    holder text,
    node text,
    expires_at timestamptz,
    stop_requested boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS {p}_keys_holder ON {p}_keys (holder) WHERE holder IS NOT NULL;
CREATE SEQUENCE IF NOT EXISTS {p}_seq;
CREATE TABLE IF NOT EXISTS {p}_tickets (
    id bigint PRIMARY KEY,
    key text NOT NULL,
    rank bigint NOT NULL,
    instance text NOT NULL,
    expires_at timestamptz NOT NULL,
    superseded boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS {p}_tickets_key ON {p}_tickets (key, rank);
CREATE INDEX IF NOT EXISTS {p}_tickets_instance ON {p}_tickets (instance);
CREATE TABLE IF NOT EXISTS {p}_nodes (
    instance text PRIMARY KEY,
    node text NOT NULL,
    seen_at timestamptz NOT NULL
);

-- Lock the key's row (creating it), and forget an expired holder and expired tickets.
CREATE OR REPLACE FUNCTION {p}_lock(k text, now_ timestamptz) RETURNS {p}_keys
LANGUAGE plpgsql AS $fn$
DECLARE r {p}_keys;
BEGIN
    SELECT * INTO r FROM {p}_keys WHERE key = k FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO {p}_keys (key) VALUES (k) ON CONFLICT (key) DO NOTHING;
        SELECT * INTO r FROM {p}_keys WHERE key = k FOR UPDATE;
    END IF;
    IF r.holder IS NOT NULL AND r.expires_at <= now_ THEN
        UPDATE {p}_keys SET holder = NULL, node = NULL, expires_at = NULL,
            stop_requested = false WHERE key = k;
        r.holder := NULL;
        r.stop_requested := false;
    END IF;
    DELETE FROM {p}_tickets WHERE key = k AND expires_at <= now_;
    RETURN r;
END $fn$;

-- Give the (locked) key to inst: the counter goes up by one, never down.
CREATE OR REPLACE FUNCTION {p}_grant(k text, inst text, nd text, lease float8, now_ timestamptz,
    OUT o_fence bigint, OUT o_expires float8)
LANGUAGE sql AS $fn$
    UPDATE {p}_keys SET fence = fence + 1, holder = inst, node = nd,
        expires_at = now_ + make_interval(secs => lease), stop_requested = false
    WHERE key = k
    RETURNING fence, extract(epoch FROM expires_at)::float8
$fn$;

CREATE OR REPLACE FUNCTION {p}_acquire(k text, inst text, nd text, lease float8, mode int,
    max_queue int)
RETURNS TABLE (o_status int, o_fence bigint, o_expires float8, o_ticket bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    now_ timestamptz := clock_timestamp();
    r {p}_keys;
    h {p}_tickets;
    rk bigint;
    n int;
BEGIN
    r := {p}_lock(k, now_);
    SELECT * INTO h FROM {p}_tickets t WHERE t.key = k AND NOT t.superseded
        ORDER BY t.rank LIMIT 1;
    IF r.holder IS NULL AND h.id IS NULL THEN
        SELECT 0, g.o_fence, g.o_expires INTO o_status, o_fence, o_expires
            FROM {p}_grant(k, inst, nd, lease, now_) g;
        RETURN NEXT; RETURN;
    END IF;
    IF mode = 2 THEN
        o_status := 2; RETURN NEXT; RETURN;
    END IF;
    IF mode = 1 THEN
        IF r.holder IS NOT NULL AND NOT r.stop_requested THEN
            UPDATE {p}_keys SET stop_requested = true WHERE key = k;
        END IF;
        PERFORM pg_notify('{channel}', k);
        IF h.id IS NOT NULL THEN
            UPDATE {p}_tickets SET superseded = true WHERE id = h.id;
            IF r.holder IS NULL THEN
                SELECT 0, g.o_fence, g.o_expires INTO o_status, o_fence, o_expires
                    FROM {p}_grant(k, inst, nd, lease, now_) g;
                RETURN NEXT; RETURN;
            END IF;
            rk := h.rank;
        ELSE
            rk := nextval('{p}_seq');
        END IF;
    ELSE
        IF max_queue >= 0 THEN
            SELECT count(*) INTO n FROM {p}_tickets t WHERE t.key = k AND NOT t.superseded;
            IF n >= max_queue THEN
                o_status := 3; RETURN NEXT; RETURN;
            END IF;
        END IF;
        rk := nextval('{p}_seq');
    END IF;
    INSERT INTO {p}_tickets (id, key, rank, instance, expires_at)
        VALUES (nextval('{p}_seq'), k, rk, inst, now_ + make_interval(secs => lease))
        RETURNING id INTO o_ticket;
    o_status := 1;
    RETURN NEXT;
END $fn$;

CREATE OR REPLACE FUNCTION {p}_take(tid bigint, inst text, nd text, lease float8, skip boolean)
RETURNS TABLE (o_status int, o_fence bigint, o_expires float8)
LANGUAGE plpgsql AS $fn$
DECLARE
    now_ timestamptz := clock_timestamp();
    tk {p}_tickets;
    r {p}_keys;
    h bigint;
BEGIN
    SELECT * INTO tk FROM {p}_tickets WHERE id = tid;
    IF NOT FOUND OR tk.instance <> inst THEN
        o_status := 4; RETURN NEXT; RETURN;
    END IF;
    IF skip THEN
        PERFORM 1 FROM {p}_keys WHERE key = tk.key FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            o_status := 1; RETURN NEXT; RETURN;
        END IF;
    END IF;
    r := {p}_lock(tk.key, now_);
    SELECT * INTO tk FROM {p}_tickets WHERE id = tid;
    IF NOT FOUND THEN
        o_status := 4; RETURN NEXT; RETURN;
    END IF;
    IF tk.superseded THEN
        DELETE FROM {p}_tickets WHERE id = tid;
        o_status := 5; RETURN NEXT; RETURN;
    END IF;
    SELECT t.id INTO h FROM {p}_tickets t WHERE t.key = tk.key AND NOT t.superseded
        ORDER BY t.rank LIMIT 1;
    IF r.holder IS NULL AND h = tid THEN
        DELETE FROM {p}_tickets WHERE id = tid;
        SELECT 0, g.o_fence, g.o_expires INTO o_status, o_fence, o_expires
            FROM {p}_grant(tk.key, inst, nd, lease, now_) g;
    ELSE
        o_status := 1;
    END IF;
    RETURN NEXT;
END $fn$;

CREATE OR REPLACE FUNCTION {p}_round(inst text, nd text, lease float8, ks text[], ts bigint[])
RETURNS TABLE (o_kind int, o_key text, o_ticket bigint, o_status int, o_fence bigint,
    o_expires float8, o_stop boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    now_ timestamptz := clock_timestamp();
    tid bigint;
BEGIN
    INSERT INTO {p}_nodes (instance, node, seen_at) VALUES (inst, nd, now_)
        ON CONFLICT (instance) DO UPDATE SET node = excluded.node, seen_at = excluded.seen_at;
    IF cardinality(ks) > 0 THEN
        RETURN QUERY
            UPDATE {p}_keys SET expires_at = now_ + make_interval(secs => lease)
            WHERE key = ANY (ks) AND holder = inst AND expires_at > now_
            RETURNING 0, key, NULL::bigint, 0, fence,
                extract(epoch FROM expires_at)::float8, stop_requested;
    END IF;
    IF cardinality(ts) > 0 THEN
        UPDATE {p}_tickets SET expires_at = now_ + make_interval(secs => lease)
            WHERE id = ANY (ts) AND instance = inst AND expires_at > now_ AND NOT superseded;
        FOREACH tid IN ARRAY ts LOOP
            RETURN QUERY SELECT 1, NULL::text, tid, s.o_status, s.o_fence, s.o_expires, false
                FROM {p}_take(tid, inst, nd, lease, true) s;
        END LOOP;
    END IF;
    DELETE FROM {p}_nodes WHERE seen_at < now_ - make_interval(secs => lease * 10);
END $fn$;

-- Releases may be lost in a crash (the holding then expires): no need to wait for the disk.
CREATE OR REPLACE FUNCTION {p}_release(k text, inst text, f bigint) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE e timestamptz;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT expires_at INTO e FROM {p}_keys WHERE key = k AND holder = inst AND fence = f
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE {p}_keys SET holder = NULL, node = NULL, expires_at = NULL, stop_requested = false
        WHERE key = k;
    -- NOTIFY serialises commits cluster-wide: only when someone waits for the key
    IF EXISTS (SELECT 1 FROM {p}_tickets t WHERE t.key = k) THEN
        PERFORM pg_notify('{channel}', k);
    END IF;
    RETURN e > clock_timestamp();
END $fn$;

CREATE OR REPLACE FUNCTION {p}_cancel(tid bigint, inst text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE k text;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM {p}_tickets WHERE id = tid AND instance = inst RETURNING key INTO k;
    IF FOUND AND EXISTS (SELECT 1 FROM {p}_tickets t WHERE t.key = k) THEN
        PERFORM pg_notify('{channel}', k);
    END IF;
END $fn$;

CREATE OR REPLACE FUNCTION {p}_close(inst text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE k text;
BEGIN
    FOR k IN UPDATE {p}_keys SET holder = NULL, node = NULL, expires_at = NULL,
            stop_requested = false WHERE holder = inst RETURNING key LOOP
        PERFORM pg_notify('{channel}', k);
    END LOOP;
    FOR k IN DELETE FROM {p}_tickets WHERE instance = inst RETURNING key LOOP
        PERFORM pg_notify('{channel}', k);
    END LOOP;
    DELETE FROM {p}_nodes WHERE instance = inst;
END $fn$;
"""
