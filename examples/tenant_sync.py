"""One sync per tenant, the newest request wins (``python -m examples.tenant_sync``).

A controller (``Supervisor(controller=ControllerConfig())``) admits submissions per *slot*:
one task owns a slot at a time, different slots run side by side. Here the slot is the
tenant, and each sync request is submitted with a policy:

- ``ControllerSpec.replace``: a newer request stops the running sync of that tenant
  (which ends ``CANCELED``) and starts once its cleanup is done; a request that was waiting
  for the slot is displaced (``REJECTED`` / ``SUPERSEDED``);
- ``ControllerSpec.queue``: waits its turn behind the owner (FIFO);
- ``ControllerSpec.drop_if_running``: refused (``SLOT_BUSY``) while the tenant is busy.
"""

from __future__ import annotations

import asyncio
import sys

import taskvisor as tv
from taskvisor.testing import EventRecorder


async def main(short: bool = False) -> int:
    work = 0.05 if short else 1.0
    synced: list[str] = []
    started = {name: asyncio.Event() for name in ("acme-1", "globex-1")}

    def make_sync(tenant: str, version: int) -> tv.TaskSpec:
        name = f"{tenant}-{version}"

        async def sync(ctx: tv.TaskContext) -> None:
            if name in started:
                started[name].set()
            try:
                await ctx.sleep(work)  # stands for fetching and writing the tenant's data
            except asyncio.CancelledError:
                print(f"  {name}: replaced by a newer request, stopping")
                raise
            synced.append(name)

        return tv.TaskSpec.once(name, sync)

    slots = EventRecorder()
    sup = tv.Supervisor(controller=tv.ControllerConfig(max_slot_queue=10), subscribers=[slots])
    async with sup:
        acme1 = sup.submit(tv.ControllerSpec.replace(make_sync("acme", 1), slot="acme"))
        globex1 = sup.submit(tv.ControllerSpec.queue(make_sync("globex", 1), slot="globex"))
        await started["acme-1"].wait()
        await started["globex-1"].wait()

        globex2 = sup.submit(tv.ControllerSpec.queue(make_sync("globex", 2), slot="globex"))
        refresh = sup.submit(
            tv.ControllerSpec.drop_if_running(make_sync("globex", 3), slot="globex")
        )
        acme2 = sup.submit(tv.ControllerSpec.replace(make_sync("acme", 2), slot="acme"))
        acme3 = sup.submit(tv.ControllerSpec.replace(make_sync("acme", 3), slot="acme"))

        snapshot = sup.controller_snapshot()
        assert snapshot is not None
        print("slots while busy:")
        for view in snapshot.slots:
            print(
                f"  {view.slot:<7} {view.state.value:<11} owner={view.owner} queued={view.queued}"
            )

        handles = [acme1, acme2, acme3, globex1, globex2, refresh]
        await asyncio.wait_for(asyncio.gather(*handles), timeout=30)

    print("outcomes:")
    for h in handles:
        o = await h
        extra = f" ({o.rejection.value})" if o.rejection is not None else ""
        print(f"  {h.name:<9} {o.kind.value}{extra}")
    print(f"synced, in order: {synced}")
    moves = [e.reason for e in slots.select(tv.EventKind.CONTROLLER_SLOT_TRANSITION, where=acme)]
    print(f"slot acme: {' '.join(m for m in moves if m)}")
    per_tenant = {t: [n for n in synced if n.startswith(t)] for t in ("acme", "globex")}
    return 0 if per_tenant == {"acme": ["acme-3"], "globex": ["globex-1", "globex-2"]} else 1


def acme(event: tv.Event) -> bool:
    return event.slot == "acme"


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
