"""``sup.events()``: a subscriber of its own, consumed by ``async for``."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Callable

from .._events import Event
from ._channel import Channel


class EventStream:
    """``async for event in sup.events()``: a subscriber of its own, consumed by iteration.

    Subscribed when created, so no event published afterwards is missed for lack of
    iteration. Ends after the supervisor's shutdown once the queue is drained. Use
    ``await stream.aclose()`` (or ``async with``) to stop receiving early.
    """

    __slots__ = ("__weakref__", "_ch", "_drained", "_finalizer")

    def __init__(
        self,
        ch: Channel,
        unsubscribe: Callable[[Channel], None],
        drained: Callable[[Channel], None],
    ) -> None:
        self._ch = ch
        self._drained = drained
        # An abandoned stream must not keep its subscription forever: unsubscribe when collected.
        self._finalizer = weakref.finalize(self, unsubscribe, ch)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        ch = self._ch
        while True:
            if ch.queue:
                return ch.queue.popleft()
            self._drained(ch)
            if ch.queue:  # its overflow report
                continue
            if ch.closing or ch.closed:
                self._finalizer()  # ended: stop receiving what is published after the close
                raise StopAsyncIteration
            await ch.wait()

    async def aclose(self) -> None:
        """Stop receiving events; the iteration ends."""
        self._finalizer()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            await self.aclose()
