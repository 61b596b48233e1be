"""The subscriber fan-out: one bounded FIFO queue and one worker per subscriber, overflow and
panic diagnostics without storms, drain at close, ``EventStream`` (SPEC §7).

Most tests drive ``Bus`` directly: publish, then ``await bus.close(...)``, which drains every
queue; that close is the synchronisation point, never a sleep.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import taskvisor as tv
from conftest import GUARD, Recorder
from taskvisor import Event, EventKind, Subscriber
from taskvisor._events import new_event, runs, unpack
from taskvisor._fanout import Bus, EventStream
from taskvisor._subscriber import as_subscriber

OVERFLOW = EventKind.SUBSCRIBER_OVERFLOW
PANICKED = EventKind.SUBSCRIBER_PANICKED


def ev(task: str = "t") -> Event:
    return new_event(EventKind.ATTEMPT_STARTING, task, attempt=1)


def make_bus(*subscribers: object) -> Bus:
    bus = Bus([as_subscriber(s) for s in subscribers])
    bus.start()
    return bus


async def collect(stream: EventStream) -> list[Event]:
    """Every event the stream still yields; it must end (the bus was closed)."""
    async with asyncio.timeout(GUARD):
        return [e async for e in stream]


def ordinary(events: list[Event]) -> list[Event]:
    return [e for e in events if not e.is_diagnostic]


class Counting(Subscriber):
    def __init__(self, capacity: int = 1024) -> None:
        self.queue_capacity = capacity
        self.seen: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.seen.append(event)


class Raising(Subscriber):
    """Raises on every event, diagnostics included."""

    queue_capacity = 16

    def __init__(self, name: str = "raising") -> None:
        self._name = name
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    def on_event(self, event: Event) -> None:
        self.calls += 1
        raise RuntimeError(f"boom {self.calls}")


class Gated(Subscriber):
    """An async subscriber that waits for ``gate`` before finishing each event."""

    def __init__(self, name: str = "gated", capacity: int = 1024) -> None:
        self._name = name
        self.queue_capacity = capacity
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.seen: list[Event] = []

    @property
    def name(self) -> str:
        return self._name

    async def on_event(self, event: Event) -> None:
        self.entered.set()
        await self.gate.wait()
        self.seen.append(event)


# ---------------------------------------------------------------- the seed's four tests


async def test_overflow_publishes_subscriber_overflow() -> None:
    counting = Counting(capacity=1)
    bus = make_bus(counting)
    stream = bus.stream(capacity=100)
    for _ in range(3):
        bus.publish(ev())
    await bus.close(GUARD)
    overflows = [e for e in await collect(stream) if e.kind is OVERFLOW]
    assert [(e.task, e.reason) for e in overflows] == [("Counting", "full")] * 2
    assert len(counting.seen) == 1


async def test_overflow_of_a_diagnostic_event_publishes_no_further_overflow() -> None:
    counting = Counting(capacity=1)
    bus = make_bus(counting)
    stream = bus.stream(capacity=100)
    diagnostic = new_event(OVERFLOW, "test", reason="full")
    for _ in range(5):
        bus.publish(diagnostic)
    await bus.close(GUARD)
    assert await collect(stream) == [diagnostic] * 5  # only what we published ourselves
    assert counting.seen == [diagnostic]


async def test_raising_subscriber_publishes_panicked_per_event_and_continues() -> None:
    raising = Raising()
    bus = make_bus(raising)
    stream = bus.stream(capacity=100)
    for _ in range(3):
        bus.publish(ev())
    await bus.close(GUARD)
    panics = [e for e in await collect(stream) if e.kind is PANICKED]
    assert [(e.task, e.reason) for e in panics] == [
        ("raising", "RuntimeError: boom 1"),
        ("raising", "RuntimeError: boom 2"),
        ("raising", "RuntimeError: boom 3"),
    ]
    # It went on after each failure, and also saw its own panic events (which raise again
    # but publish nothing more).
    assert raising.calls == 6


async def test_close_drains_queued_events() -> None:
    class Slow(Subscriber):
        queue_capacity = 128

        def __init__(self) -> None:
            self.count = 0

        async def on_event(self, event: Event) -> None:
            await asyncio.sleep(0)
            self.count += 1

    slow = Slow()
    bus = make_bus(slow)
    for _ in range(10):
        bus.publish(ev())
    await bus.close(GUARD)
    assert slow.count == 10


# ---------------------------------------------------------------- publishing never blocks


def test_publish_is_a_plain_method() -> None:
    assert not inspect.iscoroutinefunction(Bus.publish)
    bus = Bus([as_subscriber(Counting())])
    bus.publish(ev())  # works even before the workers exist (no loop needed)
    assert inspect.signature(Bus.publish).return_annotation in (None, "None")


async def test_a_subscriber_blocked_forever_does_not_delay_publish() -> None:
    stuck = Gated("stuck", capacity=10)  # its gate never opens
    fast = Recorder()
    bus = make_bus(stuck, fast)
    bus.publish(ev())
    async with asyncio.timeout(GUARD):
        await stuck.entered.wait()  # the stuck worker holds event 1 in on_event
    for _ in range(100):
        bus.publish(ev())  # synchronous: each call has returned when the loop goes on
    await fast.wait_for(EventKind.ATTEMPT_STARTING, count=101)
    await bus.close(0.05)
    # 10 fit in the stuck queue, 90 overflowed; the fast one saw every event and every
    # overflow report, the stuck one nothing at all.
    assert len(ordinary(fast.events)) == 101
    overflows = fast.of(OVERFLOW)
    assert len(overflows) == 90
    assert {(e.task, e.reason) for e in overflows} == {("stuck", "full")}
    assert stuck.seen == []


async def test_a_blocking_subscriber_stuck_in_its_thread_delays_neither_publish_nor_close() -> None:
    release = threading.Event()
    entered = threading.Event()

    class StuckThread(Subscriber):
        blocking = True
        queue_capacity = 5

        def on_event(self, event: Event) -> None:
            entered.set()
            release.wait(GUARD)

    fast = Recorder()
    bus = make_bus(StuckThread(), fast)
    try:
        bus.publish(ev())
        for _ in range(20):
            bus.publish(ev())
        await fast.wait_for(EventKind.ATTEMPT_STARTING, count=21)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bus.close(0.1)
        assert loop.time() - started < GUARD / 2  # a thread cannot be killed; close moves on
    finally:
        release.set()
    assert entered.is_set()
    assert len(fast.of(OVERFLOW, "StuckThread")) >= 15


# ---------------------------------------------------------------- order and isolation


async def test_each_subscriber_sees_events_in_publish_order() -> None:
    class Yielding(Subscriber):
        def __init__(self) -> None:
            self.seen: list[int] = []

        async def on_event(self, event: Event) -> None:
            if event.seq % 3 == 0:
                await asyncio.sleep(0)
            self.seen.append(event.seq)

    class Threaded(Subscriber):
        blocking = True

        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_event(self, event: Event) -> None:
            self.seen.append(event.seq)

    sync, yielding, threaded = Counting(), Yielding(), Threaded()
    bus = make_bus(sync, yielding, threaded)
    published: list[int] = []
    for burst in range(30):
        for _ in range(burst % 7 + 1):
            e = ev()
            published.append(e.seq)
            bus.publish(e)
        await asyncio.sleep(0)  # let workers interleave with publishing
    await bus.close(GUARD)
    assert [e.seq for e in sync.seen] == published
    assert yielding.seen == published
    assert threaded.seen == published


async def test_slow_and_raising_subscribers_do_not_affect_others() -> None:
    slow, raising, fast = Gated("slow"), Raising(), Recorder()
    raising.queue_capacity = 1024
    bus = make_bus(slow, raising, fast)
    published = [ev() for _ in range(50)]
    for e in published:
        bus.publish(e)
    await fast.wait_for(PANICKED, count=50)  # the raising one kept going after each failure
    assert ordinary(fast.events) == published  # while the slow one is still on its first
    assert slow.seen == []
    slow.gate.set()
    await bus.close(GUARD)
    assert ordinary(slow.seen) == published
    assert fast.of(OVERFLOW) == []


async def test_full_queue_drops_for_that_subscriber_only() -> None:
    small, big = Counting(capacity=3), Counting(capacity=100)
    bus = make_bus(small, big)
    stream = bus.stream()
    published = [ev() for _ in range(10)]
    for e in published:
        bus.publish(e)
    await bus.close(GUARD)
    assert small.seen == published[:3]
    assert ordinary(big.seen) == published
    events = await collect(stream)
    assert [(e.task, e.reason) for e in events if e.kind is OVERFLOW] == [("Counting", "full")] * 7


async def test_overflow_reason_closed_after_the_worker_stopped() -> None:
    counting = Counting()
    bus = make_bus(counting)
    stream = bus.stream()
    await bus.close(GUARD)
    late = ev()
    bus.publish(late)
    events = await collect(stream)
    assert events[0] is late
    assert [(e.kind, e.task, e.reason) for e in events[1:]] == [(OVERFLOW, "Counting", "closed")]
    assert counting.seen == []


async def test_close_with_zero_timeout_drops_what_is_queued() -> None:
    stuck = Gated("stuck")
    bus = make_bus(stuck)
    stream = bus.stream()
    for _ in range(3):
        bus.publish(ev())
    await bus.close(0)
    bus.publish(ev())
    events = await collect(stream)
    assert stuck.seen == []
    assert [(e.task, e.reason) for e in events if e.kind is OVERFLOW] == [("stuck", "closed")]


async def test_a_worker_that_swallows_cancellation_is_closed_all_the_same() -> None:
    release = asyncio.Event()

    class Stubborn(Subscriber):
        def __init__(self) -> None:
            self.seen: list[Event] = []

        async def on_event(self, event: Event) -> None:
            self.seen.append(event)
            if len(self.seen) > 1:
                return
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await release.wait()  # swallows the close's cancellation and keeps going

    stubborn = Stubborn()
    bus = make_bus(stubborn)
    stream = bus.stream()
    for _ in range(3):
        bus.publish(ev())
    async with asyncio.timeout(GUARD):
        await bus.close(0.05)  # gives up on it instead of hanging
    bus.publish(ev())
    release.set()
    async with asyncio.timeout(GUARD):
        await asyncio.gather(*bus._workers)
    events = await collect(stream)
    assert len(stubborn.seen) == 1  # the rest of its queue was dropped
    assert [(e.task, e.reason) for e in events if e.kind is OVERFLOW] == [("Stubborn", "closed")]


# ---------------------------------------------------------------- no storms


async def test_a_subscriber_raising_on_everything_cannot_start_a_storm() -> None:
    # Two of them, with tiny queues: panics and overflows about each other must not feed back.
    a, b = Raising("a"), Raising("b")
    a.queue_capacity = b.queue_capacity = 2
    bus = make_bus(a, b)
    stream = bus.stream(capacity=10_000)
    n = 50
    for _ in range(n):
        bus.publish(ev())
    await bus.close(GUARD)
    events = await collect(stream)
    # Each ordinary event gives at most one panic (if it was queued) or one overflow (if it was
    # not) per subscriber; diagnostics give nothing more.
    assert len(ordinary(events)) == n
    for name in ("a", "b"):
        panics = [e for e in events if e.kind is PANICKED and e.task == name]
        overflows = [e for e in events if e.kind is OVERFLOW and e.task == name]
        assert len(panics) == 2
        assert len(overflows) == n - 2
    assert len(events) == n + 2 * (2 + n - 2)


async def test_a_subscriber_raising_cancelled_error_is_a_panic_not_a_dead_worker() -> None:
    class Cancelling(Subscriber):
        def __init__(self) -> None:
            self.calls = 0

        async def on_event(self, event: Event) -> None:
            self.calls += 1
            if not event.is_diagnostic:
                raise asyncio.CancelledError

    cancelling = Cancelling()
    bus = make_bus(cancelling)
    stream = bus.stream()
    for _ in range(3):
        bus.publish(ev())
    await bus.close(GUARD)
    panics = [e for e in await collect(stream) if e.kind is PANICKED]
    assert [(e.task, e.reason) for e in panics] == [("Cancelling", "CancelledError: ")] * 3
    assert cancelling.calls == 6


# ---------------------------------------------------------------- forms of subscribers


async def test_async_and_sync_on_event() -> None:
    class AsyncSub(Subscriber):
        def __init__(self) -> None:
            self.seen: list[Event] = []

        async def on_event(self, event: Event) -> None:
            await asyncio.sleep(0)
            self.seen.append(event)

    class SyncSub(Subscriber):
        def __init__(self) -> None:
            self.seen: list[Event] = []
            self.threads: set[int] = set()

        def on_event(self, event: Event) -> None:
            self.threads.add(threading.get_ident())
            self.seen.append(event)

    asub, ssub = AsyncSub(), SyncSub()
    assert as_subscriber(asub).is_async
    assert not as_subscriber(ssub).is_async
    bus = make_bus(asub, ssub)
    published = [ev() for _ in range(5)]
    for e in published:
        bus.publish(e)
    await bus.close(GUARD)
    assert asub.seen == ssub.seen == published
    assert ssub.threads == {threading.get_ident()}  # a sync on_event runs on the loop


async def test_blocking_subscriber_runs_on_a_dedicated_thread() -> None:
    class Blocking(Subscriber):
        blocking = True

        def __init__(self, name: str) -> None:
            self._name = name
            self.threads: list[int] = []

        @property
        def name(self) -> str:
            return self._name

        def on_event(self, event: Event) -> None:
            self.threads.append(threading.get_ident())

    one, two = Blocking("one"), Blocking("two")
    bus = make_bus(one, two)
    for _ in range(5):
        bus.publish(ev())
    await bus.close(GUARD)
    loop_thread = threading.get_ident()
    assert len(one.threads) == len(two.threads) == 5
    assert len(set(one.threads)) == len(set(two.threads)) == 1  # always its own one thread
    assert loop_thread not in one.threads + two.threads
    assert set(one.threads) != set(two.threads)


async def test_plain_functions_are_accepted() -> None:
    sync_seen: list[Event] = []
    async_seen: list[Event] = []
    returned_seen: list[Event] = []

    def on_sync(event: Event) -> None:
        sync_seen.append(event)

    async def on_async(event: Event) -> None:
        await asyncio.sleep(0)
        async_seen.append(event)

    async def record(event: Event) -> None:
        returned_seen.append(event)

    def returns_awaitable(event: Event) -> Awaitable[None]:
        return record(event)  # a sync callable handing back an awaitable: it is awaited

    refs = [as_subscriber(f) for f in (on_sync, on_async, returns_awaitable)]
    assert [r.name for r in refs] == ["on_sync", "on_async", "returns_awaitable"]
    bus = make_bus(on_sync, on_async, returns_awaitable)
    published = [ev() for _ in range(3)]
    for e in published:
        bus.publish(e)
    await bus.close(GUARD)
    assert sync_seen == async_seen == returned_seen == published


async def test_plain_functions_through_the_supervisor() -> None:
    seen: list[EventKind] = []
    config = tv.SupervisorConfig(handle_signals=False)
    sup = tv.Supervisor(config=config, subscribers=[lambda e: seen.append(e.kind)])

    async def work() -> None:
        pass

    async with asyncio.timeout(GUARD):
        await sup.run([tv.TaskSpec.once("job", work)])
    assert EventKind.TASK_FINISHED in seen
    assert seen[-1] is EventKind.ALL_STOPPED_WITHIN_GRACE


class NoOnEvent:
    pass


class NotCallableOnEvent:
    on_event = 42


class NotOverridden(Subscriber):
    pass


class AsyncBlocking(Subscriber):
    blocking = True

    async def on_event(self, event: Event) -> None:
        pass


class BadCapacity(Subscriber):
    queue_capacity = "10"  # type: ignore[assignment]

    def on_event(self, event: Event) -> None:
        pass


class BadName:
    name = 42

    def on_event(self, event: Event) -> None:
        pass


@pytest.mark.parametrize(
    ("subscriber", "match"),
    [
        (NoOnEvent(), "on_event"),
        (NotCallableOnEvent(), "on_event"),
        (None, "on_event"),
        (42, "on_event"),
        (Counting, "instance"),
        (NotOverridden(), "override on_event"),
        (AsyncBlocking(), "blocking"),
        (BadCapacity(), "queue_capacity"),
        (BadName(), "name"),
    ],
)
def test_bad_subscribers_are_refused_when_the_supervisor_is_built(
    subscriber: object, match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        tv.Supervisor(subscribers=[Counting(), subscriber])


def test_subscribers_must_be_an_iterable() -> None:
    with pytest.raises(TypeError, match="subscribers"):
        tv.Supervisor(subscribers=Counting())  # type: ignore[arg-type]


@pytest.mark.parametrize("capacity", [0, -5])
async def test_queue_capacity_is_clamped_to_one(capacity: int) -> None:
    counting = Counting(capacity=capacity)
    assert as_subscriber(counting).capacity == 1
    bus = make_bus(counting)
    stream = bus.stream()
    published = [ev() for _ in range(3)]
    for e in published:
        bus.publish(e)
    await bus.close(GUARD)
    assert counting.seen == published[:1]
    assert len([e for e in await collect(stream) if e.kind is OVERFLOW]) == 2


def test_default_queue_capacity() -> None:
    assert Subscriber.queue_capacity == 1024
    assert as_subscriber(lambda e: None).capacity == 1024


async def test_name_defaults_to_the_class_name() -> None:
    class Metrics(Subscriber):
        queue_capacity = 1

        def on_event(self, event: Event) -> None:
            pass

    class Duck:  # not a Subscriber subclass: any object with on_event will do
        queue_capacity = 1

        def on_event(self, event: Event) -> None:
            pass

    class Named(Subscriber):
        name = "custom"
        queue_capacity = 1

        def on_event(self, event: Event) -> None:
            pass

    assert Metrics().name == "Metrics"
    assert [as_subscriber(s).name for s in (Metrics(), Duck(), Named())] == [
        "Metrics",
        "Duck",
        "custom",
    ]
    bus = make_bus(Metrics(), Duck(), Named())
    stream = bus.stream()
    bus.publish(ev())
    bus.publish(ev())
    await bus.close(GUARD)
    overflowed = {e.task for e in await collect(stream) if e.kind is OVERFLOW}
    assert overflowed == {"Metrics", "Duck", "custom"}


# ---------------------------------------------------------------- close


async def test_close_drains_every_queue_under_one_shared_deadline() -> None:
    per_event, events, timeout = 0.1, 50, 0.3

    class Slow(Subscriber):
        def __init__(self, name: str) -> None:
            self._name = name
            self.done = 0

        @property
        def name(self) -> str:
            return self._name

        async def on_event(self, event: Event) -> None:
            await asyncio.sleep(per_event)  # this subscriber's own work, not a synchronisation
            self.done += 1

    subs = [Slow(f"slow{i}") for i in range(4)]
    bus = make_bus(*subs)
    for _ in range(events):  # each needs 50 × 0.1 s = 5 s, far more than the timeout
        bus.publish(ev())
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bus.close(timeout)
    elapsed = loop.time() - started
    # One deadline for all: about `timeout`, while a timeout per subscriber would take 4 ×.
    assert elapsed < 3 * timeout
    # They drained side by side, each got some work done, and what was left was dropped.
    assert all(1 <= s.done < events for s in subs), [s.done for s in subs]


async def test_close_is_idempotent_and_concurrent_calls_share_it() -> None:
    slow = Gated("slow")
    bus = make_bus(slow)
    for _ in range(3):
        bus.publish(ev())
    closers = [asyncio.ensure_future(bus.close(GUARD)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(c.done() for c in closers)  # all wait for the one drain
    slow.gate.set()
    async with asyncio.timeout(GUARD):
        await asyncio.gather(*closers)
        await bus.close(GUARD)  # and once more, after the fact
    assert len(slow.seen) == 3


async def test_close_of_a_bus_never_started() -> None:
    bus = Bus([as_subscriber(Counting())])
    async with asyncio.timeout(GUARD):
        await bus.close(GUARD)
    assert bus.listening  # a plain subscriber channel stays (every publish reports "closed")


# ---------------------------------------------------------------- EventStream


async def test_stream_is_subscribed_when_created() -> None:
    bus = make_bus()
    bus.publish(ev())  # before the stream: not seen
    stream = bus.stream()
    published = [ev() for _ in range(10)]
    for e in published:
        bus.publish(e)  # nobody iterates yet: nothing is missed
    await bus.close(GUARD)
    assert await collect(stream) == published


async def test_stream_delivers_while_iterated_and_ends_after_close() -> None:
    bus = make_bus()
    stream = bus.stream()
    got: list[Event] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for e in stream:
            got.append(e)
            first.set()

    consumer = asyncio.ensure_future(consume())
    published = [ev()]
    bus.publish(published[0])
    async with asyncio.timeout(GUARD):
        await first.wait()
    published += [ev(), ev()]
    for e in published[1:]:
        bus.publish(e)
    await bus.close(GUARD)
    async with asyncio.timeout(GUARD):
        await consumer  # the iteration ends by itself
    assert got == published
    assert not bus.listening  # an ended stream unsubscribes


async def test_stream_aclose_stops_the_iteration() -> None:
    bus = make_bus()
    stream = bus.stream()
    waiting = asyncio.ensure_future(anext(stream, None))
    await asyncio.sleep(0)
    assert not waiting.done()
    await stream.aclose()
    async with asyncio.timeout(GUARD):
        assert await waiting is None
    assert not bus.listening
    bus.publish(ev())
    assert [e async for e in stream] == []
    await bus.close(GUARD)


async def test_stream_as_async_context_manager() -> None:
    bus = make_bus()
    async with bus.stream() as stream:
        e = ev()
        bus.publish(e)
        assert await anext(stream) == e
    assert not bus.listening
    await bus.close(GUARD)


async def test_stream_overflow_is_reported_to_others() -> None:
    recorder = Recorder()
    bus = make_bus(recorder)
    stream = bus.stream(capacity=2)
    published = [ev() for _ in range(5)]
    for e in published:
        bus.publish(e)
    await bus.close(GUARD)
    assert await collect(stream) == published[:2]
    assert [(e.task, e.reason) for e in recorder.of(OVERFLOW)] == [("events", "full")] * 3


async def test_stream_after_close_ends_at_once() -> None:
    bus = make_bus()
    await bus.close(GUARD)
    assert await collect(bus.stream()) == []


async def test_abandoned_stream_unsubscribes() -> None:
    bus = make_bus()
    stream = bus.stream()
    assert bus.listening
    del stream
    gc.collect()
    assert not bus.listening
    await bus.close(GUARD)


# ---------------------------------------------------------------- through the Supervisor


async def test_supervisor_events_sees_a_task_and_ends_after_shutdown() -> None:
    async def work() -> None:
        pass

    sup = tv.Supervisor(config=tv.SupervisorConfig(handle_signals=False))
    stream = sup.events()  # before start: subscribed all the same
    async with sup:
        outcome = await asyncio.wait_for(sup.add(tv.TaskSpec.once("job", work)), GUARD)
    assert outcome.ok
    events = await collect(stream)
    assert [e.kind for e in events if e.task == "job"] == [
        EventKind.TASK_ADD_REQUESTED,
        EventKind.TASK_ADDED,
        EventKind.ATTEMPT_STARTING,
        EventKind.ATTEMPT_SUCCEEDED,
        EventKind.TASK_FINISHED,
        EventKind.TASK_REMOVED,
    ]
    assert [e.kind for e in events[-2:]] == [
        EventKind.SHUTDOWN_REQUESTED,
        EventKind.ALL_STOPPED_WITHIN_GRACE,
    ]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    assert await collect(sup.events()) == []  # after shutdown: ends at once


async def test_final_events_reach_every_subscriber_with_room() -> None:
    class Slowish(Subscriber):
        def __init__(self) -> None:
            self.kinds: list[EventKind] = []

        async def on_event(self, event: Event) -> None:
            await asyncio.sleep(0)
            self.kinds.append(event.kind)

    recorder, slowish = Recorder(), Slowish()
    sup = tv.Supervisor(
        config=tv.SupervisorConfig(handle_signals=False), subscribers=[recorder, slowish]
    )

    async def work() -> None:
        pass

    async with asyncio.timeout(GUARD):
        await sup.run([tv.TaskSpec.once(f"job{i}", work) for i in range(5)])
    for kinds in ([e.kind for e in recorder.events], slowish.kinds):
        assert kinds.count(EventKind.TASK_REMOVED) == 5
        assert kinds[-1] is EventKind.ALL_STOPPED_WITHIN_GRACE


async def test_a_stuck_subscriber_changes_no_outcome_and_no_shutdown() -> None:
    stuck = Gated("stuck", capacity=1)
    config = tv.SupervisorConfig(handle_signals=False, subscriber_shutdown_timeout=0.1)
    sup = tv.Supervisor(config=config, subscribers=[stuck, Raising()])
    stream = sup.events()

    async def work() -> None:
        pass

    async with asyncio.timeout(GUARD):
        async with sup:
            outcome = await sup.add(tv.TaskSpec.once("job", work))
    assert outcome.ok
    events = await collect(stream)
    assert any(e.kind is OVERFLOW and e.task == "stuck" for e in events)
    assert any(e.kind is PANICKED and e.task == "raising" for e in events)


# ------------------------------------------- sync subscribers: one shared log, per-reader drops


async def test_sync_subscribers_with_different_capacities_drop_exactly_their_own_excess() -> None:
    small, medium, big = Counting(capacity=2), Counting(capacity=5), Counting(capacity=100)
    bus = make_bus(small, medium, big)
    published = [ev(f"e{i}") for i in range(8)]
    for e in published:
        bus.publish(e)
    await bus.close(GUARD)
    # The overflow report about small (after e2) takes a place in medium's backlog too.
    assert small.seen == published[:2]
    assert len(medium.seen) == 5
    assert ordinary(medium.seen) == published[:4]
    assert ordinary(big.seen) == published
    full = [e.task for e in big.seen if e.kind is OVERFLOW and e.reason == "full"]
    assert full.count("Counting") == 6 + 4  # small: e2..e7; medium: e4..e7


async def test_a_sync_subscriber_gets_room_again_after_each_delivery_round() -> None:
    small = Counting(capacity=2)
    bus = make_bus(small)
    rounds = [[ev(f"r{r}-{i}") for i in range(3)] for r in range(3)]
    for batch in rounds:
        for e in batch:
            bus.publish(e)
        await asyncio.sleep(0)  # one loop iteration: one delivery round
        await asyncio.sleep(0)
    await bus.close(GUARD)
    assert ordinary(small.seen) == [e for batch in rounds for e in batch[:2]]


def async_from_e2(seen: list[str]) -> Callable[[Event], Awaitable[None] | None]:
    """A sync ``on_event`` that records each task name, and from event ``e2`` on returns an
    awaitable instead (it then needs a worker of its own)."""

    async def record(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(event.task or "")

    def sometimes_async(event: Event) -> Awaitable[None] | None:
        if event.task == "e2":
            return record(event)
        seen.append(event.task or "")
        return None

    return sometimes_async


async def test_a_sync_on_event_that_returns_an_awaitable_keeps_its_order() -> None:
    seen: list[str] = []
    other = Counting()
    sometimes_async = async_from_e2(seen)

    bus = make_bus(sometimes_async, other)
    published = [ev(f"e{i}") for i in range(6)]
    for e in published[:4]:
        bus.publish(e)
    await asyncio.sleep(0)
    for e in published[4:]:
        bus.publish(e)
    await bus.close(GUARD)
    assert seen == [e.task for e in published]
    assert ordinary(other.seen) == published


async def test_a_raising_sync_subscriber_does_not_disturb_its_sync_neighbours() -> None:
    raising, counting = Raising(), Counting()
    bus = make_bus(raising, counting)
    published = [ev() for _ in range(5)]
    for e in published:
        bus.publish(e)
    await bus.close(GUARD)
    assert ordinary(counting.seen) == published
    assert sum(e.kind is PANICKED for e in counting.seen) == 5


async def test_a_slow_sync_subscriber_is_cut_at_the_close_deadline() -> None:
    seen: list[Event] = []

    def slow(event: Event) -> None:
        time.sleep(0.02)  # blocks the loop: a sync subscriber's own fault
        seen.append(event)

    bus = make_bus(slow)
    published = [ev() for _ in range(100)]  # 2 s of work, far beyond the deadline
    for e in published:
        bus.publish(e)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bus.close(0.1)
    assert loop.time() - started < 1.0  # generous: cut near 0.1 s, not after 2 s
    assert len(seen) < len(published)  # the rest was dropped at the deadline
    assert seen == published[: len(seen)]


# ------------------------------- packed events: sync subscribers alone, built at delivery


def emitted(bus: Bus, task: str) -> None:
    bus.emit(EventKind.ATTEMPT_STARTING, task, tv.TaskId(7), 1)


async def test_a_packed_event_is_an_event_stamped_when_it_was_emitted() -> None:
    first, second = Counting(), Counting()
    bus = make_bus(first, second)
    before = time.time()
    bus.emit(EventKind.ATTEMPT_SUCCEEDED, "job", tv.TaskId(3), 2, 0.5)
    bus.emit(EventKind.TASK_ADD_REQUESTED, "job")
    emitted_by = time.time()  # read before any delivery: that comes at a later loop iteration
    await bus.close(GUARD)
    succeeded, requested = first.seen
    assert type(succeeded) is Event
    assert type(requested) is Event
    assert before <= succeeded.at <= requested.at <= emitted_by
    assert requested.seq == succeeded.seq + 1
    assert (succeeded.kind, succeeded.task, succeeded.task_id) == (
        EventKind.ATTEMPT_SUCCEEDED,
        "job",
        3,
    )
    assert (succeeded.attempt, succeeded.duration, succeeded.reason) == (2, 0.5, None)
    assert requested.task_id is None
    assert requested.attempt is None
    assert succeeded == Event(
        succeeded.seq,
        succeeded.at,
        EventKind.ATTEMPT_SUCCEEDED,
        "job",
        tv.TaskId(3),
        attempt=2,
        duration=0.5,
    )
    # built once, handed to every sync subscriber
    assert all(a is b for a, b in zip(first.seen, second.seen, strict=True))


async def test_an_event_stamped_from_a_perf_counter_reading_reads_as_the_wall_clock() -> None:
    sub = Counting()
    bus = make_bus(sub)
    before = time.time()
    bus.emit(EventKind.ATTEMPT_STARTING, "job", tv.TaskId(3), 1, now=time.perf_counter())
    bus.emit(EventKind.TASK_ADD_REQUESTED, "other")  # the wall clock read directly
    bus.emit_closing("job", tv.TaskId(3), tv.OutcomeKind.COMPLETED, 1, 0.5, time.perf_counter())
    after = time.time()
    await bus.close(GUARD)
    stamps = [e.at for e in sub.seen]
    assert len(stamps) == 5
    # The wall time of the reading, to within microseconds (float rounding at epoch
    # magnitudes is a quarter of one): in order with the clock read around and between.
    slack = 50e-6
    timeline = [before, *stamps[:3], after]
    assert all(a <= b + slack for a, b in itertools.pairwise(timeline)), timeline
    assert stamps[2] == stamps[3] == stamps[4]


async def test_a_controller_event_packed_or_built_carries_its_slot_and_reason() -> None:
    transition, submitted = EventKind.CONTROLLER_SLOT_TRANSITION, EventKind.CONTROLLER_SUBMITTED
    sync_only, beside_a_queue = Counting(), Counting()
    packed_bus = make_bus(sync_only)
    gated = Gated()
    gated.gate.set()
    built_bus = make_bus(beside_a_queue, gated)  # a queue listens: events are built at once
    for bus in (packed_bus, built_bus):
        bus.emit_slotted(submitted, "job", tv.TaskId(4), "key")
        bus.emit_slotted(transition, None, None, "key", "idle→admitting")
    await packed_bus.close(GUARD)
    await built_bus.close(GUARD)
    assert gated.seen == beside_a_queue.seen
    for seen in (sync_only.seen, beside_a_queue.seen):
        sub, moved = seen
        assert (sub.kind, sub.task, sub.task_id, sub.slot, sub.reason) == (
            submitted,
            "job",
            4,
            "key",
            None,
        )
        assert (moved.kind, moved.task, moved.slot, moved.reason) == (
            transition,
            None,
            "key",
            "idle→admitting",
        )
        assert moved.duration is None
        assert moved.outcome is None
    # the promotion path rebuilds a round with ``_events.unpack``: the same mapping there
    log: list[Any] = []
    log += (transition, 1, 2.0, None, None, None, "key", "idle→admitting")
    (event,) = unpack(log)
    assert (event.slot, event.reason, event.duration, event.outcome) == (
        "key",
        "idle→admitting",
        None,
        None,
    )


async def test_packed_and_whole_events_keep_publish_order() -> None:
    sub = Counting()
    bus = make_bus(sub)
    sent: list[str] = []
    for i in range(6):
        if i % 2:
            bus.publish(new_event(EventKind.BACKOFF_SCHEDULED, f"e{i}", delay=0.1))
        else:
            emitted(bus, f"e{i}")
        sent.append(f"e{i}")
    await bus.close(GUARD)
    assert [e.task for e in sub.seen] == sent
    seqs = [e.seq for e in sub.seen]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


async def test_emit_beside_a_queue_builds_one_event_for_all() -> None:
    sync_sub, gated = Counting(), Gated()
    gated.gate.set()
    bus = make_bus(sync_sub, gated)
    emitted(bus, "x")
    await bus.close(GUARD)
    assert len(sync_sub.seen) == len(gated.seen) == 1
    assert sync_sub.seen[0] is gated.seen[0]


async def test_emit_closing_and_emit_each_keep_capacities_exact() -> None:
    small, big = Counting(capacity=3), Counting()
    bus = make_bus(small, big)
    emitted(bus, "first")
    bus.emit_closing("job", tv.TaskId(9), tv.OutcomeKind.COMPLETED)  # exactly fills small
    bus.emit_each(EventKind.TASK_ADD_REQUESTED, ["a", "b"])  # no room left in small
    await bus.close(GUARD)
    kinds = [e.kind for e in small.seen]
    assert kinds == [EventKind.ATTEMPT_STARTING, EventKind.TASK_FINISHED, EventKind.TASK_REMOVED]
    assert small.seen[1].outcome is tv.OutcomeKind.COMPLETED
    assert small.seen[1].reason is None
    assert small.seen[1].at == small.seen[2].at  # one act, one clock reading
    assert [e.task for e in ordinary(big.seen)] == ["first", "job", "job", "a", "b"]
    assert [e.task for e in big.seen if e.kind is OVERFLOW] == ["Counting", "Counting"]


async def test_emit_closing_with_room_for_one_drops_only_the_second() -> None:
    small, big = Counting(capacity=2), Counting()
    bus = make_bus(small, big)
    emitted(bus, "first")
    bus.emit_closing("job", tv.TaskId(9), tv.OutcomeKind.COMPLETED)
    await bus.close(GUARD)
    assert [e.kind for e in small.seen] == [EventKind.ATTEMPT_STARTING, EventKind.TASK_FINISHED]
    assert len(ordinary(big.seen)) == 3
    assert [e.reason for e in big.seen if e.kind is OVERFLOW] == ["full"]


async def test_a_sync_on_event_returning_an_awaitable_mid_round_gets_the_rest_in_order() -> None:
    seen: list[str] = []
    other = Counting()
    sometimes_async = async_from_e2(seen)

    bus = make_bus(sometimes_async, other)
    for i in range(4):
        emitted(bus, f"e{i}")
    bus.publish(new_event(EventKind.BACKOFF_SCHEDULED, "e4", delay=0.1))
    emitted(bus, "e5")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    emitted(bus, "e6")
    await bus.close(GUARD)
    assert seen == [f"e{i}" for i in range(7)]
    assert [e.task for e in ordinary(other.seen)] == [f"e{i}" for i in range(7)]


async def test_a_batch_through_a_small_sync_subscriber_drops_exactly_its_excess() -> None:
    small, big = Counting(capacity=5), Counting(capacity=100_000)
    sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False), subscribers=[small, big])
    await asyncio.wait_for(sup.run([tv.TaskSpec.once(f"t{i}", _noop) for i in range(50)]), GUARD)
    everything = ordinary(big.seen)
    assert len(everything) == 50 * 6 + 2  # six per task, shutdown requested, all stopped
    # small gets room again every round: what it saw is an in-order part of everything
    remaining = iter(everything)
    assert all(any(e is other for other in remaining) for e in ordinary(small.seen))
    dropped_for_small = [e for e in big.seen if e.kind is OVERFLOW and e.task == "Counting"]
    assert len(ordinary(small.seen)) + len(dropped_for_small) == len(everything)
    assert dropped_for_small  # the batch did overflow it


async def _noop() -> None:
    pass


# -------------------------------------------- event_kinds, on_attach, Supervisor.event_counts


class Only(Subscriber):
    """A sync subscriber that asks for some kinds only."""

    def __init__(self, *kinds: EventKind, capacity: int = 1024) -> None:
        self.event_kinds = frozenset(kinds)
        self.queue_capacity = capacity
        self.seen: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.seen.append(event)


class OnlyAsync(Only):
    async def on_event(self, event: Event) -> None:  # type: ignore[override]
        self.seen.append(event)


class OnlyBlocking(Only):
    blocking = True


async def _run_tasks(subscribers: list[object], n: int = 3) -> tv.Supervisor:
    sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False), subscribers=subscribers)
    await asyncio.wait_for(sup.run([tv.TaskSpec.once(f"t{i}", _noop) for i in range(n)]), GUARD)
    return sup


@pytest.mark.parametrize("kind_of_subscriber", [Only, OnlyAsync, OnlyBlocking])
async def test_event_kinds_delivers_only_those_kinds_in_order(
    kind_of_subscriber: type[Only],
) -> None:
    only = kind_of_subscriber(EventKind.TASK_FINISHED, EventKind.ATTEMPT_SUCCEEDED)
    everything = Counting()
    await _run_tasks([only, everything])
    wanted = [
        e
        for e in everything.seen
        if e.kind in (EventKind.TASK_FINISHED, EventKind.ATTEMPT_SUCCEEDED)
    ]
    assert len(wanted) == 6
    assert only.seen == wanted


async def test_kinds_nobody_wants_are_not_delivered_but_counted() -> None:
    only = Only(EventKind.TASK_FINISHED)
    sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False), subscribers=[only])
    counts = sup.event_counts()
    await asyncio.wait_for(sup.run([tv.TaskSpec.once(f"t{i}", _noop) for i in range(4)]), GUARD)
    assert [e.kind for e in only.seen] == [EventKind.TASK_FINISHED] * 4
    assert counts[EventKind.TASK_FINISHED] == 4
    assert counts[EventKind.ATTEMPT_STARTING] == 4  # never built: nobody wanted it
    assert counts[EventKind.TASK_ADD_REQUESTED] == 4
    assert counts[EventKind.SHUTDOWN_REQUESTED] == 1
    assert counts[EventKind.GRACE_EXCEEDED] == 0  # every kind is present
    with pytest.raises(TypeError):
        counts[EventKind.TASK_ADDED] = 0  # type: ignore[index]  # read-only
    snapshot = dict(counts)
    del sup
    gc.collect()
    assert dict(counts) == snapshot  # the view outlives the supervisor


async def test_event_counts_start_at_the_first_call_and_count_every_kind() -> None:
    everything = Counting()
    sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False), subscribers=[everything])
    async with sup:
        await asyncio.wait_for(sup.add(tv.TaskSpec.once("before", _noop)), GUARD)
        counts = sup.event_counts()
        assert sum(counts.values()) == 0  # counting starts when first asked for
        await asyncio.wait_for(sup.add(tv.TaskSpec.once("after", _noop)), GUARD)
        assert counts[EventKind.TASK_ADDED] == 1
        assert counts[EventKind.TASK_REMOVED] == 1
    assert counts[EventKind.ALL_STOPPED_WITHIN_GRACE] == 1
    assert sum(counts.values()) == sum(1 for e in everything.seen if e.task != "before")


async def test_a_filtered_sync_subscriber_capacity_counts_only_its_own_events() -> None:
    # 20 tasks publish 120+ events in two rounds; it wants 20 of them and has room for 20.
    only = Only(EventKind.TASK_FINISHED, capacity=20)
    everything = Counting(capacity=100_000)
    await _run_tasks([only, everything], n=20)
    assert len(only.seen) == 20
    assert not [e for e in everything.seen if e.kind is OVERFLOW]
    # and one more than its room is dropped, exactly once
    tight = Only(EventKind.TASK_FINISHED, capacity=19)
    witness = Counting(capacity=100_000)
    await _run_tasks([tight, witness], n=20)
    dropped = [e for e in witness.seen if e.kind is OVERFLOW]
    assert len(tight.seen) + len(dropped) == 20
    assert dropped


def test_on_attach_is_called_once_by_each_supervisor() -> None:
    class Attaching(Counting):
        def __init__(self) -> None:
            super().__init__()
            self.attached: list[tv.Supervisor] = []

        def on_attach(self, supervisor: tv.Supervisor) -> None:
            self.attached.append(supervisor)

    sub = Attaching()
    first = tv.Supervisor(subscribers=[sub])
    second = tv.Supervisor(subscribers=[sub])
    assert sub.attached == [first, second]


@pytest.mark.parametrize(
    ("kinds", "error", "match"),
    [
        ("task_added", TypeError, "event_kinds must be a set"),
        (EventKind.TASK_ADDED, TypeError, "event_kinds must be a set"),
        (42, TypeError, "event_kinds must be a set"),
        (["task_added"], TypeError, "EventKind members"),
        ([], ValueError, "at least one"),
    ],
)
def test_bad_event_kinds_are_refused_when_the_supervisor_is_built(
    kinds: object, error: type[Exception], match: str
) -> None:
    sub = Counting()
    sub.event_kinds = kinds  # type: ignore[assignment]
    with pytest.raises(error, match=match):
        tv.Supervisor(subscribers=[sub])


# ------------------- ``_on_packed``: taskvisor's own subscribers take whole rounds unbuilt


class Packed(Subscriber):
    """Takes whole delivery rounds (``_on_packed``); ``on_event`` when the bus builds events."""

    def __init__(self, kinds: frozenset[EventKind] | None = None, fail_on: str = "") -> None:
        self.event_kinds = kinds
        self.fail_on = fail_on
        self.rounds = 0
        self.seen: list[tuple[str, Event]] = []

    def on_event(self, event: Event) -> None:
        self.seen.append(("event", event))

    def _on_packed(self, log: list[Any]) -> None:
        self.rounds += 1
        for run, event in zip(runs(log), unpack(log), strict=True):
            if event.task == self.fail_on:
                raise RuntimeError(f"packed {event.task}")
            self.seen.append(("whole" if run[0] is None else "packed", event))


async def after_delivery_round() -> None:
    """Return once the fan-out's scheduled delivery round has run (not the drain at close).

    The round was scheduled with ``call_soon``; a callback scheduled now runs after it.
    """
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await asyncio.wait_for(done, GUARD)


def _some_events(bus: Bus) -> list[str]:
    bus.emit(EventKind.ATTEMPT_SUCCEEDED, "a", tv.TaskId(1), 1, 0.25)
    bus.publish(new_event(EventKind.BACKOFF_SCHEDULED, "b", tv.TaskId(2), delay=0.1))
    bus.emit_closing("c", tv.TaskId(3), tv.OutcomeKind.COMPLETED, 1, 0.5)
    return ["a", "b", "c", "c", "c"]


async def test_a_round_reaches_on_packed_in_one_call_unbuilt_in_publish_order() -> None:
    sub = Packed()
    bus = make_bus(sub)
    tasks = _some_events(bus)
    await after_delivery_round()
    assert sub.rounds == 1
    await bus.close(GUARD)
    assert [e.task for _, e in sub.seen] == tasks
    assert [how for how, _ in sub.seen] == ["packed", "whole", "packed", "packed", "packed"]
    first = sub.seen[0][1]
    assert (first.kind, first.task_id, first.attempt, first.duration) == (
        EventKind.ATTEMPT_SUCCEEDED,
        1,
        1,
        0.25,
    )
    seqs = [e.seq for _, e in sub.seen]
    assert seqs == sorted(seqs)


async def test_beside_a_plain_subscriber_on_packed_gets_built_events_like_it() -> None:
    packed, plain = Packed(), Counting()
    bus = make_bus(packed, plain)
    tasks = _some_events(bus)
    await after_delivery_round()
    await bus.close(GUARD)
    assert packed.rounds == 0
    assert [how for how, _ in packed.seen] == ["event"] * len(tasks)
    assert [e for _, e in packed.seen] == plain.seen


async def test_the_drain_at_close_goes_through_on_event() -> None:
    sub = Packed()
    bus = make_bus(sub)
    tasks = _some_events(bus)
    await bus.close(GUARD)  # at once: the drain (it has a deadline) delivers event by event
    assert sub.rounds == 0
    assert [(how, e.task) for how, e in sub.seen] == [("event", t) for t in tasks]


async def test_packed_rounds_leave_out_kinds_nobody_wants() -> None:
    sub = Packed(frozenset({EventKind.TASK_FINISHED, EventKind.BACKOFF_SCHEDULED}))
    bus = make_bus(sub)
    _some_events(bus)
    await after_delivery_round()
    await bus.close(GUARD)
    assert [(how, e.kind) for how, e in sub.seen] == [
        ("whole", EventKind.BACKOFF_SCHEDULED),
        ("packed", EventKind.TASK_FINISHED),
    ]


async def test_on_packed_that_raises_is_one_panic_and_the_others_go_on() -> None:
    failing, other = Packed(fail_on="b"), Packed()
    bus = make_bus(failing, other)
    tasks = _some_events(bus)
    await after_delivery_round()
    await bus.close(GUARD)
    assert [e.task for _, e in ordinary_seen(other)] == tasks
    assert [e.task for _, e in ordinary_seen(failing)] == ["a"]  # the rest of its round is lost
    panics = [e for _, e in other.seen if e.kind is PANICKED]
    assert [(p.task, p.reason) for p in panics] == [("Packed", "RuntimeError: packed b")]


def ordinary_seen(sub: Packed) -> list[tuple[str, Event]]:
    return [(how, e) for how, e in sub.seen if not e.is_diagnostic]


def test_on_packed_is_ignored_for_async_and_blocking_subscribers() -> None:
    class AsyncPacked(Packed):
        async def on_event(self, event: Event) -> None:  # type: ignore[override]
            pass

    class BlockingPacked(Packed):
        blocking = True

    assert as_subscriber(Packed()).packed is not None
    assert as_subscriber(AsyncPacked()).packed is None
    assert as_subscriber(BlockingPacked()).packed is None


async def test_a_subclass_that_overrides_only_on_event_gets_every_event_there() -> None:
    class Extended(Packed):
        def on_event(self, event: Event) -> None:
            self.seen.append(("extended", event))

    class Both(Extended):
        def _on_packed(self, log: list[Any]) -> None:
            super()._on_packed(log)

    patched = Packed()
    patched.on_event = lambda event: None  # type: ignore[method-assign]
    assert as_subscriber(Extended()).packed is None
    assert as_subscriber(patched).packed is None
    assert as_subscriber(Both()).packed is not None  # it knows both: trusted
    sub = Extended()
    bus = make_bus(sub)
    tasks = _some_events(bus)
    await after_delivery_round()
    await bus.close(GUARD)
    assert [(how, e.task) for how, e in sub.seen] == [("extended", t) for t in tasks]
