"""Events per second through the subscriber fan-out, next to bare ``asyncio.Queue``s.

Every case pushes ``n`` events and then waits until every consumer has handled
them all; the figure is the cost per event (publish + delivery + the no-op handler, for
every subscriber).

- ``bus kN``: ``Bus.publish`` with ``N`` no-op subscribers (sync ``on_event``), then
  ``Bus.close`` (which drains every queue). The bus builds each event (late, once for all
  of them).
- ``queues kN``: the baseline: the same events, built in advance, ``put_nowait`` into ``N`` plain
  ``asyncio.Queue``s, each read by a plain consumer task calling the same no-op handler,
  then a sentinel per queue and a wait for the consumers.
- ``trickle …``: the same, but the publisher yields to the loop after every event, so every
  event wakes every consumer (the supervisor's usual pattern: events come one at a time).

Goals: with no subscriber, publishing costs < 1 µs per event; with ``N`` subscribers the
fan-out stays within 1.3× of the bare queues.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from benchmarks.harness import Case, Goal
from taskvisor import Event, EventKind, TaskId
from taskvisor._fanout import Bus
from taskvisor._subscriber import as_subscriber

OPS = 50_000
TRICKLE_OPS = 20_000


class NoOp:
    """A subscriber that does nothing with its events."""

    def __init__(self, capacity: int) -> None:
        self.queue_capacity = capacity

    def on_event(self, event: Event) -> None:
        pass


def _events(n: int) -> list[Event]:
    return [
        Event(seq=i, at=time.time(), kind=EventKind.ATTEMPT_STARTING, task="bench", attempt=1)
        for i in range(n)
    ]


def bus(k: int, *, trickle: bool = False) -> Callable[[int], Awaitable[float]]:
    """``n`` events through a ``Bus`` with ``k`` no-op subscribers."""

    async def run(n: int) -> float:
        b = Bus([as_subscriber(NoOp(n)) for _ in range(k)])
        b.start()
        await asyncio.sleep(0)  # every worker is idle, waiting: the steady state
        publish = b.publish
        kind, task_id = EventKind.ATTEMPT_STARTING, TaskId(1)
        t0 = time.perf_counter()
        if trickle:
            for _ in range(n):
                publish(kind, "bench", task_id, 1)
                await asyncio.sleep(0)
        else:
            for _ in range(n):
                publish(kind, "bench", task_id, 1)
        await b.close(60.0)
        return time.perf_counter() - t0

    return run


def queues(k: int, *, trickle: bool = False) -> Callable[[int], Awaitable[float]]:
    """``n`` events through ``k`` plain ``asyncio.Queue``s and consumer tasks."""

    async def consume(q: asyncio.Queue[Event | None], handler: NoOp) -> None:
        while True:
            e = await q.get()
            if e is None:
                return
            handler.on_event(e)

    async def run(n: int) -> float:
        events = _events(n)
        qs: list[asyncio.Queue[Event | None]] = [asyncio.Queue(n + 1) for _ in range(k)]
        consumers = [asyncio.create_task(consume(q, NoOp(n))) for q in qs]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        for e in events:
            for q in qs:
                try:  # noqa: SIM105 - contextlib.suppress would slow the baseline down
                    q.put_nowait(e)
                except asyncio.QueueFull:  # as the bus does: drop for that consumer only
                    pass
            if trickle:
                await asyncio.sleep(0)
        for q in qs:
            q.put_nowait(None)
        await asyncio.gather(*consumers)
        return time.perf_counter() - t0

    return run


CASES: list[Case] = [
    Case("queues k0", queues(0), OPS, unit="event"),
    Case(
        "bus k0",
        bus(0),
        OPS,
        unit="event",
        baseline="queues k0",
        goal=Goal(max_per_op=1e-6),
    ),
]
for _k in (1, 4, 8):
    CASES += [
        Case(f"queues k{_k}", queues(_k), OPS, unit="event"),
        Case(
            f"bus k{_k}",
            bus(_k),
            OPS,
            unit="event",
            baseline=f"queues k{_k}",
            goal=Goal(max_ratio=1.3),
        ),
    ]
for _k in (1, 4):
    CASES += [
        Case(f"trickle queues k{_k}", queues(_k, trickle=True), TRICKLE_OPS, unit="event"),
        Case(
            f"trickle bus k{_k}",
            bus(_k, trickle=True),
            TRICKLE_OPS,
            unit="event",
            baseline=f"trickle queues k{_k}",
            goal=Goal(max_ratio=1.3),
        ),
    ]
