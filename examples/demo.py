"""Several tasks with different policies under one supervisor (``python -m examples.demo``).

Four tasks, every event printed as it happens:

- ``flaky``: fails twice (``Fail``), then recovers, with exponential backoff and jitter;
- ``heartbeat``: a periodic task, every 1.5 s;
- ``slow-query``: exceeds its 0.5 s attempt timeout and runs out of its retry budget;
- ``migrate``: raises ``Fatal`` and is never retried.

Once the three finite tasks have finished (and the heartbeat has beaten twice), the demo asks
for a graceful shutdown and prints each task's outcome. ``--short`` divides every duration by
ten. (``make demo`` runs the command-line version, ``examples/demo.toml``.)
"""

from __future__ import annotations

import asyncio
import sys
import time

import taskvisor as tv
from taskvisor.testing import EventRecorder

_T0 = time.monotonic()


class Printer(tv.Subscriber):
    """Prints one line per event (a plain subscriber; see taskvisor.subscribers for logging)."""

    def on_event(self, event: tv.Event) -> None:
        parts = [f"{time.monotonic() - _T0:6.2f}s", f"{event.kind.value:<26}"]
        if event.task is not None:
            parts.append(event.task)
        if event.attempt is not None:
            parts.append(f"attempt={event.attempt}")
        if event.delay is not None:
            parts.append(f"delay={event.delay:.3f}s")
        if event.outcome is not None:
            parts.append(f"outcome={event.outcome.value}")
        if event.reason:
            parts.append(f"reason={event.reason!r}")
        print("  ".join(parts), flush=True)


def make_specs(scale: float) -> list[tv.TaskSpec]:
    """The four tasks; every duration is multiplied by ``scale``."""
    failures = 0

    async def flaky(ctx: tv.TaskContext) -> None:
        nonlocal failures
        await ctx.sleep(0.1 * scale)
        if failures < 2:
            failures += 1
            raise tv.Fail(f"upstream unavailable (try {ctx.attempt})", exit_code=75)

    async def heartbeat(ctx: tv.TaskContext) -> None:
        await ctx.sleep(0.05 * scale)

    async def slow_query() -> None:
        await asyncio.sleep(100 * scale)

    async def migrate() -> None:
        raise tv.Fatal("schema version 7 is unknown", exit_code=2)

    return [
        tv.TaskSpec.restartable(
            "flaky",
            flaky,
            backoff=tv.BackoffPolicy.exponential(0.2 * scale, factor=2.0, max=2.0 * scale),
        ),
        tv.TaskSpec.periodic("heartbeat", heartbeat, every=1.5 * scale),
        tv.TaskSpec.restartable(
            "slow-query",
            slow_query,
            timeout=0.5 * scale,
            max_retries=2,
            backoff=tv.BackoffPolicy.constant(0.3 * scale),
        ),
        tv.TaskSpec.once("migrate", migrate),
    ]


async def main(short: bool = False) -> int:
    beats = EventRecorder()  # only to know when the heartbeat has run twice
    sup = tv.Supervisor(
        config=tv.SupervisorConfig(grace=2.0, max_concurrent=8),
        subscribers=[Printer(), beats],
    )
    async with sup:
        handles = [sup.add(spec) for spec in make_specs(0.1 if short else 1.0)]
        finite = [h for h in handles if h.name != "heartbeat"]
        await asyncio.wait_for(asyncio.gather(*finite), timeout=60)
        await beats.wait_for(tv.EventKind.ATTEMPT_SUCCEEDED, task="heartbeat", count=2, timeout=60)
        print("\n-- registered tasks before shutdown --")
        for info in sup.list():
            print(f"  {info.name:<11} state={info.state.value:<8} attempt={info.attempt}")
        print("-- graceful shutdown --\n", flush=True)
        report = await sup.shutdown()
    print(f"\nshutdown: grace_exceeded={report.grace_exceeded} stuck={list(report.stuck)}")
    print("-- outcomes --")
    for handle in handles:
        outcome = await handle
        print(
            f"  {handle.name:<11} {outcome.kind.value:<10} attempts={outcome.attempts} "
            f"reason={outcome.reason!r}"
        )
    expected = {
        "flaky": "completed",
        "slow-query": "failed",
        "migrate": "fatal",
        "heartbeat": "canceled",
    }
    got = {h.name: h.outcome.kind.value for h in handles if h.outcome is not None}
    return 0 if got == expected else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
