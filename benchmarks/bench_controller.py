"""Controller admission throughput against direct ``Supervisor.add``, in the same run.

Each case pushes ``n`` one-shot tasks (an empty ``async def``) through a fresh supervisor
and times two phases: the submission calls alone, and submission through completion
(every handle resolved). Specs are built before timing starts. Cases:

- ``add``: ``sup.add`` of ``n`` distinct names (the baseline);
- ``submit-idle``: ``sup.submit(ControllerSpec.queue(...))`` into ``n`` distinct idle slots,
  each admitted at once;
- ``submit-busy``: ``n`` submissions queued behind a blocked owner in one slot, then
  released: each is admitted from its predecessor's cleanup;
- the same three with one subscriber attached (events are built and fanned out).

Goal: controller overhead over ``add`` ≤ 1.5× (ratio column). Run it with
``.venv/bin/python -m benchmarks.bench_controller [n] [repeats]``; each figure is the best
of ``repeats`` runs.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import taskvisor as tv


async def _empty() -> None:
    pass


class _Sink:
    """A subscriber that drops every event (measures the cost of building events)."""

    queue_capacity = 1 << 20

    def on_event(self, event: tv.Event) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds spent in the submission calls, and through every outcome."""

    submit: float
    total: float


@dataclass(frozen=True, slots=True)
class Case:
    """One benchmark: ``run(n)`` pushes ``n`` tasks through and returns its timing."""

    name: str
    run: Callable[[int], Awaitable[Timing]]
    baseline: str | None = None
    """The case this one is compared with (ratio of total times)."""


def _supervisor(subscribed: bool, max_slot_queue: int = 100) -> tv.Supervisor:
    return tv.Supervisor(
        tv.SupervisorConfig(handle_signals=False),
        subscribers=[_Sink()] if subscribed else [],
        controller=tv.ControllerConfig(max_slot_queue=max_slot_queue),
    )


def _bench_add(subscribed: bool) -> Callable[[int], Awaitable[Timing]]:
    async def run(n: int) -> Timing:
        specs = [tv.TaskSpec.once(f"t{i}", _empty) for i in range(n)]
        async with _supervisor(subscribed) as sup:
            t0 = time.perf_counter()
            handles = [sup.add(spec) for spec in specs]
            t1 = time.perf_counter()
            for h in handles:
                await h
            t2 = time.perf_counter()
        return Timing(t1 - t0, t2 - t0)

    return run


def _bench_submit_idle(subscribed: bool) -> Callable[[int], Awaitable[Timing]]:
    async def run(n: int) -> Timing:
        cspecs = [tv.ControllerSpec.queue(tv.TaskSpec.once(f"t{i}", _empty)) for i in range(n)]
        async with _supervisor(subscribed) as sup:
            t0 = time.perf_counter()
            handles = [sup.submit(cs) for cs in cspecs]
            t1 = time.perf_counter()
            for h in handles:
                await h
            t2 = time.perf_counter()
        return Timing(t1 - t0, t2 - t0)

    return run


def _bench_submit_busy(subscribed: bool) -> Callable[[int], Awaitable[Timing]]:
    async def run(n: int) -> Timing:
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
            t0 = time.perf_counter()
            handles = [sup.submit(cs) for cs in cspecs]
            t1 = time.perf_counter()
            gate.set()
            await head
            for h in handles:
                await h
            t2 = time.perf_counter()
        return Timing(t1 - t0, t2 - t0)

    return run


def cases() -> list[Case]:
    """Every case of this module, each with the ``add`` case it is compared with."""
    out: list[Case] = []
    for subscribed in (False, True):
        suffix = " +sub" if subscribed else ""
        base = f"add{suffix}"
        out.append(Case(base, _bench_add(subscribed)))
        out.append(Case(f"submit-idle{suffix}", _bench_submit_idle(subscribed), base))
        out.append(Case(f"submit-busy{suffix}", _bench_submit_busy(subscribed), base))
    return out


async def measure(n: int = 20_000, repeats: int = 5) -> list[tuple[Case, Timing]]:
    """Run every case ``repeats`` times, interleaved; keep each case's best timing."""
    all_cases = cases()
    best: dict[str, Timing] = {}
    for _ in range(repeats):
        for case in all_cases:
            t = await case.run(n)
            prev = best.get(case.name)
            if prev is None or t.total < prev.total:
                best[case.name] = t
    return [(case, best[case.name]) for case in all_cases]


def table(results: list[tuple[Case, Timing]], n: int) -> str:
    """The results as a plain-text table."""
    totals = {case.name: t.total for case, t in results}
    lines = [
        f"n = {n} one-shot tasks per case, best of several runs",
        f"{'case':<18}{'submit µs/op':>14}{'total s':>10}{'tasks/s':>12}{'vs add':>9}",
    ]
    for case, t in results:
        ratio = "" if case.baseline is None else f"{t.total / totals[case.baseline]:.2f}x"
        lines.append(
            f"{case.name:<18}{t.submit / n * 1e6:>14.2f}{t.total:>10.3f}"
            f"{n / t.total:>12,.0f}{ratio:>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the table; optional arguments: ``n`` and ``repeats``."""
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 20_000
    repeats = int(args[1]) if len(args) > 1 else 5
    print(table(asyncio.run(measure(n, repeats)), n))


if __name__ == "__main__":
    main()
