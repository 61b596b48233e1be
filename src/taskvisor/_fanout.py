"""The subscriber fan-out: every subscriber has its own bounded FIFO backlog.

::

    emit(kind, …)  ─┐
    publish(event) ─┼─► [shared log] ──► _dispatch (once per loop iteration) ──► sync on_event()s
                    ├─► [queue 1] ──► worker 1 ──► async subscriber1.on_event()
                    ├─► [queue 2] ──► worker 2 ──► blocking subscriber2 (in its own thread)
                    └─► [stream ] ──► ``async for event in sup.events()``

Async and blocking subscribers each have a queue and a worker task. Sync subscribers (a plain
``on_event`` run on the loop) share one log instead, handed to each of them in order by one
callback per loop iteration: one append per event for all of them, no task switch. Their
capacities stay exact and their own: an event that finds one of them full is recorded as
skipped for that one only (``_skips``). A sync ``on_event`` runs on the loop in either
design, so a slow one delays the loop the same way; nothing else is shared.

Packed events: the supervisor publishes its plain lifecycle events through ``emit`` (kind,
task, id, attempt, duration, outcome; stamped with ``seq`` and ``at`` there). When only sync
subscribers listen, ``emit`` appends those plain values to the shared log and ``_dispatch``
builds the ``Event`` as it hands it out (see ``_events.RECORD``): each event then lives only
while it is delivered, so a burst of thousands of tasks leaves no thousands of events for
the garbage collector to walk. With a queue to fill, ``emit`` builds the event at once.

Rules: publishing never blocks and never awaits; a full queue drops that event for that
subscriber only and publishes ``SUBSCRIBER_OVERFLOW``; an ``on_event`` that raises is reported
as ``SUBSCRIBER_PANICKED`` and its worker goes on; diagnostic events (overflow, panic) never
cause further diagnostics; ``close`` drains every queue under one shared deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import math
import queue as _queue
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from time import perf_counter
from types import MappingProxyType
from typing import Any, TypeVar

from ._context import TaskId
from ._events import (
    DIAGNOSTIC_KINDS,
    RECORD,
    Event,
    EventKind,
    new_event,
    next_seq,
    next_seqs,
    packed,
    unpack,
    wall_clock,
)
from ._outcome import OutcomeKind
from ._subscriber import DEFAULT_QUEUE_CAPACITY, EventCallback, SubscriberRef

# Enum members as module constants: ``EventKind.X`` costs ~75 ns on CPython 3.11 (the enum
# metaclass's attribute hook), a module global ~5 ns; these are read on every task's path.
_SUCCEEDED = EventKind.ATTEMPT_SUCCEEDED
_FINISHED = EventKind.TASK_FINISHED
_REMOVED = EventKind.TASK_REMOVED

_T = TypeVar("_T")

_EPOCH_TTL = 0.001
"""Seconds an offset between the wall clock and ``time.perf_counter()`` is used (``_wall_time``)."""


class _SubscriberThread:
    """The dedicated thread of a ``blocking`` subscriber: runs its calls one at a time.

    A daemon thread, not a ``ThreadPoolExecutor``, whose threads are joined when the
    interpreter exits: a subscriber stuck in ``on_event`` would keep the process alive after
    shutdown. Python cannot kill a thread; a daemon thread at least lets the process end.
    """

    __slots__ = ("_jobs",)

    def __init__(self, name: str) -> None:
        self._jobs: _queue.SimpleQueue[Callable[[], None] | None] = _queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def call(self, fn: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        """Run ``fn(*args)`` in the thread; what it returns or raises resolves the future."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_T] = loop.create_future()

        def job() -> None:
            # RuntimeError from call_soon_threadsafe: the loop is closed, nobody waits.
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the loop, never swallowed here
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_fail, fut, exc)
            else:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_succeed, fut, result)

        self._jobs.put(job)
        return fut

    def stop(self) -> None:
        """End the thread once its current call returns; nothing queued after runs."""
        self._jobs.put(None)


def _succeed(fut: asyncio.Future[_T], result: _T) -> None:
    if not fut.done():
        fut.set_result(result)


