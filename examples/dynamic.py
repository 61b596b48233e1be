"""Adding, listing and stopping tasks at runtime (``python -m examples.dynamic``).

Inside ``async with Supervisor() as sup`` tasks come and go while the program runs:

- ``sup.add(spec)`` registers and starts a task and returns its ``TaskHandle`` at once;
- ``sup.list()`` / ``sup.get(name)`` read the registry (exact, never behind events);
- ``await sup.cancel(name_or_id)`` stops a task and waits for its cleanup; ``sup.remove``
  only requests the stop; ``await handle.cancel()`` does what ``cancel`` does;
- a name is unique while its task is registered (``TaskAlreadyExists``), and free again
  after the task's cleanup, when it may be added again (with a new id).
"""

from __future__ import annotations

import asyncio
import sys

import taskvisor as tv


def show(sup: tv.Supervisor, title: str) -> None:
    print(f"-- {title}")
    for info in sup.list():
        print(f"   id={info.id} {info.name:<14} {info.state.value:<8} attempt={info.attempt}")


async def main(short: bool = False) -> int:
    started = {name: asyncio.Event() for name in ("consumer-eu", "consumer-us", "reindex")}

    async def consume(ctx: tv.TaskContext) -> None:
        started[ctx.name].set()
        while True:  # a long-running consumer: runs until it is stopped
            await ctx.sleep(0.05)

    async def reindex(ctx: tv.TaskContext) -> None:
        started[ctx.name].set()
        try:
            await ctx.sleep(3600)
        except asyncio.CancelledError:
            print(f"   {ctx.name}: stop requested, saving progress")
            raise

    async with tv.Supervisor() as sup:
        eu = sup.add(tv.TaskSpec.restartable("consumer-eu", consume))
        us = sup.add(tv.TaskSpec.restartable("consumer-us", consume))
        job = sup.add(tv.TaskSpec.once("reindex", reindex))
        for event in started.values():
            await asyncio.wait_for(event.wait(), timeout=10)
        show(sup, "three tasks running")

        try:
            sup.add(tv.TaskSpec.restartable("consumer-eu", consume))
        except tv.TaskAlreadyExists as exc:
            print(f"-- add refused: {exc}")

        stopped = await sup.cancel("reindex")  # by name; waits for the cleanup
        print(f"-- cancel('reindex') -> {stopped}; outcome: {(await job).kind.value}")

        print(f"-- remove(id={us.id}) -> {sup.remove(us.id)} (stop requested, not awaited)")
        show(sup, "right after remove: consumer-us is stopping")
        print(f"-- consumer-us outcome: {(await us).kind.value}")

        again = sup.add(tv.TaskSpec.restartable("consumer-us", consume))
        print(f"-- consumer-us added again: new id {again.id} (was {us.id})")
        print(f"-- is_alive('reindex') -> {sup.is_alive('reindex')}")
        show(sup, "before shutdown")
        print(f"-- handle.cancel() -> {await eu.cancel()}")
    print(f"-- after shutdown: consumer-us (2nd) {(await again).kind.value}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
