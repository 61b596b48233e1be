"""Periodic tasks (``python -m examples.periodic``).

``TaskSpec.periodic(name, fn, every)`` runs ``fn``, waits ``every`` seconds after each
success, and runs it again, until it is stopped. A failed run is not followed by the
interval but by the backoff policy, like any retry; the next success resets the backoff.
Both waits are announced by ``BACKOFF_SCHEDULED``, whose ``backoff_source`` tells them apart.

Here ``refresh-cache`` runs every second (every 50 ms with ``--short``), and its third run
fails once. The program stops the supervisor after six successful runs.
"""

from __future__ import annotations

import asyncio
import sys
import time

import taskvisor as tv


class Waits(tv.Subscriber):
    """Prints each scheduled wait: the interval after a success, the backoff after a failure."""

    def on_event(self, event: tv.Event) -> None:
        if event.kind is tv.EventKind.BACKOFF_SCHEDULED and event.backoff_source is not None:
            print(f"    next run in {event.delay:.3f}s ({event.backoff_source.value})")


async def main(short: bool = False) -> int:
    every = 0.05 if short else 1.0
    enough = asyncio.Event()
    successes = 0
    t0 = time.monotonic()

    async def refresh_cache(ctx: tv.TaskContext) -> None:
        nonlocal successes
        print(f"{time.monotonic() - t0:6.2f}s  run {ctx.attempt}", flush=True)
        if ctx.attempt == 3:
            raise tv.Fail("cache backend busy")
        successes += 1
        if successes == 6:
            enough.set()

    spec = tv.TaskSpec.periodic(
        "refresh-cache",
        refresh_cache,
        every=every,
        backoff=tv.BackoffPolicy.constant(every / 5),  # after a failure: retry sooner
        timeout=every,  # a stuck run must not delay the schedule for long
    )
    sup = tv.Supervisor(subscribers=[Waits()])
    async with sup:
        handle = sup.add(spec)
        await asyncio.wait_for(enough.wait(), timeout=30 * every + 5)
    outcome = await handle
    print(f"stopped: {outcome.kind.value} after {outcome.attempts} runs")
    return 0 if outcome.kind is tv.OutcomeKind.CANCELED and successes >= 6 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