def _fail(fut: asyncio.Future[_T], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class _Channel:
    """One subscriber's queue and the state of whoever consumes it."""

    __slots__ = (
        "backlog",
        "capacity",
        "closed",
        "closing",
        "kinds",
        "limit",
        "name",
        "queue",
        "skipped",
        "waiter",
    )

    def __init__(self, name: str, capacity: int, kinds: frozenset[EventKind] | None = None) -> None:
        self.name = name
        self.capacity = capacity
        self.kinds = kinds  # the kinds it gets; None: every kind
        # What ``publish`` checks: the capacity while open, 0 once closed (one test per event).
        self.limit = capacity
        self.queue: deque[Event] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closing = False  # no more waiting: drain what is queued, then stop
        self.closed = False  # the consumer has stopped: every publish overflows "closed"
        self.skipped = 0  # sync subscribers: events of the shared log dropped for this one
        # Sync subscribers with ``kinds``: events of the shared log meant for this one (exact
        # only while ``Bus._backlogs_valid``; see ``Bus._backlog``).
        self.backlog = 0

    def wants(self, kind: EventKind) -> bool:
        """Whether this subscriber gets events of ``kind``."""
        return self.kinds is None or kind in self.kinds

    def close(self) -> None:
        """The consumer has stopped: drop what is queued; later events overflow "closed"."""
        self.closed = True
        self.limit = 0
        self.queue.clear()

    def wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)


