"""The cluster fault harness: ``python -m benchmarks.chaos`` (``make chaos``).

Five worker processes ("supervisors") share a few keys through a coordinator on a PRIVATE
database (PostgreSQL or Redis, on a free loopback port, each worker through its own TCP
proxy the harness can cut). A holder writes to a ledger — a table in a separate private
PostgreSQL, the protected resource — with its fencing token; the ledger accepts a write only
if its token is at least the key's highest so far. Nemeses, in turn: SIGKILL of a holder;
SIGSTOP of a holder for 2 × lease, then SIGCONT; a restart of the database; a partition of
one worker (its proxy swallows everything for 2 × lease); one worker restarted under
``faketime`` with its clock ±60 s.

The checker reads the workers' logs (one JSON line per event, flushed at once so a SIGKILL
loses nothing written) and the ledger, and reports:

- ``stale_accepted``: ledger writes accepted with a token lower than one accepted before
  (must be 0); ``stale_rejected`` counts the late writes the ledger turned away;
- ``overlaps``: two workers owning one key at the same moment, neither frozen then (must
  be 0). A worker owns a key from its grant until it stops (release, or the lost signal),
  and never past ``Lease.valid_until`` — it writes only while ``lease.valid``;
- ``lost_submissions``: acquisitions that never resolved although their process lived on
  (must be 0; those still waiting in the last 10 × lease are not counted);
- ``takeover``: seconds from the database's expiry of a killed / frozen / partitioned
  holder's lease to the next grant of that key (server clock), p50 and p99 per nemesis;
  the contract is ≤ lease + lease / 3 (the design gives ≤ lease / 3 plus a round trip).

``python -m benchmarks.chaos --backend postgres --duration 30`` runs one backend;
``--backend all --min-handovers 10000`` is ``make chaos``. Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cluster_support import (  # noqa: E402 - the private servers live with the tests
    PrivatePostgres,
    PrivateRedis,
    Proxy,
    make_coordinator,
)

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_max (key text PRIMARY KEY, token bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_log (
    id bigserial PRIMARY KEY, key text NOT NULL, token bigint NOT NULL, worker text NOT NULL,
    accepted boolean NOT NULL
);
"""
LEDGER_WRITE = """
WITH m AS (
    INSERT INTO ledger_max AS l (key, token) VALUES (%(k)s, %(t)s)
    ON CONFLICT (key) DO UPDATE SET token = excluded.token WHERE l.token <= excluded.token
    RETURNING 1
)
INSERT INTO ledger_log (key, token, worker, accepted)
VALUES (%(k)s, %(t)s, %(w)s, EXISTS (SELECT 1 FROM m)) RETURNING accepted
"""


# =========================================================================== the worker


async def worker(args: argparse.Namespace) -> None:
    import psycopg

    from taskvisor.cluster._protocol import CoordinatorUnavailable, Lease, LeaseSignal

    out = open(args.log, "a", buffering=1)  # noqa: SIM115, ASYNC230 - line-buffered, kept open
    pid = os.getpid()

    def log(event: str, **fields: Any) -> None:
        out.write(
            json.dumps({"e": event, "pid": pid, "node": args.node, "m": time.monotonic(), **fields})
            + "\n"
        )

    coord = make_coordinator(
        args.backend, "chaos", node=args.node, lease=args.lease, dsn=args.target, url=args.target
    )
    while True:
        try:
            await coord.open()
            break
        except CoordinatorUnavailable:
            coord = make_coordinator(
                args.backend,
                "chaos",
                node=args.node,
                lease=args.lease,
                dsn=args.target,
                url=args.target,
            )
            await asyncio.sleep(0.2)
    log("up")
    ledger: Any = None
    parent = os.getppid()

    async def orphan_guard() -> None:  # the harness died: do not linger
        while os.getppid() == parent:  # noqa: ASYNC110 - nothing to wait on
            await asyncio.sleep(0.5)
        os._exit(0)

    _guard = asyncio.create_task(orphan_guard())  # noqa: RUF006 - held by _guard

    async def write(key: str, token: int) -> None:
        nonlocal ledger
        try:
            if ledger is None or ledger.closed:
                ledger = await psycopg.AsyncConnection.connect(
                    args.ledger, autocommit=True, connect_timeout=2
                )
            cur = await ledger.execute(LEDGER_WRITE, {"k": key, "t": token, "w": args.node})
            row = await cur.fetchone()
            log("write", key=key, fence=token, ok=bool(row and row[0]))
        except psycopg.Error:
            if ledger is not None:
                await ledger.close()
            ledger = None

    keys = [f"k{i}" for i in range(args.keys)]
    rng = random.Random(pid)
    for n in itertools.count():
        key = rng.choice(keys)
        sub = f"{pid}-{n}"
        log("submit", sub=sub, key=key)
        holding: list[asyncio.Task[None]] = []

        def on_signal(lease: Lease, sig: LeaseSignal, holding: list[Any] = holding) -> None:
            if sig is LeaseSignal.LOST and holding:
                log("lost", key=lease.key, fence=lease.fence, why=str(lease.lost_reason))
                holding[0].cancel()

        lease = await coord.acquire(key, on_signal=on_signal)
        log("grant", sub=sub, key=key, fence=lease.fence, srv=lease.expires_at - args.lease)

        async def body(lease: Lease = lease) -> None:
            for _ in range(2):
                if not lease.valid:
                    return
                await write(lease.key, lease.fence)
                await asyncio.sleep(rng.uniform(0, args.hold))

        hold = asyncio.create_task(body())
        holding.append(hold)
        with contextlib.suppress(asyncio.CancelledError):
            await hold
        end = min(time.monotonic(), lease.valid_until)
        ok = await coord.release(lease)
        log("end", key=key, fence=lease.fence, at=end, ok=ok)


