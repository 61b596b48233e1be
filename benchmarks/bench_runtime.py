"""The supervisor runtime next to bare asyncio and aiojobs, in one process (issue 7).

Batch throughput, ``N`` = 500, 10 000 and 100 000 instant no-op tasks, cost per task:

- ``taskgroup N``: the ``N`` coroutines through a bare ``asyncio.TaskGroup`` (baseline);
- ``aiojobs N``: aiojobs at its fastest idiom for a batch: ``await scheduler.spawn(job)`` for
  every job on an ``aiojobs.Scheduler(limit=None)`` (no concurrency limit, like the others),
  then ``await job.wait()`` on each, then ``await scheduler.close()``. Not ``async with
  Scheduler()``: its exit (``wait_and_close``) gathers a shielded ``job._wait()`` per job,
  three to four times the cost here. The scheduler is built before timing (as the
  supervisor of ``add+await`` is entered before timing); ``close()`` is timed, because
  every case here is timed to the end of its runtime (``run`` includes the supervisor's
  shutdown, the ``TaskGroup`` its exit) — once every job has finished it only stops the
  scheduler's failed-job watcher, about 0.1 ms per batch (0.01 µs per job at 10 000);
- ``run N``: ``Supervisor.run`` of ``N`` one-shot specs (built before timing), no
  subscriber, timed to the returned report (shutdown included);
- ``add+await 10k``: inside ``async with Supervisor(...)`` (entered before timing),
  ``sup.add(spec)`` for each of the ``N`` one-shot specs, then ``await handle`` on each,
  timed to the end of the ``async with`` (shutdown included): aiojobs' idiom, on the
  supervisor;
- ``run N +K sub``: the same with ``K`` = 1, 4, 8 no-op subscribers (N = 500 and 10 000),
  compared with ``run N``: what building and fanning out the events costs.

Management, cost per operation:

- ``lifecycle``: one task's whole life: ``add`` a one-shot task, ``await`` its handle;
- ``add``: ``Supervisor.add`` alone (bodies park on an event);
- ``add+cancel``: ``add`` then ``await cancel`` of the same task, round trip;
- ``list 500``: ``Supervisor.list()`` with 500 registered tasks, per call;
- ``restart``: one task failing with zero backoff, per restart (restarts/s = 1 / figure).

Goals (issues 7 and 19): ``run 10k`` ≤ 1.5× ``taskgroup 10k`` on the default loop and
≤ 2.0× on uvloop, ≥ 1.2× the throughput of ``aiojobs 10k`` (its time ≤ aiojobs' / 1.2) on
both loops, ≤ 8.33 µs per task on uvloop (more than the Rust taskvisor's 120 000 tasks/s);
``add+await 10k`` ≥ 1.0× the throughput of ``aiojobs 10k``; ``run 10k +8 sub`` ≤ 2.2×
``run 10k``; ``add`` ≤ 5 µs; ``add+cancel`` ≤ 30 µs; ``list 500`` ≤ 300 µs; ``restart``
≤ 20 µs (≥ 50 000 restarts/s). ``--quick`` keeps the batch sizes (they are what the cases
measure) and leaves out the 100 000 ones. Subscribers at their default capacity, under a
batch: ``bench_bursts.py``; ``TaskSpec`` construction: ``bench_spec.py``.
Memory per idle task and the shutdown of 100 000 idle tasks: ``bench_idle.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from benchmarks.harness import Case, CheckFailed, Goal, start_clock
from taskvisor import (
    BackoffPolicy,
    Event,
    Fail,
    OutcomeKind,
    Supervisor,
    SupervisorConfig,
    TaskHandle,
    TaskSpec,
)

_CONFIG = SupervisorConfig(handle_signals=False)
RUST_TASKS_PER_SECOND = 120_000
"""The Rust taskvisor 0.1.2's batch throughput on this machine (issue 7)."""

Run = Callable[[int], Awaitable[float]]


async def _noop() -> None:
    pass


class NoOp:
    """A subscriber that does nothing, with a queue that never overflows in these cases."""

    queue_capacity = 1 << 20

    def on_event(self, event: Event) -> None:
        pass


def taskgroup() -> Run:
    async def run(n: int) -> float:
        t0 = start_clock()
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(_noop())
        return time.perf_counter() - t0

    return run


def aiojobs_scheduler() -> Run:
    async def run(n: int) -> float:
        try:
            import aiojobs
        except ImportError:
            raise CheckFailed("aiojobs is not installed: pip install -e '.[bench]'") from None
        # limit=None: every job starts at once, as in the TaskGroup and the supervisor (the
        # default limit of 100 would queue the rest).
        scheduler = aiojobs.Scheduler(limit=None, wait_timeout=None)
        t0 = start_clock()
        spawn = scheduler.spawn
        jobs = [await spawn(_noop()) for _ in range(n)]
        for job in jobs:
            await job.wait()
        await scheduler.close()
        elapsed = time.perf_counter() - t0
        if len(scheduler):
            raise CheckFailed(f"{len(scheduler)} aiojobs jobs left after close()")
        return elapsed

    return run


def batch(subscribers: int = 0) -> Run:
    async def run(n: int) -> float:
        specs = [TaskSpec.once(f"t{i}", _noop) for i in range(n)]
        sup = Supervisor(config=_CONFIG, subscribers=[NoOp() for _ in range(subscribers)])
        t0 = start_clock()
        report = await sup.run(specs)
        elapsed = time.perf_counter() - t0
        if report.grace_exceeded:
            raise CheckFailed(f"shutdown exceeded its grace: {report.stuck[:5]}")
        return elapsed

    return run


