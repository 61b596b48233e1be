"""Sync subscribers: one shared log of late-built events, handed out once per loop iteration.

A sync ``on_event`` runs on the event loop whatever the design, so these subscribers get no
queue and no worker of their own. The bus appends each event they want to one log, as plain
values (the *late-built form*, known to this module alone); once per loop iteration
``dispatch`` builds each ``Event`` and hands it to every sync subscriber that wants it, in
order. An event thus lives only while it is delivered (``docs/performance.md`` says why
that pays).

Capacity: a sync subscriber receives at most ``queue_capacity`` events per round; the rest
of the round is dropped for it alone (what its own bounded queue would have refused), and
the bus reports the episode. Its queue is drained empty at the end of each round.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .._events import Event, EventDraft, EventKind
from .._subscriber import EventCallback, SubscriberRef
from ._channel import Channel

RECORD = 9
"""Values per event in the log: ``kind, seq, at, task, task_id, attempt, duration, outcome,
rest``, where ``rest`` is ``None`` or the tuple ``reason, exit_code, delay, timeout,
backoff_source, rejection, slot, error, fence, dropped`` (the same layout for every kind)."""


class Member:
    """A sync subscriber: its validated reference and its channel."""

    __slots__ = ("call", "ch", "ref")

    def __init__(self, ref: SubscriberRef, ch: Channel) -> None:
        self.ref = ref
        self.call: EventCallback = ref.call
        self.ch = ch


class SyncFanout:
    """The shared log of the sync subscribers and its dispatcher."""

    def __init__(
        self,
        members: list[Member],
        node: Callable[[], str | None],
        report: Callable[[Channel, EventKind], None],
        panicked: Callable[[SubscriberRef, EventKind | None, BaseException], None],
        promote: Callable[[Member, Awaitable[Any]], None],
        drained: Callable[[Channel], None],
    ) -> None:
        self._node = node
        self._report = report
        self._panicked = panicked
        self._promote = promote
        self._drained = drained
        self.log: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self.set_members(members)

    def set_members(self, members: list[Member]) -> None:
        """Dispatch to ``members`` from now on."""
        self.members = members
        self.by_kind = {k: [m for m in members if m.ch.wants(k)] for k in EventKind}
        self.wanted = frozenset(k for k, ms in self.by_kind.items() if ms)
        # Below this many events in a round, nobody can be full: no counting needed.
        self.room = min((m.ch.capacity for m in members), default=0)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Dispatch on ``loop`` from now on."""
        self._loop = loop
        if self.log:
            self._schedule()

    def remove(self, member: Member) -> None:
        """Stop dispatching to ``member`` (it has moved to a worker of its own)."""
        self.set_members([m for m in self.members if m is not member])

    def pending(self) -> int:
        """Events waiting in the log."""
        return len(self.log) // RECORD

    def add(
        self,
        kind: EventKind,
        seq: int,
        at: float,
        task: str | None,
        task_id: Any,
        attempt: int | None,
        duration: float | None,
        outcome: Any,
        rest: tuple[Any, ...] | None,
    ) -> None:
        """Append one event, late-built, for the next round."""
        self.log += (kind, seq, at, task, task_id, attempt, duration, outcome, rest)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        if self._loop is not None and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.dispatch)

    def dispatch(self, deadline: float | None = None) -> None:
        """One round: hand every logged event to the sync subscribers that want it.

        A subscriber that has taken ``capacity`` events this round gets no more of it (the
        bus reports the drops); one that raises is reported and the others go on; one whose
        ``on_event`` returns an awaitable moves to a worker of its own, which gets the rest
        of the round. With a ``deadline`` (the drain at close, a ``loop.time()``), what is
        not delivered by then is dropped. What is published meanwhile waits for the next
        round.
        """
        self._scheduled = False
        log = self.log
        if not log:
            return
        self.log = []
        counting = len(log) // RECORD > self.room
        by_kind = self.by_kind
        clock = self._loop.time if deadline is not None and self._loop is not None else None
        until = math.inf if deadline is None else deadline
        promoted: list[Member] = []  # moved to a worker during this round
        node = self._node()
        it = iter(log)
        for kind, seq, at, task, task_id, attempt, duration, outcome, rest in zip(
            it, it, it, it, it, it, it, it, it, strict=True
        ):
            if clock is not None and clock() >= until:
                break
            # The event, built here (inline: this loop is the hot path of every event bound
            # for a sync subscriber; ``_events.build`` does the same for the others).
            event: Any = EventDraft()
            event.seq = seq
            event.at = at
            event.kind = kind
            event.task = task
            event.task_id = task_id
            event.attempt = attempt
            event.duration = duration
            event.outcome = outcome
            event.node = node
            if rest is None:
                event.reason = event.exit_code = event.delay = event.timeout = None
                event.backoff_source = event.rejection = event.slot = event.error = None
                event.fence = event.dropped = None
            else:
                (
                    event.reason, event.exit_code, event.delay, event.timeout,
                    event.backoff_source, event.rejection, event.slot, event.error,
                    event.fence, event.dropped,
                ) = rest  # fmt: skip
            event.__class__ = Event
            for m in promoted:
                if m.ch.wants(kind):
                    m.ch.queue.append(event)
            for m in by_kind[kind]:
                ch = m.ch
                if counting:
                    if ch.taken >= ch.capacity:
                        self._report(ch, kind)
                        continue
                    ch.taken += 1
                try:
                    result = m.call(event)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # a subscriber's bug, CancelledError included
                    self._panicked(m.ref, kind, exc)
                    continue
                if result is not None and inspect.isawaitable(result):
                    self._promote(m, result)
                    promoted.append(m)  # gets the rest of the round in its queue
                    by_kind = self.by_kind
        for m in self.members:
            ch = m.ch
            ch.taken = 0
            self._drained(ch)