# =========================================================================== the harness


@dataclass
class Worker:
    index: int
    node: str
    proxy: Proxy
    proc: asyncio.subprocess.Process | None = None
    pids: list[int] = field(default_factory=list)


@dataclass
class Episode:
    nemesis: str
    start: float
    end: float
    node: str | None = None
    key: str | None = None
    fence: int | None = None
    expires: float | None = None  # the victim's lease expiry, server epoch
    detail: str = ""


class Harness:
    def __init__(self, args: argparse.Namespace, backend: str) -> None:
        self.args = args
        self.backend = backend
        self.lease: float = args.lease
        self.dir = Path(tempfile.mkdtemp(prefix=f"tv-chaos-{backend}-"))
        self.ledger = PrivatePostgres()
        self.db: PrivatePostgres | PrivateRedis = (
            PrivatePostgres() if backend == "postgres" else PrivateRedis(persist=True)
        )
        self.workers: list[Worker] = []
        self.episodes: list[Episode] = []
        self.kills: list[tuple[str, float]] = []  # (node, when: monotonic)
        self.rng = random.Random(args.seed)
        self.observer: Any = None
        self.began = 0.0

    # ------------------------------------------------------------------ processes

    def target(self, port: int) -> str:
        if isinstance(self.db, PrivatePostgres):
            return f"host=127.0.0.1 port={port} dbname=postgres user=postgres"
        return f"redis://127.0.0.1:{port}/0"

    async def spawn(self, w: Worker, clock: str | None = None) -> None:
        argv = [
            sys.executable, "-m", "benchmarks.chaos", "worker",
            "--backend", self.backend, "--target", self.target(w.proxy.port),
            "--ledger", self.ledger.dsn, "--node", w.node, "--lease", str(self.lease),
            "--keys", str(self.args.keys), "--hold", str(self.args.hold),
            "--log", str(self.dir / f"{w.node}.jsonl"),
        ]  # fmt: skip
        env = dict(os.environ)
        if clock is not None:
            argv = ["faketime", "-f", clock, *argv]
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        with (self.dir / f"{w.node}.out").open("ab") as output:
            w.proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # a group: faketime's child gets the signals too
                stdout=output,
                stderr=output,
            )
        w.pids.append(w.proc.pid)

    def signal(self, w: Worker, sig: int) -> None:
        if w.proc is not None and w.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, sig)

    async def kill(self, w: Worker) -> None:
        if w.proc is not None and w.proc.returncode is None:
            self.kills.append((w.node, time.monotonic()))
            self.signal(w, signal.SIGKILL)
            self.signal(w, signal.SIGCONT)
            await w.proc.wait()

    # ------------------------------------------------------------------ nemeses

    async def observer_holders(self) -> list[Any]:
        assert self.observer is not None
        for _ in range(50):
            with contextlib.suppress(Exception):
                holders: list[Any] = await self.observer.holders()
                return holders
            await asyncio.sleep(0.1)
        return []

    async def pick_holder(self) -> tuple[Worker, Any] | None:
        by_node = {w.node: w for w in self.workers}
        for _ in range(100):  # keys change hands every few ms: one is held most of the time
            live = [h for h in await self.observer_holders() if h.node in by_node]
            if live:
                h = self.rng.choice(live)
                return by_node[h.node], h
            await asyncio.sleep(0.02)
        return None

    async def expiry_of(self, key: str, fence: int) -> float | None:
        for h in await self.observer_holders():
            if h.key == key and h.fence == fence:
                return float(h.expires_at)
        return None

    async def nemesis_kill(self) -> Episode | None:
        picked = await self.pick_holder()
        if picked is None:
            return None
        w, h = picked
        start = time.monotonic()
        await self.kill(w)
        expires = await self.expiry_of(h.key, h.fence)
        await self.spawn(w)
        return Episode("kill", start, time.monotonic(), w.node, h.key, h.fence, expires)

    async def nemesis_stop(self) -> Episode | None:
        picked = await self.pick_holder()
        if picked is None or picked[0].proc is None:
            return None
        w, h = picked
        assert w.proc is not None
        start = time.monotonic()
        self.signal(w, signal.SIGSTOP)
        expires = await self.expiry_of(h.key, h.fence)
        await asyncio.sleep(2 * self.lease)
        self.signal(w, signal.SIGCONT)
        await asyncio.sleep(self.lease)  # it wakes, fences itself, goes on
        return Episode("stop", start, time.monotonic(), w.node, h.key, h.fence, expires)

    async def nemesis_partition(self) -> Episode | None:
        picked = await self.pick_holder()
        if picked is None or picked[0].proc is None:
            return None
        w, h = picked
        start = time.monotonic()
        w.proxy.cut()
        await asyncio.sleep(0.05)
        expires = await self.expiry_of(h.key, h.fence)
        await asyncio.sleep(2 * self.lease)
        w.proxy.heal()
        return Episode("partition", start, time.monotonic(), w.node, h.key, h.fence, expires)

    async def nemesis_restart(self) -> Episode | None:
        start = time.monotonic()
        await asyncio.to_thread(self.db.restart)
        return Episode("restart", start, time.monotonic())

    async def nemesis_clock(self) -> Episode | None:
        w = self.rng.choice(self.workers)
        shift = self.rng.choice(("+60s", "-60s"))
        start = time.monotonic()
        await self.kill(w)
        await self.spawn(w, clock=shift)
        await asyncio.sleep(4 * self.lease)
        await self.kill(w)
        await self.spawn(w)
        return Episode("clock", start, time.monotonic(), detail=f"{w.node} {shift}")

    # ------------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        import psycopg

        await asyncio.to_thread(self.ledger.start)
        await asyncio.to_thread(self.db.start)
        with psycopg.connect(self.ledger.dsn, autocommit=True) as conn:
            conn.execute(LEDGER_SCHEMA)
        self.observer = make_coordinator(
            self.backend, "chaos", node="observer", lease=self.lease,
            dsn=self.target(self.db.port), url=self.target(self.db.port),
        )  # fmt: skip
        await self.observer.open()
        for i in range(self.args.workers):
            proxy = Proxy(self.db.port)
            await proxy.start()
            w = Worker(i, f"w{i}", proxy)
            self.workers.append(w)
            await self.spawn(w)
        began = self.began = time.monotonic()
        nemeses = {
            "kill": self.nemesis_kill,
            "stop": self.nemesis_stop,
            "restart": self.nemesis_restart,
            "partition": self.nemesis_partition,
            "clock": self.nemesis_clock,
        }
        order = itertools.cycle([n for n in nemeses if n in self.args.nemeses])
        await asyncio.sleep(2 * self.lease)
        while True:
            elapsed = time.monotonic() - began
            if elapsed >= self.args.duration and (
                self.handovers() >= self.args.min_handovers or elapsed >= self.args.max_duration
            ):
                break
            name = next(order)
            episode = await nemeses[name]()
            if episode is not None:
                self.episodes.append(episode)
                print(f"  [{self.backend}] {elapsed:6.1f}s {name} {episode.detail}", flush=True)
            await asyncio.sleep(self.args.quiet * self.lease)
        run_end = time.monotonic()
        for w in self.workers:
            await self.kill(w)
            await w.proxy.close()
        await self.observer.close(release=False)
        report = self.check(run_end, time.monotonic() - began)
        await asyncio.to_thread(self.db.cleanup)
        await asyncio.to_thread(self.ledger.cleanup)
        if report["ok"]:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            report["logs"] = str(self.dir)  # kept for a look
        return report

    def events(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for path in self.dir.glob("*.jsonl"):
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):  # a line cut by SIGKILL
                    found.append(json.loads(line))
        return found

    def handovers(self) -> int:
        count = 0
        for path in self.dir.glob("*.jsonl"):
            with path.open() as f:
                count += sum(1 for line in f if '"e": "grant"' in line)
        return max(0, count - int(self.args.keys))

    # ------------------------------------------------------------------ the checker

    def check(self, run_end: float, seconds: float) -> dict[str, Any]:
        import psycopg

        events = self.events()
        frozen = [(e.node, e.start, e.end) for e in self.episodes if e.nemesis == "stop"]

        def death(node: str, after: float) -> float | None:
            return min((t for n, t in self.kills if n == node and t >= after), default=None)

        # ownership intervals
        grants: dict[tuple[int, str, int], dict[str, Any]] = {}
        node_of: dict[int, str] = {}
        ends: dict[tuple[int, str, int], float] = {}
        for ev in events:
            node_of[ev["pid"]] = ev["node"]
            if ev["e"] == "grant":
                grants[(ev["pid"], ev["key"], ev["fence"])] = ev
            elif ev["e"] == "end":
                ends[(ev["pid"], ev["key"], ev["fence"])] = ev["at"]
        intervals: dict[str, list[tuple[float, float, int, int]]] = {}
        for (pid, key, fence), ev in grants.items():
            died = death(ev["node"], ev["m"])
            stop = ends.get((pid, key, fence), died if died is not None else run_end)
            intervals.setdefault(key, []).append((ev["m"], stop, pid, fence))

        def was_frozen(pid: int, a: float, b: float) -> bool:
            node = node_of[pid]
            return any(n == node and a < e + self.lease and s < b for n, s, e in frozen)

        overlaps = []
        for key, ivs in intervals.items():
            ivs.sort()
            for i, (s1, e1, p1, f1) in enumerate(ivs):
                for s2, e2, p2, f2 in ivs[i + 1 :]:
                    if s2 >= e1:
                        break
                    if p1 != p2 and not was_frozen(p1, s1, e1) and not was_frozen(p2, s2, e2):
                        overlaps.append((key, f1, f2, round(e1 - s2, 4)))
        # lost submissions
        granted = {ev["sub"] for ev in events if ev["e"] == "grant"}
        cutoff = run_end - 10 * self.lease
        lost = [
            ev
            for ev in events
            if ev["e"] == "submit"
            and ev["sub"] not in granted
            and death(ev["node"], ev["m"]) is None
            and ev["m"] < cutoff
        ]
        # the ledger
        with psycopg.connect(self.ledger.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT key, token, accepted FROM ledger_log ORDER BY id"
            ).fetchall()
        best: dict[str, int] = {}
        stale_accepted = stale_rejected = accepted = 0
        for key, token, ok in rows:
            if ok:
                accepted += 1
                if token < best.get(key, 0):
                    stale_accepted += 1
                best[key] = max(best.get(key, 0), token)
            else:
                stale_rejected += 1
        # takeover latency
        grants_by_key: dict[str, list[tuple[int, float]]] = {}
        for ev in grants.values():
            grants_by_key.setdefault(ev["key"], []).append((ev["fence"], ev["srv"]))
        per_nemesis: dict[str, dict[str, Any]] = {}
        for ep in self.episodes:
            row = per_nemesis.setdefault(ep.nemesis, {"episodes": 0, "takeover_s": []})
            row["episodes"] += 1
            if ep.key is None or ep.fence is None or ep.expires is None:
                continue
            later = [srv for f, srv in grants_by_key.get(ep.key, []) if f > ep.fence]
            if later:
                row["takeover_s"].append(min(later) - ep.expires)
        for row in per_nemesis.values():
            lat = sorted(row.pop("takeover_s"))
            row["takeovers"] = len(lat)
            if lat:
                row["takeover_p50_s"] = round(statistics.median(lat), 3)
                row["takeover_p99_s"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3)
                row["takeover_max_s"] = round(lat[-1], 3)
        limit = self.lease + self.lease / 3
        worst = max((r.get("takeover_max_s", 0.0) for r in per_nemesis.values()), default=0.0)
        report = {
            "backend": self.backend,
            "lease_s": self.lease,
            "seconds": round(seconds, 1),
            "workers": self.args.workers,
            "keys": self.args.keys,
            "handovers": max(0, len(grants) - self.args.keys),
            "ledger_accepted": accepted,
            "stale_accepted": stale_accepted,
            "stale_rejected": stale_rejected,
            "overlaps": len(overlaps),
            "overlap_examples": overlaps[:5],
            "lost_submissions": len(lost),
            "lost_examples": [
                {
                    "node": ev["node"],
                    "pid": ev["pid"],
                    "key": ev["key"],
                    "at_s": round(ev["m"] - self.began, 2),
                }
                for ev in lost[:5]
            ],
            "episodes": [
                (e.nemesis, round(e.start - self.began, 2), round(e.end - self.began, 2), e.node)
                for e in self.episodes
            ],
            "takeover_limit_s": round(limit, 3),
            "nemeses": per_nemesis,
        }
        report["ok"] = (
            stale_accepted == 0 and not overlaps and not lost and worst <= limit
            and report["handovers"] > 0
        )  # fmt: skip
        return report


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['backend']}: {report['seconds']}s, lease {report['lease_s']}s, "
        f"{report['handovers']} handovers, {report['ledger_accepted']} ledger writes; "
        f"stale accepted {report['stale_accepted']} (rejected {report['stale_rejected']}), "
        f"overlaps {report['overlaps']}, lost submissions {report['lost_submissions']} "
        f"-> {'OK' if report['ok'] else 'FAILED'}"
    )
    if not report["ok"]:
        print(json.dumps({k: report[k] for k in report if k != "nemeses"}, indent=1))
    for name, row in report["nemeses"].items():
        lat = (
            f"takeover p50 {row['takeover_p50_s']}s p99 {row['takeover_p99_s']}s "
            f"max {row['takeover_max_s']}s (limit {report['takeover_limit_s']}s)"
            if row.get("takeovers")
            else "no takeover measured"
        )
        print(f"  {name:<10} {row['episodes']:>3} episodes; {lat}")


