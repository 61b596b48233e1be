"""Soak: churn tasks through one long-lived supervisor; memory must stay flat after warm-up.

Run ``python -m benchmarks.soak [--seconds N]`` (``make soak``; default 60 s). Not part of the
test suite, nor of ``python -m benchmarks``.

One supervisor (``max_concurrent=64``, a controller, a sync and an async subscriber, and an
``events()`` stream being read) lives for the whole run. Each round reuses the same names:

- 120 one-shot tasks: succeed, fail twice then succeed, fail fatally, time out;
- 20 long-running tasks: half stopped with ``cancel`` (waited), half with ``remove``;
- 2 tasks that ignore cancellation a little (cleanup after a stop), and a periodic task;
- 40 controller submissions into 5 slots, policies queue / replace / drop_if_running;

then waits for every outcome, checks each one, and checks the registry is empty. The run
is cut into four quarters; at the end of each, at a quiescent point (between rounds, after
``gc.collect()``), it prints the traced Python memory (``tracemalloc``), the current and
peak RSS. Memory is flat when each grows less than 5 % from the end of the second quarter
(warm-up done) to the end of the last: the script prints PASS or FAIL (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import sys
import time
import tracemalloc
from dataclasses import dataclass

import taskvisor as tv

GROWTH_LIMIT = 0.05
"""Largest growth allowed from the end of quarter 2 to the end of quarter 4."""

FAST = tv.BackoffPolicy.constant(0.0005)


@dataclass
class Quarter:
    """What one quarter of the run did, and the memory at its end."""

    rounds: int = 0
    tasks: int = 0
    events: int = 0
    traced: int = 0
    traced_peak: int = 0
    rss: int = 0
    peak_rss: int = 0


class Counter(tv.Subscriber):
    """A sync subscriber that counts events."""

    queue_capacity = 100_000

    def __init__(self) -> None:
        self.count = 0

    def on_event(self, event: tv.Event) -> None:
        self.count += 1


class AsyncCounter(tv.Subscriber):
    """An async subscriber that counts events."""

    queue_capacity = 100_000

    def __init__(self) -> None:
        self.count = 0

    async def on_event(self, event: tv.Event) -> None:
        self.count += 1


def current_rss() -> int:
    """Resident set size now, in bytes (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss() -> int:
    """Peak resident set size of the process so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class Churn:
    """The workload: one ``round()`` pushes a mixed batch through the supervisor."""

    def __init__(self, sup: tv.Supervisor) -> None:
        self.sup = sup
        self.rng = random.Random(1)
        self.flaky_calls: dict[str, int] = {}

    async def ok(self) -> None:
        await asyncio.sleep(0)

    async def flaky(self, ctx: tv.TaskContext) -> None:
        n = self.flaky_calls.get(ctx.name, 0) + 1
        self.flaky_calls[ctx.name] = n
        if n < 3:
            raise tv.Fail("not yet")
        del self.flaky_calls[ctx.name]

    async def fatal(self) -> None:
        raise tv.Fatal("broken", exit_code=3)

    async def hang(self) -> None:
        await asyncio.Event().wait()

    async def forever(self, ctx: tv.TaskContext) -> None:
        await ctx.cancelled()

    async def lingering(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.001)  # a little cleanup after the stop
            raise

    async def tick(self) -> None:
        pass

    async def round(self) -> int:
        """One round; returns how many tasks it ran. Raises if an outcome is wrong."""
        sup = self.sup
        S = tv.TaskSpec
        expect: list[tuple[tv.TaskHandle, tv.OutcomeKind | None]] = []
        for i in range(30):
            expect.append((sup.add(S.once(f"ok{i}", self.ok)), tv.OutcomeKind.COMPLETED))
            flaky = S.restartable(f"flaky{i}", self.flaky, backoff=FAST)
            expect.append((sup.add(flaky), tv.OutcomeKind.COMPLETED))
            fatal = S.restartable(f"fatal{i}", self.fatal, backoff=FAST)
            expect.append((sup.add(fatal), tv.OutcomeKind.FATAL))
            hang = S.once(f"hang{i}", self.hang, timeout=0.001)
            expect.append((sup.add(hang), tv.OutcomeKind.FAILED))
        long = [sup.add(S(f"long{i}", self.forever)) for i in range(20)]
        long += [sup.add(S(f"linger{i}", self.lingering)) for i in range(2)]
        periodic = sup.add(S.periodic("periodic", self.tick, every=0.0005))
        submitted = []
        policies = (tv.ControllerSpec.queue, tv.ControllerSpec.replace)
        for i in range(40):
            make = self.rng.choice((*policies, tv.ControllerSpec.drop_if_running))
            spec = S.once(f"sub{i}", self.ok)
            submitted.append(sup.submit(make(spec, slot=f"slot{i % 5}")))
        await asyncio.sleep(0.002)  # let the long-running ones start, and the periodic tick
        for i, handle in enumerate(long):
            if i % 2:
                sup.remove(handle.id)
            else:
                await sup.cancel(handle.id)
        sup.remove(periodic.id)
        for handle, kind in expect:
            outcome = await handle
            if outcome.kind is not kind:
                raise AssertionError(f"{handle.name}: {outcome} (expected {kind})")
        for handle in [*long, periodic]:
            outcome = await handle
            if outcome.kind is not tv.OutcomeKind.CANCELED:
                raise AssertionError(f"{handle.name}: {outcome} (expected CANCELED)")
        settled = (tv.OutcomeKind.COMPLETED, tv.OutcomeKind.REJECTED, tv.OutcomeKind.CANCELED)
        for handle in submitted:  # CANCELED: the owner a replace stopped
            outcome = await handle
            if outcome.kind not in settled:
                raise AssertionError(f"{handle.name}: {outcome}")
        if sup.list():
            raise AssertionError(f"tasks left registered after a round: {sup.list()}")
        snapshot = sup.controller_snapshot()
        if snapshot is None or snapshot.slots:
            raise AssertionError(f"controller slots left busy after a round: {snapshot}")
        return len(expect) + len(long) + 1 + len(submitted)


async def soak(seconds: float) -> list[Quarter]:
    counter, async_counter = Counter(), AsyncCounter()
    sup = tv.Supervisor(
        tv.SupervisorConfig(grace=1.0, max_concurrent=64, handle_signals=False),
        subscribers=[counter, async_counter],
        controller=tv.ControllerConfig(max_slot_queue=8),
    )
    quarters = [Quarter() for _ in range(4)]
    streamed = 0

    async def read_stream(stream: tv.EventStream) -> None:
        nonlocal streamed
        async for _ in stream:
            streamed += 1

    async with sup:
        reader = asyncio.create_task(read_stream(sup.events(capacity=100_000)))
        churn = Churn(sup)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for q, quarter in enumerate(quarters, start=1):
            end = start + seconds * q / 4
            events_before = counter.count
            while loop.time() < end:
                quarter.tasks += await churn.round()
                quarter.rounds += 1
            quarter.events = counter.count - events_before
            gc.collect()
            quarter.traced, quarter.traced_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            quarter.rss = current_rss()
            quarter.peak_rss = peak_rss()
            print_quarter(q, quarter, loop.time() - start)
    await reader
    if counter.count != async_counter.count or counter.count != streamed:
        raise AssertionError(
            f"subscribers disagree: {counter.count} / {async_counter.count} / {streamed}"
        )
    leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith("taskvisor")]
    if leftover:
        raise AssertionError(f"library tasks left after shutdown: {leftover}")
    return quarters


def mb(n: int) -> str:
    return f"{n / 1e6:8.2f}"


def kb(n: int) -> str:
    return f"{n / 1e3:9.1f}"


def print_quarter(q: int, quarter: Quarter, elapsed: float) -> None:
    if q == 1:
        print(
            "quarter  elapsed  rounds    tasks    events  traced_kB  traced_peak_kB"
            "   rss_MB  peak_rss_MB"
        )
    print(
        f"{q:7d} {elapsed:7.1f}s {quarter.rounds:7d} {quarter.tasks:8d} {quarter.events:9d}"
        f"  {kb(quarter.traced)}       {kb(quarter.traced_peak)} {mb(quarter.rss)}"
        f"     {mb(quarter.peak_rss)}",
        flush=True,
    )


def growth(before: int, after: int) -> float:
    return 0.0 if before == 0 else (after - before) / before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="duration (default 60)")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    print(f"taskvisor soak: {args.seconds:g} s, Python {sys.version.split()[0]}", flush=True)
    tracemalloc.start()
    started = time.perf_counter()
    quarters = asyncio.run(soak(args.seconds))
    took = time.perf_counter() - started
    tracemalloc.stop()
    q2, q4 = quarters[1], quarters[3]
    checks = {
        "traced": growth(q2.traced, q4.traced),
        "rss": growth(q2.rss, q4.rss),
        "peak_rss": growth(q2.peak_rss, q4.peak_rss),
    }
    total = sum(q.tasks for q in quarters)
    print(f"{total} tasks in {took:.1f} s ({total / took:,.0f} tasks/s, tracemalloc on)")
    print("growth Q2→Q4: " + ", ".join(f"{k} {v:+.2%}" for k, v in checks.items()))
    ok = all(v < GROWTH_LIMIT for v in checks.values())
    print(f"{'PASS' if ok else 'FAIL'}: memory flat after warm-up (limit {GROWTH_LIMIT:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
