"""The supervisor runtime next to bare asyncio, in one process.

- ``taskgroup N`` / ``run N``: ``N`` instant no-op tasks through a bare ``asyncio.TaskGroup``
  (baseline) and through ``Supervisor.run`` (no subscriber), cost per task.
- ``lifecycle``: one task's whole life: ``add`` a one-shot task, ``await`` its handle.
- ``add``: the cost of ``Supervisor.add`` alone (bodies park on an event).
- ``add+cancel``: ``add`` then ``await cancel`` of the same task, round trip.
- ``list 500``: ``Supervisor.list()`` with 500 registered tasks, per call.
- ``restart``: one task failing with zero backoff, cost per restart.
- ``bare task mem`` / ``idle task mem``: memory per idle ``asyncio.Task`` parked on an event,
  and per idle supervised task (tracemalloc growth, bytes per task).

Goals (issue 3): batch ≤ 3× the TaskGroup, ``add`` < 20 µs, ``list()`` of 500 < 1 ms,
memory per idle supervised task ≤ 3× a bare task.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable

from benchmarks.harness import Case, Goal
from taskvisor import BackoffPolicy, Fail, Supervisor, SupervisorConfig, TaskSpec

_CONFIG = SupervisorConfig(handle_signals=False)


async def _noop() -> None:
    pass


def taskgroup() -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(_noop())
        return time.perf_counter() - t0

    return run


def batch() -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        specs = [TaskSpec.once(f"t{i}", _noop) for i in range(n)]
        sup = Supervisor(config=_CONFIG)
        t0 = time.perf_counter()
        await sup.run(specs)
        return time.perf_counter() - t0

    return run


async def lifecycle(n: int) -> float:
    specs = [TaskSpec.once(f"l{i}", _noop) for i in range(n)]
    async with Supervisor(config=_CONFIG) as sup:
        t0 = time.perf_counter()
        for spec in specs:
            await sup.add(spec)
        return time.perf_counter() - t0


async def add(n: int) -> float:
    gate = asyncio.Event()

    async def park() -> None:
        await gate.wait()

    specs = [TaskSpec.once(f"a{i}", park) for i in range(n)]
    async with Supervisor(config=_CONFIG) as sup:
        t0 = time.perf_counter()
        for spec in specs:
            sup.add(spec)
        elapsed = time.perf_counter() - t0
        gate.set()
    return elapsed


async def add_cancel(n: int) -> float:
    async def park() -> None:
        await asyncio.Event().wait()

    specs = [TaskSpec.once(f"c{i}", park) for i in range(n)]
    async with Supervisor(config=_CONFIG) as sup:
        t0 = time.perf_counter()
        for spec in specs:
            handle = sup.add(spec)
            await sup.cancel(handle.id)
        return time.perf_counter() - t0


async def list_500(n: int) -> float:
    gate = asyncio.Event()

    async def park() -> None:
        await gate.wait()

    async with Supervisor(config=_CONFIG) as sup:
        for i in range(500):
            sup.add(TaskSpec.once(f"p{i}", park))
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        for _ in range(n):
            sup.list()
        elapsed = time.perf_counter() - t0
        gate.set()
    return elapsed


async def restart(n: int) -> float:
    async def fail() -> None:
        raise Fail("again")

    spec = TaskSpec.restartable("r", fail, backoff=BackoffPolicy.constant(0.0), max_retries=n - 1)
    async with Supervisor(config=_CONFIG) as sup:
        t0 = time.perf_counter()
        await sup.add(spec)
        return time.perf_counter() - t0


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

    # The specs are the caller's data, built before measuring, as for the bare tasks' code.
    specs = iter([TaskSpec.once(f"m{i}", park) for i in range(n)])
    async with Supervisor(config=_CONFIG) as sup:

        def spawn(gate: asyncio.Event) -> None:
            if not gates:
                gates.append(gate)
            sup.add(next(specs))

        grown = await _measure_memory(spawn, n)
    return grown


CASES: list[Case] = [
    Case("taskgroup 500", taskgroup(), 500, unit="task"),
    Case("run 500", batch(), 500, unit="task", baseline="taskgroup 500", goal=Goal(max_ratio=3.0)),
    Case("taskgroup 10k", taskgroup(), 10_000, unit="task"),
    Case(
        "run 10k", batch(), 10_000, unit="task", baseline="taskgroup 10k", goal=Goal(max_ratio=3.0)
    ),
    Case("lifecycle", lifecycle, 5_000, unit="task"),
    Case("add", add, 5_000, unit="call", goal=Goal(max_per_op=20e-6)),
    Case("add+cancel", add_cancel, 2_000, unit="round trip"),
    Case("list 500", list_500, 200, unit="call", goal=Goal(max_per_op=1e-3)),
    Case("restart", restart, 10_000, unit="restart"),
    Case("bare task mem", bare_memory, 10_000, unit="task", metric="bytes"),
    Case(
        "idle task mem",
        supervised_memory,
        10_000,
        unit="task",
        metric="bytes",
        baseline="bare task mem",
        goal=Goal(max_ratio=3.0),
    ),
]
