"""Helpers for testing code that runs under taskvisor: record events, skip backoff waits.

- ``EventRecorder``: a subscriber that keeps every event; ``await recorder.wait_for(kind,
  task=...)`` wakes on each new event (no polling) and returns the matching one.
- ``no_backoff()``: a context manager under which every retry after a failure waits 0 s,
  whatever the tasks' backoff policies say (for your own services' test suites).
- ``NO_BACKOFF_DEFAULTS``: a ``TaskDefaults`` whose backoff is always 0 s, for supervisors
  built in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterator

from . import _testhooks
from ._events import Event, EventKind
from ._policies import BackoffPolicy
from ._spec import TaskDefaults
from ._subscriber import Subscriber
from ._validate import check_duration, check_int

__all__ = ["NO_BACKOFF_DEFAULTS", "ZERO_BACKOFF", "EventRecorder", "no_backoff"]

ZERO_BACKOFF = BackoffPolicy.constant(0.0)
"""A backoff policy that retries at once."""

NO_BACKOFF_DEFAULTS = TaskDefaults(backoff=ZERO_BACKOFF)
"""``TaskDefaults`` whose retries never wait; combine with other settings through
``dataclasses.replace(NO_BACKOFF_DEFAULTS, max_retries=3)``."""


@contextlib.contextmanager
def no_backoff() -> Iterator[None]:
    """Make every failure backoff 0 s while the block runs (process-wide; nests).

    The policies are still evaluated (``BACKOFF_SCHEDULED`` is published, with ``delay=0``);
    only the wait is skipped. Intervals of periodic tasks (``RestartPolicy.always(interval)``)
    are schedules, not backoff, and are kept. Wrap the code that runs the supervisor, e.g. in
    a pytest fixture: ``with no_backoff(): yield``. Not meant for async functions as a
    decorator (the block would end before the coroutine runs).
    """
    _testhooks.zero_backoff += 1
    try:
        yield
    finally:
        _testhooks.zero_backoff -= 1


KindFilter = EventKind | Collection[EventKind] | None


def _kind_set(kind: KindFilter) -> frozenset[EventKind] | None:
    if kind is None:
        return None
    if isinstance(kind, EventKind):
        return frozenset((kind,))
    if isinstance(kind, str) or not isinstance(kind, Collection):
        raise TypeError(f"kind must be an EventKind, a collection of them or None, got {kind!r}")
    kinds = frozenset(kind)
    for k in kinds:
        if not isinstance(k, EventKind):
            raise TypeError(f"kind must hold EventKind members, got {k!r}")
    return kinds


def _matcher(
    kind: KindFilter, task: str | None, where: Callable[[Event], bool] | None
) -> Callable[[Event], bool]:
    kinds = _kind_set(kind)
    if task is not None and not isinstance(task, str):
        raise TypeError(f"task must be a str or None, got {type(task).__name__}")
    if where is not None and not callable(where):
        raise TypeError(f"where must be a callable or None, got {type(where).__name__}")

    def match(e: Event) -> bool:
        return (
            (kinds is None or e.kind in kinds)
            and (task is None or e.task == task)
            and (where is None or where(e))
        )

    return match


class EventRecorder(Subscriber):
    """A subscriber that records every event it receives, in order, for assertions.

    Pass it in ``Supervisor(subscribers=[recorder])``. Its queue holds ``capacity`` events
    (default 65 536) so a test does not lose events to overflow. The recorder receives events
    through its own queue, a little after they are published: wait with ``wait_for``.
    """

    def __init__(self, *, capacity: int = 1 << 16) -> None:
        check_int("capacity", capacity, minimum=1)
        self.queue_capacity = capacity
        self._events: list[Event] = []
        self._cleared = 0  # how many events clear() forgot (keeps waiters' positions valid)
        self._waiters: list[asyncio.Future[None]] = []

    def on_event(self, event: Event) -> None:
        """Record ``event`` and wake every ``wait_for``."""
        self._events.append(event)
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    @property
    def events(self) -> list[Event]:
        """A copy of every recorded event, in the order received."""
        return list(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self._events))

    def select(
        self,
        kind: KindFilter = None,
        *,
        task: str | None = None,
        where: Callable[[Event], bool] | None = None,
    ) -> list[Event]:
        """Recorded events of ``kind`` (one, several, or any), for ``task`` if given."""
        match = _matcher(kind, task, where)
        return [e for e in self._events if match(e)]

    def kinds(self, task: str | None = None) -> list[EventKind]:
        """The kinds of the recorded events, in order; only ``task``'s if given."""
        return [e.kind for e in self._events if task is None or e.task == task]

    def clear(self) -> None:
        """Forget every recorded event (waiters only see events recorded afterwards)."""
        self._cleared += len(self._events)
        self._events = []

    async def wait_for(
        self,
        kind: KindFilter = None,
        *,
        task: str | None = None,
        where: Callable[[Event], bool] | None = None,
        count: int = 1,
        timeout: float = 5.0,
    ) -> Event:
        """Return the ``count``-th recorded event matching ``kind``/``task``/``where``.

        Events already recorded count too. Wakes on each new event; raises ``TimeoutError``
        (listing what was recorded) if no match arrives within ``timeout`` seconds.
        """
        match = _matcher(kind, task, where)
        check_int("count", count, minimum=1)
        seconds = check_duration("timeout", timeout)
        assert seconds is not None
        loop = asyncio.get_running_loop()
        pos = self._cleared  # absolute index of the next event to look at
        found = 0
        try:
            async with asyncio.timeout(seconds):
                while True:
                    events = self._events
                    i = max(0, pos - self._cleared)
                    while i < len(events):
                        e = events[i]
                        i += 1
                        if match(e):
                            found += 1
                            if found == count:
                                return e
                    pos = self._cleared + i
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
        except TimeoutError:
            seen = ", ".join(k.value for k in self.kinds(task)) or "nothing"
            raise TimeoutError(
                f"no {self._describe(kind, task)} event (#{count}) within {seconds}s; "
                f"recorded{' for ' + repr(task) if task else ''}: {seen}"
            ) from None

    @staticmethod
    def _describe(kind: KindFilter, task: str | None) -> str:
        kinds = _kind_set(kind)
        what = "any" if kinds is None else "/".join(sorted(k.value for k in kinds))
        return what if task is None else f"{what} for task {task!r}"
