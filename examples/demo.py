"""A short, real demonstration of supervision (`make demo`, or `python -m examples.demo`).

Four tasks under one supervisor, every event printed as it happens:

- ``flaky``: fails twice (``Fail``), then recovers, with exponential backoff and jitter;
- ``heartbeat``: a periodic task, every 1.5 s;
- ``slow-query``: exceeds its 0.5 s attempt timeout and runs out of its retry budget;
- ``migrate``: raises ``Fatal`` and is never retried.

After a few seconds the demo asks for a graceful shutdown and prints each task's outcome.
"""

from __future__ import annotations

import asyncio
import sys
import time

import taskvisor as tv

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


def make_flaky() -> tv.TaskSpec:
    failures = 0

    async def flaky(ctx: tv.TaskContext) -> None:
        nonlocal failures
        await ctx.sleep(0.1)
        if failures < 2:
            failures += 1
            raise tv.Fail(f"upstream unavailable (try {ctx.attempt})", exit_code=75)

    return tv.TaskSpec.restartable(
        "flaky", flaky, backoff=tv.BackoffPolicy.exponential(0.2, factor=2.0, max=2.0)
    )


async def heartbeat(ctx: tv.TaskContext) -> None:
    await ctx.sleep(0.05)


async def slow_query() -> None:
    await asyncio.sleep(10)


async def migrate() -> None:
    raise tv.Fatal("schema version 7 is unknown", exit_code=2)


async def main(run_for: float) -> int:
    sup = tv.Supervisor(
        config=tv.SupervisorConfig(grace=2.0, max_concurrent=8),
        subscribers=[Printer()],
    )
    async with sup:
        handles = [
            sup.add(make_flaky()),
            sup.add(tv.TaskSpec.periodic("heartbeat", heartbeat, every=1.5)),
            sup.add(
                tv.TaskSpec.restartable(
                    "slow-query",
                    slow_query,
                    timeout=0.5,
                    max_retries=2,
                    backoff=tv.BackoffPolicy.constant(0.3),
                )
            ),
            sup.add(tv.TaskSpec.once("migrate", migrate)),
        ]
        await asyncio.sleep(run_for)  # let the supervisor work, then stop it
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
    sys.exit(asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 6.0)))
