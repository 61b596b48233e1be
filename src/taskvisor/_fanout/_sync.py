"""Sync subscribers: one shared log of late-built events, handed out once per loop iteration.

A sync ``on_event`` runs on the event loop whatever the design, so these subscribers get no
queue and no worker of their own. The bus appends each event they want to one log, as plain
values (the *late-built form*, known to this module alone); once per loop iteration
``dispatch`` builds each ``Event`` and hands it to every sync subscriber that wants it, in
order. An event thus lives only while it is delivered (``docs/performance.md`` says why
that pays).

Capacity: the log is each sync subscriber's queue. While it holds fewer events than the
smallest capacity nobody can be full and nothing is counted. Past that, each subscriber's
backlog is counted; one that is full when an event is published is *cut*: it gets nothing
more of this round (its backlog only shrinks when the round is delivered), each event it
misses is a drop, and its queue counts as drained empty at the end of the round.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .._events import Event, EventDraft, EventKind
from .._subscriber import EventCallback, SubscriberRef
from ._channel import Channel

RECORD = 9
"""Values per event in the log: ``kind, seq, at, task, task_id, attempt, duration, outcome,
rest``, where ``rest`` is ``None`` or the tuple ``reason, exit_code, delay, timeout,
backoff_source, rejection, slot, error, fence, dropped`` (the same layout for every kind)."""

_NEVER = math.inf


class Member:
    """A sync subscriber: its validated reference, its channel, and this round's counts."""

    __slots__ = ("call", "ch", "cutoff", "ref")

    def __init__(self, ref: SubscriberRef, ch: Channel) -> None:
        self.ref = ref
        self.call: EventCallback = ref.call
        self.ch = ch
        self.cutoff: float = _NEVER  # index of the first event of this round it misses


class SyncFanout:
    """The shared log of the sync subscribers and its dispatcher."""

    def __init__(
        self,
        node: Callable[[], str | None],
        drop: Callable[[Channel, EventKind], str | None],
        report: Callable[[Channel, str], None],
        panicked: Callable[[SubscriberRef, EventKind | None, BaseException], None],
        promote: Callable[[Member, Awaitable[Any]], None],
        drained: Callable[[Channel], None],
    ) -> None:
        self._node = node
        self._drop = drop
        self._report = report
        self._panicked = panicked
        self._promote = promote
        self._drained = drained
        self.log: list[Any] = []
        self._counted = False  # backlogs (``Channel.taken``) are exact for this round
        self._cut = False  # some member was cut this round
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self.set_members([])

    def set_members(self, members: list[Member]) -> None:
        """Dispatch to ``members`` from now on."""
        self.members = members
        self.by_kind = {k: [m for m in members if m.ch.wants(k)] for k in EventKind}
        self.wanted = frozenset(k for k, ms in self.by_kind.items() if ms)
        # Below this many events in a round, nobody can be full: no counting needed.
        self.room = min((m.ch.capacity for m in members), default=0)
        self._limit = RECORD * self.room  # the same, in values of the log

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Dispatch on ``loop`` from now on."""
        self._loop = loop
        if self.log:
            self._schedule()

    @property
    def pending(self) -> int:
        """Events waiting in the log for the next round."""
        return len(self.log) // RECORD

    def remove(self, member: Member) -> None:
        """Stop dispatching to ``member`` (it has moved to a worker of its own)."""
        self.set_members([m for m in self.members if m is not member])

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
        """Append one event, late-built, for the next round (or drop it for who is full)."""
        log = self.log
        if len(log) < self._limit:  # nobody can be full yet
            log += (kind, seq, at, task, task_id, attempt, duration, outcome, rest)
            if not self._scheduled:
                self._schedule()
            return
        due = self._count(kind)
        if due is None:  # every member that wants it is full: not logged at all
            return
        log += (kind, seq, at, task, task_id, attempt, duration, outcome, rest)
        if not self._scheduled:
            self._schedule()
        for ch, reason in due:  # after the event itself: everyone sees publish order
            self._report(ch, reason)

    def add_batch(
        self,
        kind: EventKind,
        seqs: Sequence[int],
        at: float,
        tasks: Sequence[str],
        task_ids: Sequence[Any],
    ) -> None:
        """Append one event of ``kind`` per task (``seq``, ``task`` and ``task_id`` only)."""
        n = len(seqs)
        if len(self.log) + RECORD * n > self._limit:  # somebody may fill up: one at a time
            for seq, task, task_id in zip(seqs, tasks, task_ids, strict=True):
                self.add(kind, seq, at, task, task_id, None, None, None, None)
            return
        # Written column by column into a block of None: a few C-level slice assignments.
        block: list[Any] = [None] * (RECORD * n)
        block[0::RECORD] = [kind] * n
        block[1::RECORD] = seqs
        block[2::RECORD] = [at] * n
        block[3::RECORD] = tasks
        block[4::RECORD] = task_ids
        self.log += block
        if not self._scheduled:
            self._schedule()

    def _count(self, kind: EventKind) -> list[tuple[Channel, str]] | None:
        """Some member may be full: count this event against each backlog, cut the full.

        Returns the overflow reports now due, or ``None`` if nobody takes the event.
        """
        if not self._counted:
            self._counted = True
            kinds = self.log[::RECORD]
            for m in self.members:
                ch = m.ch
                ch.taken = len(kinds) if ch.kinds is None else sum(k in ch.kinds for k in kinds)
        due: list[tuple[Channel, str]] = []
        taken = False
        for m in self.by_kind[kind]:
            ch = m.ch
            if m.cutoff is _NEVER and ch.taken < ch.capacity:
                ch.taken += 1
                taken = True
                continue
            if m.cutoff is _NEVER:
                m.cutoff = len(self.log) // RECORD
                self._cut = True
            reason = self._drop(ch, kind)
            if reason is not None:
                due.append((ch, reason))
        if taken:
            return due
        for ch, reason in due:  # nobody takes the event: nothing to publish them after
            self._report(ch, reason)
        return None

    def _schedule(self) -> None:
        if self._loop is not None and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.dispatch)

    def dispatch(self, deadline: float | None = None) -> None:
        """One round: hand every logged event to the sync subscribers that want it.

        A member cut this round gets nothing from its cutoff on (those were counted as
        drops when published); one that raises is reported and the others go on; one whose
        ``on_event`` returns an awaitable moves to a worker of its own, which gets the rest
        of the round. With a ``deadline`` (the drain at close, a ``loop.time()``), what is
        not delivered by then is dropped. What is published meanwhile waits for the next
        round.
        """
        self._scheduled = False
        log = self.log
        members = self.members
        cut = self._cut
        self.log = []
        self._counted = self._cut = False
        if log:
            self._deliver(log, members, cut, deadline)
        for m in members:
            m.cutoff = _NEVER
            m.ch.taken = 0
            self._drained(m.ch)

    def _deliver(
        self, log: list[Any], members: list[Member], cut: bool, deadline: float | None
    ) -> None:
        by_kind = self.by_kind
        clock = self._loop.time if deadline is not None and self._loop is not None else None
        until = _NEVER if deadline is None else deadline
        promoted: list[Member] = []  # moved to a worker during this round
        node = self._node()
        index = -1
        it = iter(log)
        for kind, seq, at, task, task_id, attempt, duration, outcome, rest in zip(
            it, it, it, it, it, it, it, it, it, strict=True
        ):
            index += 1
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
                if m.ch.wants(kind) and index < m.cutoff:
                    m.ch.queue.append(event)
            for m in by_kind[kind]:
                if cut and index >= m.cutoff:
                    continue
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
        for m in promoted:
            m.cutoff = _NEVER
