"""One subscriber's place in the fan-out: its capacity, its queue and its overflow episode."""

from __future__ import annotations

import asyncio
from collections import deque

from .._events import Event, EventKind


class Channel:
    """What the bus keeps per subscriber (or ``events()`` stream).

    ``queue`` holds built events for a consumer that runs apart from the publisher (an async
    worker, a blocking thread, a stream). Sync subscribers have no queue of their own: they
    share the bus's late-built log, and ``taken`` counts what one received in the current
    round (``_sync.py``).

    An *overflow episode* starts with the first event dropped for lack of room and ends when
    the queue has been drained empty: ``dropped`` counts its drops, ``reported`` says whether
    its ``full`` report went out (``_bus.Bus.dropped``).
    """

    __slots__ = (
        "capacity",
        "closed",
        "closing",
        "dropped",
        "kinds",
        "name",
        "queue",
        "reported",
        "reported_closed",
        "taken",
        "waiter",
    )

    def __init__(self, name: str, capacity: int, kinds: frozenset[EventKind] | None) -> None:
        self.name = name
        self.capacity = capacity
        self.kinds = kinds  # the kinds it gets; None: every kind
        self.queue: deque[Event] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closing = False  # no more waiting: drain what is queued, then stop
        self.closed = False  # the consumer has stopped: what is published is refused
        self.dropped = 0
        self.reported = False
        self.reported_closed = False
        self.taken = 0

    def wants(self, kind: EventKind) -> bool:
        """Whether this subscriber gets events of ``kind``."""
        return self.kinds is None or kind in self.kinds

    def has_room(self) -> bool:
        """Whether one more event fits in the queue."""
        return not self.closed and len(self.queue) < self.capacity

    def close(self) -> None:
        """The consumer has stopped: drop what is queued; later events are refused."""
        self.closed = True
        self.queue.clear()
        self.wake()

    def wake(self) -> None:
        """Wake the consumer waiting for an event, if any."""
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def wait(self) -> None:
        """Wait until an event is queued (or ``wake`` is called)."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
