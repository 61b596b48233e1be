"""Faults against real servers: a database restart, a partition, a frozen holder.

Restarts and partitions use PRIVATE servers on free loopback ports in a temporary directory
(``initdb``/``pg_ctl`` as the ``postgres`` user, ``redis-server`` with AOF), so the shared
services are never touched. A frozen holder is a child process stopped with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster_support import (
    GUARD,
    PG_DSN,
    REDIS_URL,
    PrivatePostgres,
    PrivateRedis,
    drop_prefix,
    make_coordinator,
    new_prefix,
    private_server,
    proxy_to,
    require_services,
    wait_until,
)
from taskvisor.cluster._protocol import Lease, LeaseSignal, LeaseState, LostReason

require_services()

DB_BACKENDS = ("postgres", "redis")
LEASE = 1.0


@pytest.fixture(params=DB_BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[PrivatePostgres | PrivateRedis]:
    with private_server(request.param) as srv:
        yield srv


def target_of(server: PrivatePostgres | PrivateRedis, port: int | None = None) -> str:
    if isinstance(server, PrivatePostgres):
        return server.dsn.replace(f"port={server.port}", f"port={port or server.port}")
    return f"redis://127.0.0.1:{port or server.port}/0"


def backend_of(server: PrivatePostgres | PrivateRedis) -> str:
    return "postgres" if isinstance(server, PrivatePostgres) else "redis"


def make(server: PrivatePostgres | PrivateRedis, node: str, port: int | None = None) -> Any:
    target = target_of(server, port)
    return make_coordinator(
        backend_of(server), "tv", node=node, lease=LEASE, dsn=target, url=target
    )


class LostAt:
    """Remembers when (monotonic) each lease was lost."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def __call__(self, lease: Lease, signal: LeaseSignal) -> None:
        if signal is LeaseSignal.LOST:
            self.at[lease.fence] = time.monotonic()


async def test_a_database_restart_fences_holders_and_work_resumes_by_itself(
    server: PrivatePostgres | PrivateRedis,
) -> None:
    a, b = make(server, "a"), make(server, "b")
    await a.open()
    await b.open()
    try:
        lost = LostAt()
        held = await a.acquire("job", on_signal=lost)
        waiter = asyncio.create_task(b.acquire("job"))
        await wait_until(lambda: b.waiting("job"), what="b queued")
        down = time.monotonic()
        await asyncio.to_thread(server.stop, "immediate")
        await wait_until(lambda: held.state is LeaseState.LOST, what="holder fenced")
        assert held.lost_reason is LostReason.OVERDUE
        # fenced no later than lease × 2/3 after its last renewal was sent (≤ down) + lease/10
        assert lost.at[held.fence] - down <= LEASE * 2 / 3 + LEASE / 10 + 0.2
        assert not waiter.done()  # nobody acquires while the database is down
        await asyncio.to_thread(server.start)
        back = time.monotonic()
        got = await asyncio.wait_for(waiter, GUARD)
        # tokens survive the restart with its data (PostgreSQL; Redis with AOF always)
        assert got.fence > held.fence
        # resumed within lease + lease/3 of the database accepting connections, plus slack
        assert time.monotonic() - back <= LEASE + LEASE / 3 + 1.5
        assert await a.release(held) is False
        await b.release(got)
        again = await asyncio.wait_for(a.acquire("job"), GUARD)
        assert again.fence > got.fence
    finally:
        await a.close()
        await b.close()


async def test_a_partitioned_holder_fences_itself_before_anyone_takes_over(
    server: PrivatePostgres | PrivateRedis,
) -> None:
    async with proxy_to(server.port) as proxy:
        a, b = make(server, "a", port=proxy.port), make(server, "b")
        await a.open()
        await b.open()
        try:
            lost = LostAt()
            held = await a.acquire("job", on_signal=lost)
            waiter = asyncio.create_task(b.acquire("job"))
            await wait_until(lambda: b.waiting("job"), what="b queued")
            cut = time.monotonic()
            proxy.cut()
            got = await asyncio.wait_for(waiter, GUARD)
            taken = time.monotonic()
            assert held.state is LeaseState.LOST
            assert lost.at[held.fence] <= taken  # no overlap: fenced before the takeover
            assert lost.at[held.fence] - cut <= LEASE * 2 / 3 + LEASE / 10 + 0.2
            assert got.fence > held.fence
            assert await b.nodes() == ["b"] or await _settled_nodes(b)
            proxy.heal()
            # the partitioned node works again by itself
            await b.release(got)
            again = await asyncio.wait_for(a.acquire("job"), GUARD)
            assert again.fence > got.fence
            assert await a.release(again) is True
        finally:
            proxy.heal()
            await a.close()
            await b.close()


async def _settled_nodes(coord: Any) -> bool:
    await wait_until(lambda: _nodes_are(coord, ["b"]), what="a left nodes()")
    return True


async def _nodes_are(coord: Any, expected: list[str]) -> bool:
    return bool(await coord.nodes() == expected)


# --------------------------------------------------------------------------- frozen holder

CHILD = Path(__file__).with_name("_cluster_child.py")


@pytest.fixture(params=DB_BACKENDS)
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str, str]]:
    backend: str = request.param
    prefix = new_prefix()
    yield backend, (PG_DSN if backend == "postgres" else REDIS_URL), prefix
    drop_prefix(backend, prefix)


async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), GUARD)
    assert raw, "the child ended early"
    value: dict[str, Any] = json.loads(raw)
    return value


async def test_a_frozen_holder_is_taken_over_and_fences_itself_on_waking(
    shared: tuple[str, str, str],
) -> None:
    backend, target, prefix = shared
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        backend,
        target,
        prefix,
        "job",
        str(LEASE),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    b = make_coordinator(backend, prefix, node="b", lease=LEASE)
    await b.open()
    try:
        acquired = await _line(child)
        assert acquired["event"] == "acquired"
        waiter = asyncio.create_task(b.acquire("job"))
        await wait_until(lambda: b.waiting("job"), what="b queued")
        frozen = time.monotonic()
        child.send_signal(signal.SIGSTOP)
        got = await asyncio.wait_for(waiter, GUARD)
        # taken over within 2 × lease + lease / 3 of the freeze (SPEC §11), plus slack
        assert time.monotonic() - frozen <= 2 * LEASE + LEASE / 3 + 0.5
        assert got.fence > acquired["fence"]
        woke = time.time()
        child.send_signal(signal.SIGCONT)
        lost = await _line(child)
        assert lost["event"] == "lost"
        assert lost["valid"] is False
        assert lost["t"] - woke <= LEASE / 10 + 0.3  # at once after the freeze
        released = await _line(child)
        assert released == {"event": "released", "ok": False, "t": released["t"]}
        (holding,) = await b.holders()
        assert holding.fence == got.fence  # the woken child's release freed nothing of b's
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
        await child.wait()
        await b.close()
