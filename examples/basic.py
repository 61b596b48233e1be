"""The smallest complete program (``python -m examples.basic``).

One task that fails twice before it succeeds. The supervisor retries it with exponential
backoff and jitter, bounds each attempt with a timeout, and gives the task one final
outcome, which ``await handle`` returns.
"""

from __future__ import annotations

import asyncio
import sys

import taskvisor as tv


async def fetch_rates(ctx: tv.TaskContext) -> None:
    print(f"{ctx.name}: attempt {ctx.attempt}")
    if ctx.attempt < 3:
        raise tv.Fail("rates API unavailable")  # retryable: backoff, then a new attempt
    print(f"{ctx.name}: rates fetched")


async def main(short: bool = False) -> int:
    first_delay = 0.01 if short else 0.5  # 0.5 s, then about 1 s (jittered)
    spec = tv.TaskSpec.restartable(
        "fetch-rates",
        fetch_rates,
        backoff=tv.BackoffPolicy.exponential(first_delay, max=10.0),
        timeout=5.0,
    )
    async with tv.Supervisor() as sup:  # leaving the block shuts the supervisor down
        handle = sup.add(spec)
        outcome = await handle
    print(f"outcome: {outcome.kind.value} after {outcome.attempts} attempts")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
