"""Every way a task can end (``python -m examples.outcomes``).

Each task gets exactly one ``TaskOutcome``, resolved after its cleanup; ``await handle``
returns it. This program produces each ``OutcomeKind`` once and prints the outcomes:

=================  ==============================================================
``COMPLETED``      the body returned (and the restart policy asked for no more)
``FAILED``         a retryable failure with no retry left (budget spent, or NEVER)
``FATAL``          the body raised ``Fatal``: never retried
``CANCELED``       stopped on request (cancel, remove, shutdown, Replace)
``FORCE_ABORTED``  still running ``grace`` seconds after its stop was requested
``REJECTED``       never admitted (here: the controller's ``DROP_IF_RUNNING``)
=================  ==============================================================
"""

from __future__ import annotations

import asyncio
import sys

import taskvisor as tv


async def main(short: bool = False) -> int:
    running = asyncio.Event()

    async def ok() -> None:
        return None

    async def flaky(ctx: tv.TaskContext) -> None:
        raise tv.Fail(f"disk full (attempt {ctx.attempt})", exit_code=75)

    async def misconfigured() -> None:
        raise tv.Fatal("no DATABASE_URL", exit_code=78)

    async def serve(ctx: tv.TaskContext) -> None:
        running.set()
        await ctx.cancelled()  # runs until asked to stop

    async def stubborn(ctx: tv.TaskContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(10)  # ignores the stop request: forced after grace

    sup = tv.Supervisor(
        tv.SupervisorConfig(grace=0.1),
        controller=tv.ControllerConfig(),
        defaults=tv.TaskDefaults(backoff=tv.BackoffPolicy.constant(0.01)),
    )
    async with sup:
        handles = [
            sup.add(tv.TaskSpec.once("ok", ok)),
            sup.add(tv.TaskSpec.restartable("flaky", flaky, max_retries=2)),
            sup.add(tv.TaskSpec.restartable("misconfigured", misconfigured)),
            # Through the controller: "serve" owns the slot "serve" while it runs.
            sup.submit(tv.ControllerSpec.queue(tv.TaskSpec.once("serve", serve))),
            sup.add(tv.TaskSpec.once("stubborn", stubborn)),
        ]
        await asyncio.wait_for(running.wait(), timeout=10)
        # The slot "serve" is busy: a drop-if-running submission into it is rejected.
        handles.append(
            sup.submit(tv.ControllerSpec.drop_if_running(tv.TaskSpec.once("serve-2", ok), "serve"))
        )
        await sup.cancel("serve")
        await asyncio.wait_for(asyncio.gather(*handles[:3]), timeout=10)
        report = await sup.shutdown()  # "stubborn" is still running: forced after 0.1 s

    for handle in handles:
        o = await handle
        print(
            f"{handle.name:<14} {o.kind.value:<14} attempts={o.attempts} "
            f"exit_code={o.exit_code} rejection={o.rejection and o.rejection.value} "
            f"reason={o.reason!r}"
        )
    print(f"shutdown: grace_exceeded={report.grace_exceeded} stuck={list(report.stuck)}")
    kinds = {(await h).kind for h in handles}
    return 0 if kinds == set(tv.OutcomeKind) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
