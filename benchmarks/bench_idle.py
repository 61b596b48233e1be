"""Idle supervised tasks at scale: memory per task, and a clean shutdown of 100 000 (issue 7).

- ``bare task mem``: memory per idle ``asyncio.Task`` parked on an event (tracemalloc
  growth over ``n`` tasks, bytes per task; the list that keeps them counted too);
- ``idle task mem``: the same body, supervised (``Supervisor.add``; the specs are the
  caller's data, built before measuring, like the bare tasks' code). Goal: ≤ 2× bare;
- ``shutdown idle``: ``n`` idle supervised tasks, each parked on an event that is never set,
  then ``Supervisor.shutdown()`` with ``grace`` = 5 s, per task. The case checks the shutdown
  was clean (no grace exceeded, every outcome ``CANCELED``; else it is FAILED) and prints
  PASS/FAIL with the whole shutdown's time against the grace period.

``n`` = 100 000 (10 000 with ``--quick``).
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable

from benchmarks.harness import Case, CheckFailed, Goal, start_clock
from taskvisor import OutcomeKind, Supervisor, SupervisorConfig, TaskSpec, TaskState

GRACE = 5.0
"""The grace period of the shutdown case; the whole shutdown must fit in it."""
OPS = 100_000


async def _measure_memory(spawn: Callable[[asyncio.Event], None], n: int) -> float:
    gate = asyncio.Event()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            spawn(gate)
        await asyncio.sleep(0)  # every body reaches its first await
        await asyncio.sleep(0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gate.set()
    return float(grown)


async def bare_memory(n: int) -> float:
    tasks: list[asyncio.Task[None]] = []

    async def park(gate: asyncio.Event) -> None:
        await gate.wait()

    def spawn(gate: asyncio.Event) -> None:
        tasks.append(asyncio.create_task(park(gate)))

    grown = await _measure_memory(spawn, n)
    await asyncio.gather(*tasks)
    return grown


async def supervised_memory(n: int) -> float:
    gates: list[asyncio.Event] = []

    async def park() -> None:
        await gates[0].wait()

    specs = iter([TaskSpec.once(f"m{i}", park) for i in range(n)])
    async with Supervisor(config=SupervisorConfig(handle_signals=False)) as sup:

        def spawn(gate: asyncio.Event) -> None:
            if not gates:
                gates.append(gate)
            sup.add(next(specs))

        grown = await _measure_memory(spawn, n)
        running = sup.state_counts()[TaskState.RUNNING]
    if running != n:
        raise CheckFailed(f"{running} of {n} tasks were running when measured")
    return grown


async def shutdown_idle(n: int) -> float:
    never = asyncio.Event()

    async def idle() -> None:
        await never.wait()

    specs = [TaskSpec.once(f"s{i}", idle) for i in range(n)]
    sup = Supervisor(config=SupervisorConfig(grace=GRACE, handle_signals=False))
    await sup.start()
    handles = [sup.add(spec) for spec in specs]
    await asyncio.sleep(0)  # every body starts and parks
    running = sup.state_counts()[TaskState.RUNNING]
    if running != n:
        await sup.shutdown()
        raise CheckFailed(f"{running} of {n} tasks were running before the shutdown")
    t0 = start_clock()
    report = await sup.shutdown()
    elapsed = time.perf_counter() - t0
    if report.grace_exceeded:
        raise CheckFailed(f"grace exceeded after {elapsed:.2f} s: {len(report.stuck)} stuck")
    kinds = Counter(h.outcome.kind if h.outcome is not None else None for h in handles)
    if kinds != {OutcomeKind.CANCELED: n}:
        raise CheckFailed(f"outcomes after shutdown: {dict(kinds)}")
    return elapsed


CASES: list[Case] = [
    Case("bare task mem", bare_memory, OPS, unit="task", metric="bytes"),
    Case(
        "idle task mem",
        supervised_memory,
        OPS,
        unit="task",
        metric="bytes",
        baseline="bare task mem",
        goal=Goal(max_ratio=2.0),
    ),
    Case("shutdown idle", shutdown_idle, OPS, unit="task", goal=Goal(max_total=GRACE)),
]