async def add_await(n: int) -> float:
    specs = [TaskSpec.once(f"w{i}", _noop) for i in range(n)]
    failed = 0
    async with Supervisor(config=_CONFIG) as sup:
        t0 = start_clock()
        add = sup.add
        handles: list[TaskHandle] = [add(spec) for spec in specs]
        for handle in handles:
            outcome = await handle
            failed += not outcome.ok
    elapsed = time.perf_counter() - t0
    if failed:
        raise CheckFailed(f"{failed} of {n} one-shot no-op tasks did not end ok")
    return elapsed


async def lifecycle(n: int) -> float:
    specs = [TaskSpec.once(f"l{i}", _noop) for i in range(n)]
    async with Supervisor(config=_CONFIG) as sup:
        t0 = start_clock()
        for spec in specs:
            outcome = await sup.add(spec)
        elapsed = time.perf_counter() - t0
    if not outcome.ok:
        raise CheckFailed(f"a one-shot no-op task ended {outcome.kind}")
    return elapsed


async def add(n: int) -> float:
    gate = asyncio.Event()

    async def park() -> None:
        await gate.wait()

    specs = [TaskSpec.once(f"a{i}", park) for i in range(n)]
    async with Supervisor(config=_CONFIG) as sup:
        t0 = start_clock()
        for spec in specs:
            sup.add(spec)
        elapsed = time.perf_counter() - t0
        gate.set()
    return elapsed


async def add_cancel(n: int) -> float:
    async def park() -> None:
        await asyncio.Event().wait()

    specs = [TaskSpec.once(f"c{i}", park) for i in range(n)]
    stopped = 0
    async with Supervisor(config=_CONFIG) as sup:
        t0 = start_clock()
        for spec in specs:
            handle = sup.add(spec)
            stopped += await sup.cancel(handle.id)
        elapsed = time.perf_counter() - t0
    if stopped != n:
        raise CheckFailed(f"cancel returned True for {stopped} of {n} tasks")
    return elapsed


async def list_500(n: int) -> float:
    gate = asyncio.Event()

    async def park() -> None:
        await gate.wait()

    async with Supervisor(config=_CONFIG) as sup:
        for i in range(500):
            sup.add(TaskSpec.once(f"p{i}", park))
        await asyncio.sleep(0)
        t0 = start_clock()
        for _ in range(n):
            infos = sup.list()
        elapsed = time.perf_counter() - t0
        gate.set()
    if len(infos) != 500:
        raise CheckFailed(f"list() returned {len(infos)} tasks, not 500")
    return elapsed


async def restart(n: int) -> float:
    async def fail() -> None:
        raise Fail("again")

    # max_retries=n: n + 1 attempts, n restarts.
    spec = TaskSpec.restartable("r", fail, backoff=BackoffPolicy.constant(0.0), max_retries=n)
    async with Supervisor(config=_CONFIG) as sup:
        t0 = start_clock()
        outcome = await sup.add(spec)
        elapsed = time.perf_counter() - t0
    if outcome.kind is not OutcomeKind.FAILED or outcome.attempts != n + 1:
        raise CheckFailed(f"expected FAILED after {n + 1} attempts, got {outcome}")
    return elapsed


def _batch_cases(size: int, label: str, *, in_quick: bool, subscribers: bool) -> list[Case]:
    quick_ops = size if in_quick else 0
    tg, aj, ours = f"taskgroup {label}", f"aiojobs {label}", f"run {label}"
    goals: tuple[Goal, ...] = ()
    if size == 10_000:
        goals = (
            Goal(max_ratio=1.5, loop="asyncio"),
            Goal(max_ratio=2.0, loop="uvloop"),
            Goal(max_ratio=1 / 1.2, against=aj),
            Goal(max_per_op=1 / RUST_TASKS_PER_SECOND, loop="uvloop"),
        )
    cases = [
        Case(tg, taskgroup(), size, unit="task", quick_ops=quick_ops),
        Case(aj, aiojobs_scheduler(), size, unit="task", baseline=tg, quick_ops=quick_ops),
        Case(ours, batch(), size, unit="task", baseline=tg, goal=goals, quick_ops=quick_ops),
    ]
    if size == 10_000:
        cases.append(
            Case(
                f"add+await {label}",
                add_await,
                size,
                unit="task",
                baseline=tg,
                goal=Goal(max_ratio=1.0, against=aj),
                quick_ops=quick_ops,
            )
        )
    if subscribers:
        for k in (1, 4, 8):
            goal = Goal(max_ratio=2.2) if k == 8 and size == 10_000 else None
            cases.append(
                Case(
                    f"run {label} +{k} sub",
                    batch(k),
                    size,
                    unit="task",
                    baseline=ours,
                    goal=goal,
                    quick_ops=quick_ops,
                )
            )
    return cases


CASES: list[Case] = [
    *_batch_cases(500, "500", in_quick=True, subscribers=True),
    *_batch_cases(10_000, "10k", in_quick=True, subscribers=True),
    *_batch_cases(100_000, "100k", in_quick=False, subscribers=False),
    Case("lifecycle", lifecycle, 5_000, unit="task"),
    Case("add", add, 5_000, unit="call", goal=Goal(max_per_op=5e-6)),
    Case("add+cancel", add_cancel, 2_000, unit="round trip", goal=Goal(max_per_op=30e-6)),
    Case("list 500", list_500, 200, unit="call", goal=Goal(max_per_op=300e-6)),
    Case("restart", restart, 10_000, unit="restart", goal=Goal(max_per_op=20e-6)),
]
