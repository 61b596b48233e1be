"""The bus: one ``publish`` for every event, fanned out to every subscriber without blocking."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypedDict, TypeVar, Unpack

from .._context import TaskId
from .._events import DIAGNOSTIC_KINDS, BackoffSource, EventKind, build, next_seq, sequence
from .._outcome import OutcomeKind, RejectionKind
from .._subscriber import DEFAULT_QUEUE_CAPACITY, SubscriberRef
from .._voice import Voice
from ._channel import Channel
from ._stream import EventStream
from ._sync import Member, SyncFanout
from ._workers import SubscriberThread, work

_T = TypeVar("_T")

_OVERFLOW = EventKind.SUBSCRIBER_OVERFLOW
_NO_REST = (None,) * 10

_SYNC = 1  # a route bit: some sync subscriber wants the kind
_QUEUES = 2  # a route bit: some queue (async, blocking, stream) wants it
_wall_clock = time.time

PACING_PATIENCE = 1.0
"""Seconds a paced batch admission waits, in all, for one subscriber to make room before it
treats that subscriber as falling behind (its drops are then reported, as for any burst)."""

_PACING_STEP = 0.05
"""Longest wait for any sign of progress while pacing a batch (see ``Bus.paced``)."""


class RareFields(TypedDict, total=False):
    """The ``Event`` fields few kinds carry: ``Bus.publish``'s keywords."""

    reason: str | None
    exit_code: int | None
    delay: float | None
    timeout: float | None
    backoff_source: BackoffSource | None
    rejection: RejectionKind | None
    slot: str | None
    error: BaseException | None
    fence: int | None
    dropped: int | None