async def harness(args: argparse.Namespace) -> int:
    if "clock" in args.nemeses and shutil.which("faketime") is None:
        print("the clock nemesis needs faketime: apt-get install -y faketime", file=sys.stderr)
        return 2
    backends = ["postgres", "redis"] if args.backend == "all" else [args.backend]
    reports = []
    for backend in backends:
        print(f"chaos: {backend}, at least {args.duration}s", flush=True)
        reports.append(await Harness(args, backend).run())
        print_report(reports[-1])
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports, indent=2))
    return 0 if all(r["ok"] for r in reports) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    sub = parser.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--backend", required=True)
    w.add_argument("--target", required=True)
    w.add_argument("--ledger", required=True)
    w.add_argument("--node", required=True)
    w.add_argument("--lease", type=float, required=True)
    w.add_argument("--keys", type=int, required=True)
    w.add_argument("--hold", type=float, required=True)
    w.add_argument("--log", required=True)
    parser.add_argument("--backend", choices=("postgres", "redis", "all"), default="all")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per backend")
    parser.add_argument("--min-handovers", type=int, default=0)
    parser.add_argument("--max-duration", type=float, default=1800.0)
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--keys", type=int, default=2)
    parser.add_argument("--hold", type=float, default=0.01, help="max pause between writes")
    parser.add_argument("--quiet", type=float, default=2.0, help="leases between nemeses")
    parser.add_argument(
        "--nemeses", nargs="+", default=["kill", "stop", "restart", "partition", "clock"]
    )
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.cmd == "worker":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(worker(args))
        return 0
    return asyncio.run(harness(args))


if __name__ == "__main__":
    sys.exit(main())
