"""taskvisor.cluster: acquisitions per second, renewal cost, takeover latency (issue 17).

Against the local services (PostgreSQL 127.0.0.1:5432 database ``test``, Redis
127.0.0.1:6379; ``TASKVISOR_TEST_PG`` / ``TASKVISOR_TEST_REDIS`` point elsewhere), each run
in its own table / key prefix, dropped afterwards.

- ``<backend> acquire+release``: one process, 32 tasks each acquiring and releasing a key
  of its own in a loop; per pair. The memory coordinator is the baseline. Goals: ≥ 2,000/s on
  PostgreSQL (≤ 500 µs per pair), ≥ 10,000/s on Redis (≤ 100 µs).
- ``<backend> renew 1000 keys``: a coordinator holding 1,000 keys at ``lease=3.0`` renews
  them in one round trip per second; per round, the CPU seconds this process spent
  (``time.process_time``) during the rounds. Goal: ≤ 5 % of one core, i.e. ≤ 50 ms per
  1-second round.
- ``<backend> takeover``: at ``lease=1.0`` a holder stops renewing (closed without release,
  as a crash) while another coordinator waits; per takeover, the seconds from the lease's
  expiry to the grant, both by the database server's clock. Goal: ≤ lease + lease / 3.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Case, CheckFailed, Goal, start_clock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cluster_support import (
    drop_prefix,
    make_coordinator,
    new_prefix,
)

TASKS = 32
RENEW_KEYS = 1000
RENEW_LEASE = 3.0
TAKEOVER_LEASE = 1.0


def _pairs(backend: str) -> Any:
    async def run(n: int) -> float:
        prefix = new_prefix()
        coord = make_coordinator(backend, prefix, node="bench", lease=15.0)
        await coord.open()
        try:
            per_task = max(1, n // TASKS)

            async def loop(i: int) -> None:
                key = f"k{i}"
                for _ in range(per_task):
                    lease = await coord.acquire(key)
                    if not await coord.release(lease):
                        raise CheckFailed(f"release of {key} failed")

            await asyncio.gather(*(loop(i) for i in range(TASKS)))  # warm the connections
            t0 = start_clock()
            await asyncio.gather(*(loop(i) for i in range(TASKS)))
            elapsed = time.perf_counter() - t0
            return elapsed * n / (per_task * TASKS)
        finally:
            await coord.close()
            drop_prefix(backend, prefix)

    return run


def _renewal(backend: str) -> Any:
    async def run(n: int) -> float:
        prefix = new_prefix()
        coord = make_coordinator(backend, prefix, node="bench", lease=RENEW_LEASE)
        await coord.open()
        try:
            leases = await asyncio.gather(*(coord.acquire(f"k{i}") for i in range(RENEW_KEYS)))
            first = leases[0].expires_at
            await asyncio.sleep(RENEW_LEASE / 3)  # settle: the pool is warm, a round went
            cpu0 = time.process_time()
            await asyncio.sleep(n * RENEW_LEASE / 3)
            cpu = time.process_time() - cpu0
            if not all(lease.valid for lease in leases) or leases[0].expires_at <= first:
                raise CheckFailed("leases were not renewed")
            return cpu
        finally:
            await coord.close()
            drop_prefix(backend, prefix)

    return run


def _takeover(backend: str) -> Any:
    async def run(n: int) -> float:
        prefix = new_prefix()
        waiter = make_coordinator(backend, prefix, node="waiter", lease=TAKEOVER_LEASE)
        await waiter.open()
        total = 0.0
        try:
            for i in range(n):
                key = f"k{i}"
                holder = make_coordinator(backend, prefix, node="holder", lease=TAKEOVER_LEASE)
                await holder.open()
                held = await holder.acquire(key)
                task = asyncio.create_task(waiter.acquire(key))
                while await waiter.waiting(key) == 0:  # noqa: ASYNC110 - a condition on the server
                    await asyncio.sleep(0.005)
                await holder.close(release=False)
                got = await asyncio.wait_for(task, 10 * TAKEOVER_LEASE)
                total += (got.expires_at - TAKEOVER_LEASE) - held.expires_at
                await waiter.release(got)
        finally:
            await waiter.close()
            drop_prefix(backend, prefix)
        return total

    return run


CASES = [
    Case("memory acquire+release", _pairs("memory"), ops=20_000, unit="pair"),
    Case(
        "postgres acquire+release",
        _pairs("postgres"),
        ops=4_000,
        unit="pair",
        baseline="memory acquire+release",
        goal=Goal(max_per_op=1 / 2000),
    ),
    Case(
        "redis acquire+release",
        _pairs("redis"),
        ops=20_000,
        unit="pair",
        baseline="memory acquire+release",
        goal=Goal(max_per_op=1 / 10_000),
    ),
    Case(
        "postgres renew 1000 keys",
        _renewal("postgres"),
        ops=3,
        unit="round",
        goal=Goal(max_per_op=0.05 * RENEW_LEASE / 3),
        quick_ops=2,
    ),
    Case(
        "redis renew 1000 keys",
        _renewal("redis"),
        ops=3,
        unit="round",
        goal=Goal(max_per_op=0.05 * RENEW_LEASE / 3),
        quick_ops=2,
    ),
    Case(
        "postgres takeover",
        _takeover("postgres"),
        ops=5,
        unit="takeover",
        goal=Goal(max_per_op=TAKEOVER_LEASE * 4 / 3),
        quick_ops=2,
    ),
    Case(
        "redis takeover",
        _takeover("redis"),
        ops=5,
        unit="takeover",
        goal=Goal(max_per_op=TAKEOVER_LEASE * 4 / 3),
        quick_ops=2,
    ),
]
