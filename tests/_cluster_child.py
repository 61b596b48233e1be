"""A holder in its own process, for the freeze tests: acquire a key, report, wait to lose it.

``python _cluster_child.py BACKEND TARGET PREFIX KEY LEASE``; prints JSON lines:
``{"event": "acquired", "fence": N, "t": epoch}``, then ``{"event": "lost", ...}`` when the
lease is lost, then ``{"event": "released", "ok": bool}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from taskvisor.cluster import MemoryCoordinator, PostgresCoordinator, RedisCoordinator
from taskvisor.cluster._protocol import Lease, LeaseSignal


def say(**fields: object) -> None:
    print(json.dumps({**fields, "t": time.time()}), flush=True)


async def main(backend: str, target: str, prefix: str, key: str, lease_s: float) -> None:
    coord: MemoryCoordinator | PostgresCoordinator | RedisCoordinator
    if backend == "postgres":
        coord = PostgresCoordinator(target, node="child", lease=lease_s, prefix=prefix)
    else:
        coord = RedisCoordinator(target, node="child", lease=lease_s, prefix=prefix)
    await coord.open()
    lost = asyncio.Event()

    def on_signal(lease: Lease, signal: LeaseSignal) -> None:
        if signal is LeaseSignal.LOST:
            say(event="lost", reason=str(lease.lost_reason), valid=lease.valid)
            lost.set()

    lease = await coord.acquire(key, on_signal=on_signal)
    say(event="acquired", fence=lease.fence)
    await lost.wait()
    say(event="released", ok=await coord.release(lease))
    await coord.close()


if __name__ == "__main__":
    backend, target, prefix, key, lease_s = sys.argv[1:6]
    asyncio.run(main(backend, target, prefix, key, float(lease_s)))
