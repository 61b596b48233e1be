"""``TaskId`` and ``TaskContext``: who a task is, and how its body learns it should stop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math


class TaskId(int):
    """A task's identity: unique in the process, never reused."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"TaskId({int(self)})"

    # Without this, ``str()`` and f-strings fall back to ``__repr__`` and read "TaskId(3)".
    __str__ = int.__repr__


_next_id = itertools.count(1).__next__


def new_task_id() -> TaskId:
    """Allocate the next process-wide ``TaskId``."""
    return TaskId(_next_id())


class StopSignal:
    """One task's stop request, shared by the contexts of all its attempts (internal)."""

    __slots__ = ("_waiters", "requested")

    def __init__(self) -> None:
        self.requested = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def request(self) -> None:
        """Mark the stop as requested and wake every waiter."""
        if self.requested:
            return
        self.requested = True
        waiters, self._waiters = self._waiters, None
        if waiters:
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def waiter(self) -> asyncio.Future[None]:
        """A future that completes when the stop is requested."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.requested:
            fut.set_result(None)
        else:
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(fut)
        return fut

    def discard(self, fut: asyncio.Future[None]) -> None:
        """Forget a waiter that is no longer needed."""
        if self._waiters is not None:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)


class TaskContext:
    """Passed to a task body: its identity, the attempt number, and the stop request."""

    __slots__ = ("_stop", "attempt", "id", "name")

    id: TaskId
    name: str
    attempt: int

    def __init__(self, task_id: TaskId, name: str, attempt: int, stop: StopSignal) -> None:
        self.id = task_id
        self.name = name
        self.attempt = attempt
        self._stop = stop

    def __repr__(self) -> str:
        return f"TaskContext(id={int(self.id)}, name={self.name!r}, attempt={self.attempt})"

    def is_cancelled(self) -> bool:
        """Whether a stop of this task was requested."""
        return self._stop.requested

    async def cancelled(self) -> None:
        """Return once a stop of this task is requested."""
        if self._stop.requested:
            return
        fut = self._stop.waiter()
        try:
            await fut
        finally:
            self._stop.discard(fut)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``; raise ``asyncio.CancelledError`` at once if a stop is requested."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
        if math.isnan(seconds):
            raise ValueError("seconds must not be NaN")
        if self._stop.requested:
            raise asyncio.CancelledError("task stop requested")
        if seconds <= 0:
            await asyncio.sleep(0)
        else:
            fut = self._stop.waiter()
            timer = asyncio.get_running_loop().call_later(seconds, _resolve, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self._stop.discard(fut)
        if self._stop.requested:
            raise asyncio.CancelledError("task stop requested")


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