class Bus:
    """Fans each published event out to every subscriber's queue (internal)."""

    def __init__(self, subscribers: list[SubscriberRef]) -> None:
        self._refs = subscribers
        # The subscribers' own channels; ``_channels`` (what ``publish`` offers to) also holds
        # the ``EventStream`` channels, which may be added before ``start``.
        self._sub_channels = tuple(
            _Channel(ref.name, ref.capacity, ref.kinds) for ref in subscribers
        )
        self._channels: tuple[_Channel, ...] = self._sub_channels
        self.listening = bool(self._channels)
        """Whether any queue would receive an event: publishers skip building events when not.
        A plain attribute (read several times per attempt), kept equal to ``bool(_channels)``."""
        self._workers: list[asyncio.Task[None]] = []
        self._executors: list[_SubscriberThread] = []
        # Sync, non-blocking subscribers have no worker and no queue of their own: they share
        # one log, which one callback per loop iteration (``_dispatch``) hands to each of them
        # in order. Their backlogs are equal but for the events dropped for one of them
        # (``_skips``: log index -> channels that must not get it; ``_Channel.skipped``).
        self._sync: list[tuple[SubscriberRef, _Channel]] = []
        self._log: list[Any] = []  # packed events (``_events.RECORD`` values each)
        self._skips: dict[int, list[_Channel]] | None = None
        self._sync_room = 0
        self._pack_room = 0
        self._backlogs_valid = False  # see ``_backlog``
        self._filtering = False  # some sync subscriber has ``kinds``
        self._members: list[tuple[EventCallback, SubscriberRef, _Channel]] = []
        self._calls: list[EventCallback] = []
        self._calls_by_kind: dict[EventKind, list[EventCallback]] | None = None
        self._unbuilt = False
        self._wanted: frozenset[EventKind] = frozenset()  # kinds someone gets
        self._counts = dict.fromkeys(EventKind, 0)
        self._counting = False  # see ``count_events``
        # ``emit`` checks kinds (to count them, or to skip those nobody gets) only when True:
        # with neither counts nor filters, a plain lifecycle event costs one append.
        self._careful = False
        self._dispatch_scheduled = False
        # The wall clock minus ``time.perf_counter()`` (see ``_wall_time``), and when it was read.
        self._epoch = 0.0
        self._epoch_taken = -math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed: asyncio.Future[None] | None = None
        self._update_rooms()

    def start(self) -> None:
        """Spawn one worker per subscriber on the running loop. Idempotent."""
        if self._started:
            return
        self._started = True
        loop = self._loop = asyncio.get_running_loop()
        for ref, ch in zip(self._refs, self._sub_channels, strict=True):
            if not ref.blocking and not ref.is_async and not ch.queue:
                self._sync.append((ref, ch))
                continue
            executor = None
            if ref.blocking:
                executor = _SubscriberThread(f"taskvisor-{ref.name}")
                self._executors.append(executor)
            self._workers.append(
                loop.create_task(self._work(ref, ch, executor), name=f"taskvisor-sub-{ref.name}")
            )
        sync_channels = {id(ch) for _, ch in self._sync}
        self._channels = tuple(ch for ch in self._channels if id(ch) not in sync_channels)
        self._update_rooms()

    def _update_rooms(self) -> None:
        """Recompute what ``publish`` and ``emit`` check, after any change of subscribers."""
        # Below this log length (in values, not events) every sync subscriber has room: a
        # filtered one gets at most every event of the log.
        self._sync_room = RECORD * min((ch.limit for _, ch in self._sync), default=0)
        # ``emit`` packs only when sync subscribers alone listen: a queue needs the Event.
        self._pack_room = 0 if self._channels else self._sync_room
        self._filtering = any(ch.kinds is not None for _, ch in self._sync)
        # What each round of ``_dispatch`` hands its events to.
        self._members = [(ref.call, ref, ch) for ref, ch in self._sync if not ch.closed]
        self._calls = [m[0] for m in self._members]
        self._calls_by_kind = _calls_by_kind(self._members) if self._filtering else None
        # Every sync subscriber takes whole rounds unbuilt (``_on_packed``): see ``_dispatch``.
        self._unbuilt = all(ref.packed is not None for ref, _ in self._sync)
        everyone = {id(ch): ch for ch in (*self._sub_channels, *self._channels)}
        wanted: set[EventKind] = set()
        for ch in everyone.values():
            wanted.update(EventKind if ch.kinds is None else ch.kinds)
        self._wanted = frozenset(wanted)
        self._careful = self._counting or len(self._wanted) < len(EventKind)

    def count_events(self) -> Mapping[EventKind, int]:
        """Count every event published from now on, by kind; a live read-only view.

        Counting is off until first asked for (it costs a dictionary update per event).
        """
        if not self._counting:
            self._counting = True
            self._update_rooms()
        return MappingProxyType(self._counts)

    def _backlog(self, ch: _Channel, n: int) -> int:
        """How many of the ``n`` events of the shared log are meant for sync subscriber ``ch``.

        Only the slow path of ``publish`` (some sync subscriber may be full) asks, and from
        its first question in a round on, it keeps the filtered ones' counts up to date.
        """
        if ch.kinds is None:
            return n - ch.skipped
        if not self._backlogs_valid:
            self._backlogs_valid = True
            log = self._log  # no skips yet: they begin on this slow path
            kinds = [
                kind if kind is not None else log[RECORD * i + 1].kind
                for i, kind in enumerate(log[::RECORD])
            ]
            for _, member in self._sync:
                if member.kinds is not None:
                    member.backlog = sum(kind in member.kinds for kind in kinds)
        return ch.backlog

    def _schedule_dispatch(self) -> None:
        if self._sync and not self._dispatch_scheduled and self._loop is not None:
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _wall_time(self, now: float) -> float:
        """The wall-clock time of ``now``, a ``time.perf_counter()`` reading the caller took.

        Through the offset between the two clocks, re-read at most every ``_EPOCH_TTL``
        seconds: a wall-clock step shows within that, and a burst of events costs a few clock
        readings per millisecond instead of one per event.
        """
        if now - self._epoch_taken > _EPOCH_TTL:
            self._epoch, self._epoch_taken = _clock_offset()
        return now + self._epoch

    def _dispatch(self, deadline: float | None = None) -> None:
        """Hand the shared log to the sync subscribers, event by event; then start a new log.

        Cheaper than a queue and a worker task per subscriber (no future, no task switch, one
        append per event for all of them): a sync ``on_event`` runs on the loop either way.
        Each packed event is built once, handed to every sync subscriber in turn, and freed.
        A raising subscriber is reported and the others go on; one whose ``on_event`` turns
        out to return an awaitable is handed to a worker of its own from that event on. With
        a ``deadline`` (the drain at close), what is not delivered by then is dropped.
        """
        self._dispatch_scheduled = False
        log = self._log
        if not log:
            return
        skips = self._skips
        if skips is not None or self._backlogs_valid:
            for _, ch in self._sync:
                ch.skipped = 0
                ch.backlog = 0
        self._log = []  # what is published meanwhile (diagnostics) goes to the next round
        self._skips = None
        self._backlogs_valid = False
        # The round's recipients, kept from ``_update_rooms`` (rebound, never changed, below)
        members, calls, by_kind = self._members, self._calls, self._calls_by_kind
        # Only the drain at close has a deadline; the clock is read only then.
        clock = self._loop.time if deadline is not None and self._loop is not None else None
        until = math.inf if deadline is None else deadline
        promoted: list[_Channel] = []
        rare = clock is not None or skips is not None  # else the per-event checks are skipped
        if self._unbuilt and not rare and members:
            self._dispatch_packed(log, members)
            return
        index = -1  # of the event at hand; counted only while ``rare``
        event: Any
        kind: EventKind
        # ``unpack`` builds each packed event as it is reached (in C where the extension is
        # built): this loop is the hot path of every event bound for sync subscribers.
        for event in unpack(log):
            if not rare:  # the common case, kept lean: no skips, no deadline, no promotion
                for call in calls if by_kind is None else by_kind[event.kind]:
                    try:
                        result = call(event)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except BaseException as exc:  # a subscriber's bug, CancelledError included
                        self._panicked(_member(members, call)[1], event, exc)
                        continue
                    if result is not None and inspect.isawaitable(result):
                        # the loop goes on over the old list: the others still get this event
                        _, ref, ch = _member(members, call)
                        members = [m for m in members if m[2] is not ch]
                        calls = [m[0] for m in members]
                        by_kind = _calls_by_kind(members) if by_kind is not None else None
                        promoted.append(ch)
                        # No skips in a lean round: the index is not needed from here on.
                        rare = True
                        self._promote(ref, ch, result)
                continue
            index += 1
            kind = event.kind
            if clock is not None and clock() >= until:
                return
            for ch in promoted:  # moved to a worker of its own during this round
                if ch.wants(kind) and (skips is None or not _dropped(skips, index, ch)):
                    ch.queue.append(event)
            for call, ref, ch in members:
                if not ch.wants(kind) or (skips is not None and _dropped(skips, index, ch)):
                    continue
                try:
                    result = call(event)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # a subscriber's bug, CancelledError included
                    self._panicked(ref, event, exc)
                    continue
                if result is not None and inspect.isawaitable(result):
                    members = [m for m in members if m[2] is not ch]
                    calls = [m[0] for m in members]
                    by_kind = _calls_by_kind(members) if by_kind is not None else None
                    promoted.append(ch)
                    self._promote(ref, ch, result)
        if promoted:
            # What was published during this round: built now, so that the promoted ones'
            # queues and the next round share the same objects.
            events = list(unpack(self._log))
            self._log = [value for event in events for value in packed(event)]
            for ch in promoted:
                ch.queue.extend(_unseen(events, self._skips, ch))

    def _dispatch_packed(
        self, log: list[Any], members: list[tuple[EventCallback, SubscriberRef, _Channel]]
    ) -> None:
        """``_dispatch`` when every sync subscriber takes whole rounds (``_on_packed``).

        Each gets the round's log itself, in one call: nothing is built, and nothing is
        called per event. No skips and no deadline here (``_dispatch`` checked first).
        """
        for _, ref, _ in members:
            take = ref.packed
            assert take is not None
            try:
                take(log)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # a bug of ours: reported, the others go on
                self._panicked(ref, None, exc)

    def _promote(self, ref: SubscriberRef, ch: _Channel, pending: Awaitable[Any]) -> None:
        """Move a "sync" subscriber that returned an awaitable onto a worker of its own.

        The worker awaits that awaitable first, then the subscriber's own queue, which
        ``_dispatch`` fills with the events it has not seen yet, in order.
        """
        self._sync = [(r, c) for r, c in self._sync if c is not ch]
        ch.closing = self._closed is not None  # promoted while closing: drain, then stop
        self._channels = (*self._channels, ch)
        self._update_rooms()
        assert self._loop is not None
        self._workers.append(
            self._loop.create_task(
                self._work(ref, ch, None, pending), name=f"taskvisor-sub-{ref.name}"
            )
        )

    def emit(
        self,
        kind: EventKind,
        task: str,
        task_id: TaskId | None = None,
        attempt: int | None = None,
        duration: float | None = None,
        outcome: OutcomeKind | None = None,
        now: float | None = None,
    ) -> None:
        """Publish a plain lifecycle event (the fields named here only), as ``publish`` does.

        When only sync subscribers listen, the event is packed into the shared log and built
        at delivery (see ``_events.unpack``); a queue needs the ``Event`` itself, built now.
        ``now``: a ``time.perf_counter()`` reading the caller took for this event; a packed
        event's ``at`` is derived from it (see ``_epoch``), else the wall clock is read.
        """
        if self._careful:
            if self._counting:
                self._counts[kind] += 1
            if kind not in self._wanted:  # nobody gets it: never built
                return
        log = self._log
        if len(log) < self._pack_room:
            if now is None:
                at = wall_clock()
            elif now - self._epoch_taken < _EPOCH_TTL:  # ``_wall_time``, inline: the hot path
                at = now + self._epoch
            else:
                at = self._wall_time(now)
            log += (kind, next_seq(), at, task, task_id, attempt, duration, outcome)
            if not self._dispatch_scheduled:
                self._schedule_dispatch()
        else:
            self._offer(
                new_event(kind, task, task_id, attempt=attempt, duration=duration, outcome=outcome)
            )

    def emit_slotted(
        self,
        kind: EventKind,
        task: str | None,
        task_id: TaskId | None,
        slot: str,
        reason: str | None = None,
    ) -> None:
        """Publish a controller event of a kind in ``SLOTTED``, packed as ``emit`` packs others.

        Its fields: ``task``, ``task_id``, ``slot`` and ``reason`` only.
        """
        if self._careful:
            if self._counting:
                self._counts[kind] += 1
            if kind not in self._wanted:
                return
        log = self._log
        if len(log) < self._pack_room:
            log += (kind, next_seq(), wall_clock(), task, task_id, None, slot, reason)
            if not self._dispatch_scheduled:
                self._schedule_dispatch()
        else:
            self._offer(new_event(kind, task, task_id, slot=slot, reason=reason))

    def emit_each(
        self, kind: EventKind, tasks: list[str], task_ids: list[TaskId] | None = None
    ) -> None:
        """``emit(kind, task[, task_id])`` for each of ``tasks`` in order, one clock reading.

        A batch's admission requests are one act, so are its registrations: they share their
        ``at``, and cost one call for the whole batch.
        """
        if self._careful:
            if self._counting:
                self._counts[kind] += len(tasks)
            if kind not in self._wanted:
                return
        if RECORD * len(tasks) > self._pack_room - len(self._log):
            ids: Iterable[TaskId | None] = task_ids or itertools.repeat(None, len(tasks))
            for task, task_id in zip(tasks, ids, strict=True):  # counted above: the slow way
                self._offer(new_event(kind, task, task_id))
            return
        # The runs (kind, seq, at, task, task_id, None, None, None), written column by column
        # into a block of None: a few C-level slice assignments instead of a loop in Python.
        n = len(tasks)
        block: list[Any] = [None] * (RECORD * n)
        block[0::RECORD] = [kind] * n
        block[1::RECORD] = next_seqs(n)
        block[2::RECORD] = [wall_clock()] * n
        block[3::RECORD] = tasks
        if task_ids is not None:
            block[4::RECORD] = task_ids
        self._log += block
        if not self._dispatch_scheduled:
            self._schedule_dispatch()

    def emit_closing(
        self,
        task: str,
        task_id: TaskId,
        outcome: OutcomeKind,
        attempt: int | None = None,
        duration: float | None = None,
        now: float | None = None,
    ) -> None:
        """``TASK_FINISHED`` (with ``outcome`` only) then ``TASK_REMOVED``, at one time.

        The time is derived from ``now`` as in ``emit``, else read. With ``attempt``, the task's
        last attempt has just succeeded: its ``ATTEMPT_SUCCEEDED`` (``attempt``, ``duration``)
        goes out first, in the same call. A one-shot task's end is then one call for three
        events.
        """
        log = self._log
        if self._careful or len(log) + 3 * RECORD > self._pack_room:
            self._emit_closing_carefully(task, task_id, outcome, attempt, duration)
            return
        if now is None:
            at = wall_clock()
        elif now - self._epoch_taken < _EPOCH_TTL:  # ``_wall_time``, inline: the hot path
            at = now + self._epoch
        else:
            at = self._wall_time(now)
        # One extend for all the runs: appending to the log is a good part of the cost.
        # fmt: off
        if attempt is not None:
            log += (
                _SUCCEEDED, next_seq(), at, task, task_id, attempt, duration, None,
                _FINISHED, next_seq(), at, task, task_id, None, None, outcome,
                _REMOVED, next_seq(), at, task, task_id, None, None, None,
            )
        else:
            log += (
                _FINISHED, next_seq(), at, task, task_id, None, None, outcome,
                _REMOVED, next_seq(), at, task, task_id, None, None, None,
            )
        # fmt: on
        if not self._dispatch_scheduled:
            self._schedule_dispatch()

    def _emit_closing_carefully(
        self,
        task: str,
        task_id: TaskId,
        outcome: OutcomeKind,
        attempt: int | None,
        duration: float | None,
    ) -> None:
        """``emit_closing`` with counts or kind filters, or maybe too little room to pack.

        Each event on its own terms, as ``emit`` would take it; one clock reading.
        """
        at = wall_clock()
        if self._counting:
            counts = self._counts
            if attempt is not None:
                counts[_SUCCEEDED] += 1
            counts[_FINISHED] += 1
            counts[_REMOVED] += 1
        wanted = self._wanted
        log = self._log
        if len(log) + 3 * RECORD <= self._pack_room:  # room for all three: pack the wanted
            if attempt is not None and _SUCCEEDED in wanted:
                log += (_SUCCEEDED, next_seq(), at, task, task_id, attempt, duration, None)
            if _FINISHED in wanted:
                log += (_FINISHED, next_seq(), at, task, task_id, None, None, outcome)
            if _REMOVED in wanted:
                log += (_REMOVED, next_seq(), at, task, task_id, None, None, None)
            if log and not self._dispatch_scheduled:
                self._schedule_dispatch()
            return
        runs: list[tuple[EventKind, int | None, float | None, OutcomeKind | None]] = [
            (_FINISHED, None, None, outcome),
            (_REMOVED, None, None, None),
        ]
        if attempt is not None:
            runs.insert(0, (_SUCCEEDED, attempt, duration, None))
        for kind, attempt_, duration_, outcome_ in runs:
            if kind not in wanted:
                continue
            if len(self._log) < self._pack_room:
                self._log += (kind, next_seq(), at, task, task_id, attempt_, duration_, outcome_)
                if not self._dispatch_scheduled:
                    self._schedule_dispatch()
            else:  # counted above
                self._offer(
                    new_event(
                        kind,
                        task,
                        task_id,
                        attempt=attempt_,
                        duration=duration_,
                        outcome=outcome_,
                        at=at,
                    )
                )

    def publish(self, event: Event) -> None:
        """Offer ``event`` to every subscriber without blocking; report those that refuse it."""
        if not self.listening:
            return
        if self._counting:
            self._counts[event.kind] += 1
        self._offer(event)

    def _offer(self, event: Event) -> None:
        """``publish`` without the counting (``emit`` has counted the event already)."""
        kind = event.kind
        if kind not in self._wanted:
            return
        overflowed: list[tuple[str, str]] | None = None
        if self._sync:
            log = self._log
            if len(log) < self._sync_room:
                log += packed(event)
                if not self._dispatch_scheduled:
                    self._schedule_dispatch()
            else:
                overflowed = self._offer_slowly(event)
        for ch in self._channels:
            if ch.kinds is not None and kind not in ch.kinds:
                continue
            queue = ch.queue
            if len(queue) < ch.limit:
                queue.append(event)
                if ch.waiter is not None:
                    ch.wake()
            elif event.kind not in DIAGNOSTIC_KINDS:
                if overflowed is None:
                    overflowed = []
                overflowed.append((ch.name, "closed" if ch.closed else "full"))
        if overflowed:
            for name, reason in overflowed:
                self.publish(new_event(EventKind.SUBSCRIBER_OVERFLOW, name, reason=reason))

    def _offer_slowly(self, event: Event) -> list[tuple[str, str]] | None:
        """Append ``event`` to the shared log, some sync subscriber being maybe full or closed.

        Finds which, exactly: the event is skipped for those, and reported (returned).
        """
        log = self._log
        n = len(log) // RECORD
        kind = event.kind
        takers = [ch for _, ch in self._sync if ch.wants(kind)]
        full = [ch for ch in takers if self._backlog(ch, n) >= ch.limit]
        if len(full) < len(takers):
            if full:
                if self._skips is None:
                    self._skips = {}
                self._skips[n] = full
                for ch in full:
                    ch.skipped += 1
            for ch in takers:
                if ch.kinds is not None and ch not in full:
                    ch.backlog += 1
            log += packed(event)
            if not self._dispatch_scheduled:
                self._schedule_dispatch()
        if full and kind not in DIAGNOSTIC_KINDS:
            return [(ch.name, "closed" if ch.closed else "full") for ch in full]
        return None

    async def _work(
        self,
        ref: SubscriberRef,
        ch: _Channel,
        executor: _SubscriberThread | None,
        pending: Awaitable[Any] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        queue = ch.queue
        call = ref.call
        is_async = ref.is_async
        try:
            if pending is not None:  # the unfinished delivery ``_dispatch`` handed over
                try:
                    await pending
                except (KeyboardInterrupt, SystemExit, GeneratorExit):
                    raise
                except BaseException as error:
                    if isinstance(error, asyncio.CancelledError):
                        task = asyncio.current_task()
                        if task is None or task.cancelling():
                            raise
                    self._panicked(ref, None, error)
            while True:
                if executor is not None and queue:
                    # One thread hop per batch, not per event (a hop costs ~40 µs). The batch
                    # stays in the queue until handled, so the capacity bound stays exact.
                    batch = list(queue)
                    failures = await executor.call(_deliver, call, batch, ch)
                    for _ in batch:
                        queue.popleft()
                    for event, exc in failures:
                        self._panicked(ref, event, exc)
                    continue
                while queue:
                    event = queue.popleft()
                    try:
                        if is_async:
                            await call(event)
                        else:
                            result = call(event)
                            if result is not None and inspect.isawaitable(result):
                                await result
                    except Exception as exc:  # a subscriber's bug must not stop its worker
                        self._panicked(ref, event, exc)
                    except asyncio.CancelledError as exc:
                        task = asyncio.current_task()
                        if task is None or task.cancelling():
                            raise  # the worker itself is being cancelled (close timed out)
                        # on_event let a CancelledError of its own escape: a bug like any other
                        self._panicked(ref, event, exc)
                    except (KeyboardInterrupt, SystemExit, GeneratorExit):
                        raise
                    except BaseException as exc:  # any other BaseException: still its bug
                        self._panicked(ref, event, exc)
                if ch.closing:
                    return
                ch.waiter = loop.create_future()
                await ch.waiter
        finally:
            ch.close()

    def _panicked(self, ref: SubscriberRef, event: Event | None, exc: BaseException) -> None:
        if event is None or event.kind not in DIAGNOSTIC_KINDS:
            self.publish(
                new_event(
                    EventKind.SUBSCRIBER_PANICKED, ref.name, reason=f"{type(exc).__name__}: {exc}"
                )
            )

    def stream(self, capacity: int = DEFAULT_QUEUE_CAPACITY) -> EventStream:
        """Subscribe an async iterator now; it ends once the bus is closed and drained."""
        ch = _Channel("events", max(1, capacity))
        if self._closed is not None:
            ch.closing = True
        else:
            self._channels = (*self._channels, ch)
            self.listening = True
            self._update_rooms()
        return EventStream(self, ch)

    def _unsubscribe(self, ch: _Channel) -> None:
        ch.close()
        self._channels = tuple(c for c in self._channels if c is not ch)
        self.listening = bool(self._channels) or bool(self._sync)
        self._update_rooms()
        ch.wake()

    async def close(self, timeout: float) -> None:
        """Drain every queue, all under one ``timeout`` deadline; drop what is left. Idempotent."""
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        self._closed = asyncio.get_running_loop().create_future()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            for ch in self._channels:
                ch.closing = True
                ch.wake()
            self._dispatch(deadline)  # sync subscribers: drained here, up to the deadline
            pending = [w for w in self._workers if not w.done()]
            if pending:
                remaining = max(0.0, deadline - loop.time())
                _, still = await asyncio.wait(pending, timeout=remaining)
                for w in still:
                    w.cancel()
                if still:
                    await asyncio.wait(still, timeout=0.1)
            self._dispatch(deadline)  # what the workers' diagnostics added meanwhile
            for executor in self._executors:
                executor.stop()
            # A worker whose on_event swallows the cancellation may still be running: its
            # subscriber gets nothing more all the same (later publishes report "closed").
            for ch in self._sub_channels:
                ch.close()
            self._update_rooms()
        finally:
            self._closed.set_result(None)


def _clock_offset() -> tuple[float, float]:
    """The wall clock minus ``time.perf_counter()``, and the perf_counter reading it holds at.

    The wall clock is read between two perf_counter readings and set against their middle;
    a pair more than a microsecond apart (the thread was interrupted) is read again.
    """
    for _ in range(3):
        before = perf_counter()
        wall = wall_clock()
        after = perf_counter()
        if after - before < 1e-6:
            break
    middle = (before + after) / 2
    return wall - middle, middle


def _calls_by_kind(
    members: list[tuple[EventCallback, SubscriberRef, _Channel]],
) -> dict[EventKind, list[EventCallback]]:
    """For each kind, the sync subscribers' ``on_event`` that get it, in order."""
    return {kind: [m[0] for m in members if m[2].wants(kind)] for kind in EventKind}


def _member(
    members: list[tuple[EventCallback, SubscriberRef, _Channel]], call: EventCallback
) -> tuple[EventCallback, SubscriberRef, _Channel]:
    """The sync subscriber whose ``on_event`` is ``call`` (the rare paths of ``_dispatch``)."""
    return next(m for m in members if m[0] is call)


def _dropped(skips: dict[int, list[_Channel]], index: int, ch: _Channel) -> bool:
    """Whether log entry ``index`` was dropped for ``ch`` (it was full when published)."""
    dropped = skips.get(index)
    return dropped is not None and ch in dropped


def _unseen(
    events: list[Event], skips: dict[int, list[_Channel]] | None, ch: _Channel
) -> list[Event]:
    """The events of a shared log that are meant for ``ch``, in order."""
    return [
        event
        for index, event in enumerate(events)
        if ch.wants(event.kind) and (skips is None or not _dropped(skips, index, ch))
    ]


def _deliver(
    call: EventCallback, batch: list[Event], ch: _Channel
) -> list[tuple[Event, BaseException]]:
    """Run in a blocking subscriber's thread: hand it a batch, collect what it raised.

    Stops early once the channel is closed (the drain deadline passed while this thread was
    stuck): what is left then is dropped, as for any subscriber.
    """
    failures: list[tuple[Event, BaseException]] = []
    for event in batch:
        if ch.closed:
            break
        try:
            call(event)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # reported as SUBSCRIBER_PANICKED back on the loop
            failures.append((event, exc))
    return failures


class EventStream:
    """``async for event in sup.events()``: a subscriber of its own, consumed by iteration.

    Subscribed when created, so no event published afterwards is missed for lack of
    iteration. Ends after the supervisor's shutdown once the queue is drained. Use
    ``await stream.aclose()`` (or ``async with``) to stop receiving early.
    """

    __slots__ = ("__weakref__", "_bus", "_ch", "_finalizer")

    def __init__(self, bus: Bus, ch: _Channel) -> None:
        self._bus = bus
        self._ch = ch
        # An abandoned stream must not keep overflowing forever: unsubscribe when collected.
        self._finalizer = weakref.finalize(self, bus._unsubscribe, ch)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        ch = self._ch
        while True:
            if ch.queue:
                return ch.queue.popleft()
            if ch.closing or ch.closed:
                self._finalizer()  # ended: stop receiving what is published after the close
                raise StopAsyncIteration
            ch.waiter = asyncio.get_running_loop().create_future()
            try:
                await ch.waiter
            finally:
                ch.waiter = None

    async def aclose(self) -> None:
        """Stop receiving events; the iteration ends."""
        self._finalizer()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            await self.aclose()