class Bus:
    """Fans each published event out to every subscriber's queue (internal).

    Sync subscribers share one late-built log (``_sync.SyncFanout``); async and blocking
    subscribers and ``events()`` streams each have a queue of built events and a consumer
    (``_workers.work``, ``EventStream``).
    """

    def __init__(self, subscribers: Sequence[SubscriberRef]) -> None:
        self._refs = tuple(subscribers)
        self._channels = tuple(Channel(r.name, r.capacity, r.kinds) for r in self._refs)
        self._queues: tuple[Channel, ...] = ()  # consumed apart from the publisher
        self._sync = SyncFanout(
            self._node, self._drop, self._report, self.panicked, self._promote, self.drained
        )
        self._workers: list[asyncio.Task[None]] = []
        self._threads: list[SubscriberThread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: asyncio.Future[None] | None = None
        self._progress: asyncio.Future[None] | None = None
        self._counts = dict.fromkeys(EventKind, 0)
        self._counting = False
        self.node: str | None = None
        """Stamped on every event (a cluster coordinator's node name)."""
        self.voice: Voice | None = None
        """The supervisor's default log (``_voice.py``), told of subscriber panics here and
        of failures by whoever publishes them."""
        # Until ``start`` every subscriber is listed as a queue: what is published before
        # (nothing, in practice) waits for its consumer.
        self._queues = self._channels
        self._recompute()

    def _node(self) -> str | None:
        return self.node

    def _recompute(self) -> None:
        """What ``publish`` checks, after any change of subscribers."""
        self._queue_kinds = frozenset(
            k for k in EventKind if any(ch.wants(k) for ch in self._queues)
        )
        sync = self._sync.wanted
        self._routes = {
            k: (_SYNC if k in sync else 0) | (_QUEUES if k in self._queue_kinds else 0)
            for k in EventKind
        }
        self.listening = bool(self._queues) or bool(self._sync.members)
        """Whether any subscriber would receive an event: callers may skip publishing."""

    def start(self) -> None:
        """Start the consumers on the running loop. Idempotent."""
        if self._loop is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        members: list[Member] = []
        queues = [ch for ch in self._queues if ch not in self._channels]  # streams
        for ref, ch in zip(self._refs, self._channels, strict=True):
            if not ref.blocking and not ref.is_async:
                members.append(Member(ref, ch))
                continue
            thread = None
            if ref.blocking:
                thread = SubscriberThread(f"taskvisor-{ref.name}")
                self._threads.append(thread)
            queues.append(ch)
            self._spawn(ref, ch, thread, None)
        self._queues = tuple(queues)
        self._sync.set_members(members)
        self._sync.start(loop)
        self._recompute()

    def _spawn(
        self,
        ref: SubscriberRef,
        ch: Channel,
        thread: SubscriberThread | None,
        pending: Awaitable[Any] | None,
    ) -> None:
        assert self._loop is not None
        self._workers.append(
            self._loop.create_task(
                work(self, ref, ch, thread, pending), name=f"taskvisor-sub-{ref.name}"
            )
        )

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        kind: EventKind,
        task: str | None = None,
        task_id: TaskId | None = None,
        attempt: int | None = None,
        duration: float | None = None,
        outcome: OutcomeKind | None = None,
        **rare: Unpack[RareFields],
    ) -> None:
        """Publish one event: stamped with the next ``seq`` and the wall clock, never blocking.

        The fields most events carry are positional; the others (``RareFields``) keywords.
        Built only for the subscribers that want ``kind``: late (at delivery) for sync ones,
        now for the others.
        """
        if self._counting:
            self._counts[kind] += 1
        route = self._routes[kind]
        if not route:
            return
        seq = next_seq()
        at = _wall_clock()
        if route & _SYNC:
            rest = None
            if rare:
                get = rare.get
                rest = (
                    get("reason"), get("exit_code"), get("delay"), get("timeout"),
                    get("backoff_source"), get("rejection"), get("slot"), get("error"),
                    get("fence"), get("dropped"),
                )  # fmt: skip
                if rest == _NO_REST:
                    rest = None
            self._sync.add(kind, seq, at, task, task_id, attempt, duration, outcome, rest)
        if route & _QUEUES:
            event = build(
                seq, at, kind, task, task_id, attempt, duration=duration, outcome=outcome,
                node=self.node, **rare,
            )  # fmt: skip
            self._offer(kind, event)

    def publish_batch(
        self, kind: EventKind, tasks: Sequence[str], task_ids: Sequence[TaskId] | None = None
    ) -> None:
        """``publish(kind, task[, task_id])`` for each of ``tasks``, in order, at one time.

        A batch's admission requests are one act, so are its registrations: they share their
        ``at``, and reach the sync subscribers' log in one step.
        """
        n = len(tasks)
        if self._counting:
            self._counts[kind] += n
        route = self._routes[kind]
        if not route or not n:
            return
        ids: Sequence[TaskId | None] = [None] * n if task_ids is None else task_ids
        seqs = list(itertools.islice(sequence(), n))
        at = _wall_clock()
        if route & _SYNC:
            self._sync.add_batch(kind, seqs, at, tasks, ids)
        if route & _QUEUES:
            node = self.node
            for seq, task, task_id in zip(seqs, tasks, ids, strict=True):
                self._offer(kind, build(seq, at, kind, task, task_id, node=node))

    def _offer(self, kind: EventKind, event: Any) -> None:
        due: list[tuple[Channel, str]] | None = None
        for ch in self._queues:
            if ch.kinds is not None and kind not in ch.kinds:
                continue
            if len(ch.queue) < ch.capacity and not ch.closed:
                ch.queue.append(event)
                if ch.waiter is not None:
                    ch.wake()
                continue
            reason = self._drop(ch, kind)
            if reason is not None:
                if due is None:
                    due = []
                due.append((ch, reason))
        if due is not None:  # after every queue got the event: each sees publish order
            for ch, reason in due:
                self._report(ch, reason)

    # ------------------------------------------------------------------ diagnostics

    @staticmethod
    def _drop(ch: Channel, kind: EventKind) -> str | None:
        """Count one event dropped for ``ch``; the reason of the report now due, if any.

        O(1), nothing allocated. An episode is reported when it starts (``full``) and when
        it ends (``recovered``); a closed channel once (``closed``). A dropped diagnostic
        event is counted but starts no report (no storm of reports about reports).
        """
        if ch.closed:
            if ch.reported_closed or kind in DIAGNOSTIC_KINDS:
                return None
            ch.reported_closed = True
            return "closed"
        ch.dropped += 1
        if ch.reported or kind in DIAGNOSTIC_KINDS:
            return None
        ch.reported = True
        return "full"

    def _report(self, ch: Channel, reason: str) -> None:
        self.publish(_OVERFLOW, ch.name, reason=reason)

    def drained(self, ch: Channel) -> None:
        """``ch``'s queue has been drained empty: end its overflow episode, if any.

        Also what a paced batch admission waits for (``paced``).
        """
        n = ch.dropped
        ch.dropped = 0
        ch.reported = False
        if n and not ch.closed:
            self.publish(_OVERFLOW, ch.name, reason="recovered", dropped=n)
        progress = self._progress
        if progress is not None and not progress.done():
            progress.set_result(None)

    def panicked(self, ref: SubscriberRef, kind: EventKind | None, exc: BaseException) -> None:
        """``ref``'s ``on_event`` raised on an event of ``kind``: report it, unless diagnostic."""
        if kind is None or kind not in DIAGNOSTIC_KINDS:
            reason = f"{type(exc).__name__}: {exc}"
            if self.voice is not None:
                self.voice.subscriber_panicked(ref.name, reason)
            self.publish(EventKind.SUBSCRIBER_PANICKED, ref.name, reason=reason)

    def _promote(self, member: Member, pending: Awaitable[Any]) -> None:
        """A sync ``on_event`` returned an awaitable: give that subscriber a worker of its own."""
        self._sync.remove(member)
        ch = member.ch
        ch.closing = self._closed is not None  # promoted while closing: drain, then stop
        self._queues = (*self._queues, ch)
        self._recompute()
        self._spawn(member.ref, ch, None, pending)

    def count_events(self) -> Mapping[EventKind, int]:
        """Count every event published from now on, by kind; a live read-only view.

        Counting is off until first asked for (it costs a dictionary update per event).
        """
        self._counting = True
        return MappingProxyType(self._counts)

    # ------------------------------------------------------------------ streams

    def stream(self, capacity: int = DEFAULT_QUEUE_CAPACITY) -> EventStream:
        """Subscribe an async iterator now; it ends once the bus is closed and drained."""
        ch = Channel("events", max(1, capacity), None)
        if self._closed is not None:
            ch.closing = True
        else:
            self._queues = (*self._queues, ch)
            self._recompute()
        return EventStream(ch, self._unsubscribe, self.drained)

    def _unsubscribe(self, ch: Channel) -> None:
        ch.close()
        self._queues = tuple(c for c in self._queues if c is not ch)
        self._recompute()

    # ------------------------------------------------------------------ batches

    async def paced(
        self,
        items: Sequence[_T],
        admit: Callable[[Sequence[_T]], None],
        events_per_item: int,
        hurry: Callable[[], bool],
    ) -> None:
        """``admit`` every item, in order, in chunks the subscribers have room for.

        Between chunks, yields to the loop until every subscriber that keeps up has drained
        to half its capacity, so that a batch of any size reaches them all. A subscriber
        that makes no room within ``PACING_PATIENCE`` seconds in all is treated as falling
        behind (its drops are reported as usual). ``hurry()`` true (shutdown began), or an
        exception (the caller cancelled): the rest is admitted at once.
        """
        n = len(items)
        if not self.listening or self._loop is None:
            admit(items)
            return
        loop = self._loop
        waited: dict[Channel, float] = {}
        done = 0
        try:
            while done < n:
                chunk = max(1, self._room(waited) // (2 * events_per_item))
                admit(items[done : done + chunk])
                done += chunk
                if done >= n or hurry():
                    break
                # What the admitted tasks publish in their first steps lands in the next
                # iteration: let it, then wait for whoever is still more than half full.
                await asyncio.sleep(0)
                while not hurry():
                    busy = self._busy(waited)
                    if not busy:
                        break
                    if len(busy) == 1 and busy[0] is self._sync:
                        await asyncio.sleep(0)  # its round runs at the next iteration
                        continue
                    started = loop.time()
                    self._progress = loop.create_future()
                    try:
                        async with asyncio.timeout(_PACING_STEP):
                            await asyncio.shield(self._progress)
                    except TimeoutError:
                        pass
                    finally:
                        self._progress = None
                    spent = loop.time() - started
                    for ch in busy:
                        if isinstance(ch, Channel):
                            waited[ch] = waited.get(ch, 0.0) + spent
        finally:
            if done < n:
                admit(items[done:])

    def _room(self, waited: Mapping[Channel, float]) -> int:
        """Events that fit before a subscriber that keeps up is half full."""
        caps = [ch.capacity for ch in self._queues if self._keeps_up(ch, waited)]
        if self._sync.members:
            caps.append(self._sync.room)
        return min(caps, default=1 << 30)

    def _busy(self, waited: Mapping[Channel, float]) -> list[Channel | SyncFanout]:
        busy: list[Channel | SyncFanout] = [
            ch
            for ch in self._queues
            if self._keeps_up(ch, waited) and len(ch.queue) > ch.capacity // 2
        ]
        if self._sync.members and self._sync.pending > self._sync.room // 2:
            busy.append(self._sync)
        return busy

    @staticmethod
    def _keeps_up(ch: Channel, waited: Mapping[Channel, float]) -> bool:
        return not ch.closed and not ch.closing and waited.get(ch, 0.0) < PACING_PATIENCE

    # ------------------------------------------------------------------ closing

    async def close(self, timeout: float) -> None:
        """Drain every queue, all under one ``timeout`` deadline; drop what is left. Idempotent."""
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        try:
            deadline = loop.time() + timeout
            for ch in self._queues:
                ch.closing = True
                ch.wake()
            self._sync.dispatch(deadline)  # sync subscribers: drained here, up to the deadline
            pending = [w for w in self._workers if not w.done()]
            if pending:
                _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
                for w in still:
                    w.cancel()
                if still:
                    await asyncio.wait(still, timeout=0.1)
            self._sync.dispatch(deadline)  # what the workers' diagnostics added meanwhile
            for thread in self._threads:
                thread.stop()
            # From now on every subscriber refuses events (reported once, "closed"); a worker
            # whose on_event swallowed its cancellation gets nothing more either.
            for ch in self._channels:
                ch.close()
            self._queues = (*self._queues, *(m.ch for m in self._sync.members))
            self._sync.set_members([])
            self._recompute()
        finally:
            self._closed.set_result(None)
