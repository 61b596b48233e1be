"""Controller admission throughput against direct ``Supervisor.add``, in the same run.

Each case pushes ``n`` one-shot tasks (an empty ``async def``) through a fresh supervisor
with a controller, timed from the first call through every handle resolved (specs are built
before timing starts); the figure is the cost per task. Cases:

- ``add``: ``sup.add`` of ``n`` distinct names (the baseline);
- ``submit-idle``: ``sup.submit(ControllerSpec.queue(...))`` into ``n`` distinct idle slots,
  each admitted at once;
- ``submit-busy``: ``n`` submissions queued behind a blocked owner in one slot, then
  released: each is admitted from its predecessor's cleanup;
- the same three with one subscriber attached (``+sub``: events are built and fanned out).

Goal: controller overhead over ``add`` ≤ 1.5× (each ``submit`` case against the ``add`` case
with the same subscribers). Run: ``python -m benchmarks controller`` (``--quick`` for a short
run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import taskvisor as tv
from benchmarks.harness import Case, CheckFailed, Goal, start_clock

OPS = 20_000
Run = Callable[[int], Awaitable[float]]


async def _empty() -> None:
    pass


class _Sink:
    """A subscriber that drops every event (measures the cost of building events)."""

    queue_capacity = 1 << 20

    def on_event(self, event: tv.Event) -> None:
        pass


def _supervisor(subscribed: bool, max_slot_queue: int = 100) -> tv.Supervisor:
    return tv.Supervisor(
        tv.SupervisorConfig(handle_signals=False),
        subscribers=[_Sink()] if subscribed else [],
        controller=tv.ControllerConfig(max_slot_queue=max_slot_queue),
    )


async def _all_ok(handles: list[tv.TaskHandle]) -> None:
    for h in handles:
        outcome = await h
        if not outcome.ok:
            raise CheckFailed(f"{h.name} ended {outcome.kind}")


def _bench_add(subscribed: bool) -> Run:
    async def run(n: int) -> float:
        specs = [tv.TaskSpec.once(f"t{i}", _empty) for i in range(n)]
        async with _supervisor(subscribed) as sup:
            t0 = start_clock()
            handles = [sup.add(spec) for spec in specs]
            await _all_ok(handles)
            return time.perf_counter() - t0

    return run


def _bench_submit_idle(subscribed: bool) -> Run:
    async def run(n: int) -> float:
        cspecs = [tv.ControllerSpec.queue(tv.TaskSpec.once(f"t{i}", _empty)) for i in range(n)]
        async with _supervisor(subscribed) as sup:
            t0 = start_clock()
            handles = [sup.submit(cs) for cs in cspecs]
            await _all_ok(handles)
            return time.perf_counter() - t0

    return run


def _bench_submit_busy(subscribed: bool) -> Run:
    async def run(n: int) -> float:
        gate = asyncio.Event()

        async def owner() -> None:
            await gate.wait()

        first = tv.ControllerSpec.queue(tv.TaskSpec.once("owner", owner), slot="busy")
        cspecs = [
            tv.ControllerSpec.queue(tv.TaskSpec.once(f"t{i}", _empty), slot="busy")
            for i in range(n)
        ]
        async with _supervisor(subscribed, max_slot_queue=n) as sup:
            head = sup.submit(first)
            t0 = start_clock()
            handles = [sup.submit(cs) for cs in cspecs]
            gate.set()
            await _all_ok([head, *handles])
            return time.perf_counter() - t0

    return run


def _cases() -> list[Case]:
    out: list[Case] = []
    for subscribed in (False, True):
        suffix = " +sub" if subscribed else ""
        base = f"add{suffix}"
        out.append(Case(base, _bench_add(subscribed), OPS, unit="task"))
        for name, bench in (
            ("submit-idle", _bench_submit_idle),
            ("submit-busy", _bench_submit_busy),
        ):
            out.append(
                Case(
                    f"{name}{suffix}",
                    bench(subscribed),
                    OPS,
                    unit="task",
                    baseline=base,
                    goal=Goal(max_ratio=1.5),
                )
            )
    return out


CASES: list[Case] = _cases()
