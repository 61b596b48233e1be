"""Subscribers (SPEC §7), through a real ``Supervisor``: each has its own bounded FIFO queue,
publishing never waits for one, panics and overflows are reported without storms, shutdown
drains every queue under one deadline, ``sup.events()``, ``event_kinds``, ``event_counts()``.

Events come from real tasks (instant ``TaskSpec.once`` bodies, failing ones). Waits are on
events (``EventRecorder.wait_for``), handles or the shutdown itself, each under a guard. How
many overflow reports a drop gives, and the burst rules, are SPEC §14's: ``test_bursts.py``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest

import taskvisor as tv
from conftest import GUARD
from taskvisor import Event, EventKind, Subscriber
from taskvisor.testing import EventRecorder

OVERFLOW = EventKind.SUBSCRIBER_OVERFLOW
PANICKED = EventKind.SUBSCRIBER_PANICKED
PER_TASK = 6
"""A one-shot task that succeeds publishes six events (SPEC §6's order)."""
CLOSING = 2
"""A supervisor that shuts down with every task done adds SHUTDOWN_REQUESTED and
ALL_STOPPED_WITHIN_GRACE."""


def quiet(**config: Any) -> tv.SupervisorConfig:
    config.setdefault("handle_signals", False)
    config.setdefault("grace", 5.0)
    return tv.SupervisorConfig(**config)


async def noop() -> None:
    pass


def once(n: int, prefix: str = "t") -> list[tv.TaskSpec]:
    return [tv.TaskSpec.once(f"{prefix}{i}", noop) for i in range(n)]


async def run(specs: list[tv.TaskSpec], subscribers: Iterable[object], **config: Any) -> None:
    sup = tv.Supervisor(quiet(**config), subscribers=list(subscribers))
    async with asyncio.timeout(GUARD):
        await sup.run(specs)


def ordinary(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if not e.is_diagnostic]


def seqs(events: Iterable[Event]) -> list[int]:
    return [e.seq for e in events]


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


class Named(EventRecorder):
    """A recorder (sync, on the loop) with a name and a capacity of its choosing."""

    def __init__(self, name: str, capacity: int = 1 << 16) -> None:
        super().__init__()
        self.queue_capacity = capacity  # set afterwards: the recorder itself refuses < 1
        self._name = name

    @property
    def name(self) -> str:
        return self._name


class Raising(Named):
    """Records, then raises on every event, diagnostics included."""

    def __init__(self, name: str = "raising", capacity: int = 1 << 16) -> None:
        super().__init__(name, capacity)
        self.calls = 0

    def on_event(self, event: Event) -> None:
        super().on_event(event)
        self.calls += 1
        raise RuntimeError(f"boom {self.calls}")


class Gated(Named):
    """An async subscriber that holds each event until ``gate`` opens, then records it."""

    def __init__(self, name: str = "gated", capacity: int = 1 << 16) -> None:
        super().__init__(name, capacity)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def on_event(self, event: Event) -> None:  # type: ignore[override]
        self.entered.set()
        await self.gate.wait()
        super().on_event(event)


class Plain(Subscriber):
    """A minimal sync subscriber: a list."""

    def __init__(self, capacity: int = 1024) -> None:
        self.queue_capacity = capacity
        self.seen: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.seen.append(event)


# ---------------------------------------------------------------- publishing never blocks


async def test_a_subscriber_awaiting_forever_delays_no_task_and_no_other_subscriber() -> None:
    stuck = Gated("stuck", capacity=10)  # its gate never opens
    fast = EventRecorder()
    sup = tv.Supervisor(quiet(subscriber_shutdown_timeout=0.05), subscribers=[stuck, fast])
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(GUARD):
        async with sup:
            handles = [sup.add(spec) for spec in once(20)]  # plain calls: each has returned
            outcomes = [await h for h in handles]
            await fast.wait_for(EventKind.TASK_REMOVED, count=20)
            assert stuck.entered.is_set()  # it holds its first event in on_event, forever
            assert len(ordinary(fast.events)) == 20 * PER_TASK
            started = loop.time()
        # The shutdown gave up on it at its drain deadline instead of waiting.
        assert loop.time() - started < GUARD / 2
    assert all(o.ok for o in outcomes)
    assert len(ordinary(fast.events)) == 20 * PER_TASK + CLOSING
    assert stuck.events == []
    overflows = fast.select(OVERFLOW, task="stuck")
    assert overflows
    assert overflows[0].reason == "full"
    assert not fast.select(OVERFLOW, task="EventRecorder")


async def test_a_blocking_subscriber_stuck_in_its_thread_delays_neither_tasks_nor_shutdown() -> (
    None
):
    release = threading.Event()
    entered = threading.Event()

    class StuckThread(Subscriber):
        blocking = True
        queue_capacity = 5

        def on_event(self, event: Event) -> None:
            entered.set()
            release.wait(GUARD)

    fast = EventRecorder()
    sup = tv.Supervisor(quiet(subscriber_shutdown_timeout=0.1), subscribers=[StuckThread(), fast])
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(GUARD):
            async with sup:
                outcomes = [await h for h in [sup.add(spec) for spec in once(10)]]
                await fast.wait_for(EventKind.TASK_REMOVED, count=10)
                started = loop.time()
            assert loop.time() - started < GUARD / 2  # a thread cannot be killed; it moves on
    finally:
        release.set()
    assert all(o.ok for o in outcomes)
    assert entered.is_set()
    assert len(ordinary(fast.events)) == 10 * PER_TASK + CLOSING
    assert fast.select(OVERFLOW, task="StuckThread")[0].reason == "full"


async def test_the_outcome_never_depends_on_a_subscriber() -> None:
    stuck = Gated("stuck", capacity=1)
    sup = tv.Supervisor(quiet(subscriber_shutdown_timeout=0.1), subscribers=[stuck, Raising()])
    stream = sup.events()
    async with asyncio.timeout(GUARD):
        async with sup:
            outcome = await sup.add(tv.TaskSpec.once("job", noop))
    assert outcome.ok
    events = [e async for e in stream]
    assert any(e.kind is OVERFLOW and e.task == "stuck" for e in events)
    assert any(e.kind is PANICKED and e.task == "raising" for e in events)


# ---------------------------------------------------------------- order and isolation


async def test_each_subscriber_sees_events_in_publish_order() -> None:
    class Yielding(Named):
        async def on_event(self, event: Event) -> None:  # type: ignore[override]
            if event.seq % 3 == 0:
                await asyncio.sleep(0)  # its own work takes a loop iteration now and then
            super().on_event(event)

    class Threaded(Subscriber):
        blocking = True

        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_event(self, event: Event) -> None:
            self.seen.append(event.seq)

    witness, sync, yielding, threaded = EventRecorder(), Named("sync"), Yielding("y"), Threaded()
    flaky_left = {"flaky": 2}

    async def flaky() -> None:
        if flaky_left["flaky"]:
            flaky_left["flaky"] -= 1
            raise tv.Fail("not yet")

    sup = tv.Supervisor(quiet(), subscribers=[witness, sync, yielding, threaded])
    async with asyncio.timeout(GUARD):
        async with sup:
            flaky_handle = sup.add(
                tv.TaskSpec.restartable("flaky", flaky, backoff=tv.BackoffPolicy.constant(0.001))
            )
            for burst in range(12):  # bursts of 1..4 tasks, each awaited before the next
                handles = [sup.add(s) for s in once(burst % 4 + 1, f"b{burst}-")]
                for h in handles:
                    await h
            assert (await flaky_handle).ok
    published = seqs(witness.events)
    assert strictly_increasing(published)
    assert len(ordinary(witness.events)) == len(published)  # nothing was dropped anywhere
    assert seqs(sync.events) == published
    assert seqs(yielding.events) == published
    assert threaded.seen == published


async def test_slow_and_raising_subscribers_do_not_affect_others() -> None:
    slow, raising, fast = Gated("slow"), Raising(), EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[slow, raising, fast])
    async with asyncio.timeout(GUARD):
        async with sup:
            for h in [sup.add(s) for s in once(8)]:
                await h
            n = 8 * PER_TASK
            # The raising one went on after each failure: one panic per event it was given.
            await fast.wait_for(PANICKED, count=n)
            assert len(ordinary(fast.events)) == n
            assert slow.entered.is_set()
            assert slow.events == []  # while the slow one is still on its first
            slow.gate.set()
    assert ordinary(slow.events) == ordinary(fast.events)
    assert len(ordinary(fast.events)) == n + CLOSING
    assert not fast.select(OVERFLOW)


async def test_a_full_queue_drops_for_that_subscriber_only() -> None:
    small, big = Gated("small", capacity=3), EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[small, big])
    async with asyncio.timeout(GUARD):
        async with sup:
            for h in [sup.add(s) for s in once(10)]:
                await h
            await big.wait_for(EventKind.TASK_REMOVED, count=10)
            small.gate.set()
    everything = ordinary(big.events)
    assert len(everything) == 10 * PER_TASK + CLOSING  # the big one lost nothing
    got = ordinary(small.events)
    assert 0 < len(got) < len(everything)
    assert set(seqs(got)) <= set(seqs(everything))
    assert strictly_increasing(seqs(got))  # what it got, it got in order
    overflows = big.select(OVERFLOW)
    assert {e.task for e in overflows} == {"small"}
    assert overflows[0].reason == "full"


# ---------------------------------------------------------------- panics and no storms


async def test_a_raising_subscriber_is_reported_per_event_and_goes_on() -> None:
    raising, witness = Raising(), EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[raising, witness])
    async with asyncio.timeout(GUARD):
        async with sup:
            for h in [sup.add(s) for s in once(3)]:
                await h
            n = 3 * PER_TASK
            await witness.wait_for(PANICKED, count=n)
            # It also receives its own panic reports; raising on those reports nothing more.
            await raising.wait_for(PANICKED, count=n)
            assert raising.calls == 2 * n
            assert len(witness.select(PANICKED)) == n
    panics = witness.select(PANICKED)
    assert {e.task for e in panics} == {"raising"}
    assert len(panics) == len(ordinary(witness.events))  # the closing events' too
    assert all(e.reason is not None and e.reason.startswith("RuntimeError: boom ") for e in panics)
    assert len({e.reason for e in panics}) == len(panics)  # one report per failing call


async def test_a_subscriber_raising_on_everything_cannot_start_a_storm() -> None:
    # Two of them, with tiny queues, and a burst: panics and overflows about each other
    # must not feed back. Each ordinary event gives at most one report per subscriber.
    a, b = Raising("a", capacity=2), Raising("b", capacity=2)
    witness = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[a, b, witness])
    async with asyncio.timeout(GUARD):
        async with sup:
            handles = [sup.add(s) for s in once(20)]  # 40 events in one loop iteration
            for h in handles:
                await h
    events = witness.events
    n = len(ordinary(events))
    assert n == 20 * PER_TASK + CLOSING
    for name in ("a", "b"):
        about = [e for e in events if e.is_diagnostic and e.task == name]
        assert 1 <= len(about) <= n, (name, len(about))
        assert witness.select(PANICKED, task=name)
        assert witness.select(OVERFLOW, task=name)  # the burst did overflow it
    assert not witness.select(OVERFLOW, task="EventRecorder")


async def test_a_subscriber_raising_cancelled_error_is_a_panic_not_a_dead_worker() -> None:
    class Cancelling(Named):
        def __init__(self) -> None:
            super().__init__("Cancelling")
            self.calls = 0

        async def on_event(self, event: Event) -> None:  # type: ignore[override]
            self.calls += 1
            super().on_event(event)
            if not event.is_diagnostic:
                raise asyncio.CancelledError

    cancelling, witness = Cancelling(), EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[cancelling, witness])
    async with asyncio.timeout(GUARD):
        async with sup:
            for h in [sup.add(s) for s in once(3)]:
                await h
            n = 3 * PER_TASK
            await cancelling.wait_for(PANICKED, count=n)  # still alive to receive its reports
            assert cancelling.calls == 2 * n
    panics = witness.select(PANICKED)
    assert len(panics) == len(ordinary(witness.events))
    assert {(e.task, e.reason) for e in panics} == {("Cancelling", "CancelledError: ")}


async def test_a_raising_sync_subscriber_does_not_disturb_its_sync_neighbours() -> None:
    raising, plain, witness = Raising(), Plain(), EventRecorder()
    await run(once(5), [raising, plain, witness])
    assert ordinary(plain.seen) == ordinary(witness.events)
    assert len(ordinary(plain.seen)) == 5 * PER_TASK + CLOSING
    assert sum(e.kind is PANICKED for e in plain.seen) >= 5 * PER_TASK


# ---------------------------------------------------------------- forms of subscribers


async def test_a_sync_on_event_runs_on_the_loop_thread_like_an_async_one() -> None:
    loop_thread = threading.get_ident()

    class AsyncSub(Named):
        def __init__(self) -> None:
            super().__init__("async")
            self.threads: set[int] = set()

        async def on_event(self, event: Event) -> None:  # type: ignore[override]
            await asyncio.sleep(0)
            self.threads.add(threading.get_ident())
            super().on_event(event)

    class SyncSub(Named):
        def __init__(self) -> None:
            super().__init__("sync")
            self.threads: set[int] = set()

        def on_event(self, event: Event) -> None:
            self.threads.add(threading.get_ident())
            super().on_event(event)

    asub, ssub = AsyncSub(), SyncSub()
    await run(once(3), [asub, ssub])
    assert len(ssub.events) == 3 * PER_TASK + CLOSING
    assert asub.events == ssub.events
    assert ssub.threads == asub.threads == {loop_thread}


async def test_a_blocking_subscriber_runs_on_a_dedicated_thread_of_its_own() -> None:
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
    await run(once(3), [one, two])
    n = 3 * PER_TASK + CLOSING
    assert len(one.threads) == len(two.threads) == n
    assert len(set(one.threads)) == len(set(two.threads)) == 1  # always its own one thread
    assert threading.get_ident() not in one.threads + two.threads
    assert set(one.threads) != set(two.threads)


async def test_plain_functions_are_accepted_in_each_form() -> None:
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

    witness = EventRecorder()
    await run(once(3), [on_sync, on_async, returns_awaitable, witness])
    assert len(witness.events) == 3 * PER_TASK + CLOSING
    assert sync_seen == async_seen == returned_seen == witness.events


async def test_a_plain_function_is_named_after_itself() -> None:
    def on_sync(event: Event) -> None:
        if event.kind is EventKind.TASK_ADDED:
            raise ValueError("sync")

    async def on_async(event: Event) -> None:
        if event.kind is EventKind.TASK_ADDED:
            raise ValueError("async")

    witness = EventRecorder()
    await run(once(1), [on_sync, on_async, witness])
    assert {(e.task, e.reason) for e in witness.select(PANICKED)} == {
        ("on_sync", "ValueError: sync"),
        ("on_async", "ValueError: async"),
    }


async def test_a_lambda_through_the_supervisor() -> None:
    seen: list[EventKind] = []
    sup = tv.Supervisor(config=quiet(), subscribers=[lambda e: seen.append(e.kind)])
    async with asyncio.timeout(GUARD):
        await sup.run([tv.TaskSpec.once("job", noop)])
    assert EventKind.TASK_FINISHED in seen
    assert seen[-1] is EventKind.ALL_STOPPED_WITHIN_GRACE


async def test_names_default_to_the_class_name() -> None:
    class Metrics(Subscriber):
        def on_event(self, event: Event) -> None:
            if event.kind is EventKind.TASK_ADDED:
                raise ValueError("m")

    class Duck:  # not a Subscriber subclass: any object with on_event will do
        def on_event(self, event: Event) -> None:
            if event.kind is EventKind.TASK_ADDED:
                raise ValueError("d")

    class Custom(Subscriber):
        name = "custom"

        def on_event(self, event: Event) -> None:
            if event.kind is EventKind.TASK_ADDED:
                raise ValueError("c")

    assert Metrics().name == "Metrics"
    witness = EventRecorder()
    await run(once(1), [Metrics(), Duck(), Custom(), witness])
    assert {e.task for e in witness.select(PANICKED)} == {"Metrics", "Duck", "custom"}


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
        (Plain, "instance"),
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
        tv.Supervisor(subscribers=[Plain(), subscriber])


def test_subscribers_must_be_an_iterable() -> None:
    with pytest.raises(TypeError, match="subscribers"):
        tv.Supervisor(subscribers=Plain())  # type: ignore[arg-type]


async def burst(subscribers: list[object], n: int) -> None:
    """``n`` synchronous ``add`` calls in one loop iteration (2n events at once), then wait."""
    sup = tv.Supervisor(quiet(), subscribers=subscribers)
    async with asyncio.timeout(GUARD):
        async with sup:
            handles = [sup.add(s) for s in once(n)]
            for h in handles:
                await h


@pytest.mark.parametrize("capacity", [0, -5])
async def test_queue_capacity_is_clamped_to_one(capacity: int) -> None:
    # Side by side, fed the same events, a subscriber of capacity <= 0 gets exactly what one of
    # capacity 1 gets: some events (not none), far from all.
    one, clamped, witness = Named("one", capacity=1), Named("clamped", capacity), EventRecorder()
    await burst([one, clamped, witness], 30)
    everything = ordinary(witness.events)
    assert ordinary(clamped.events) == ordinary(one.events)
    assert 0 < len(ordinary(one.events)) < len(everything)
    assert witness.select(OVERFLOW, task="clamped")


async def test_the_default_queue_capacity_is_1024() -> None:
    assert Subscriber.queue_capacity == 1024
    got: list[Event] = []
    at_1024, at_1023, witness = Named("1024", 1024), Named("1023", 1023), EventRecorder()
    # 600 adds: 1200 events in one loop iteration, more than any of these can hold.
    await burst([got.append, at_1024, at_1023, witness], 600)
    assert witness.select(OVERFLOW, task="1024")
    assert ordinary(got) == ordinary(at_1024.events)  # a plain function gets the default
    assert ordinary(at_1023.events) != ordinary(at_1024.events)


# ---------------------------------------------------------------- shutdown drains


async def test_final_events_reach_every_subscriber_with_room() -> None:
    class Slowish(Subscriber):
        def __init__(self) -> None:
            self.kinds: list[EventKind] = []

        async def on_event(self, event: Event) -> None:
            await asyncio.sleep(0)
            self.kinds.append(event.kind)

    class Threaded(Slowish):
        blocking = True

        def on_event(self, event: Event) -> None:  # type: ignore[override]
            self.kinds.append(event.kind)

    recorder, slowish, threaded, plain = EventRecorder(), Slowish(), Threaded(), Plain()
    await run(once(5), [recorder, slowish, threaded, plain])
    for kinds in (
        [e.kind for e in recorder.events],
        slowish.kinds,
        threaded.kinds,
        [e.kind for e in plain.seen],
    ):
        assert len(kinds) == 5 * PER_TASK + CLOSING
        assert kinds.count(EventKind.TASK_REMOVED) == 5
        assert kinds[-2:] == [EventKind.SHUTDOWN_REQUESTED, EventKind.ALL_STOPPED_WITHIN_GRACE]


async def test_grace_exceeded_and_the_last_task_removed_reach_every_subscriber() -> None:
    async def stubborn(ctx: tv.TaskContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # outlives its grace; the force-stop ends it
            raise

    class Slowish(Subscriber):
        def __init__(self) -> None:
            self.kinds: list[EventKind] = []

        async def on_event(self, event: Event) -> None:
            await asyncio.sleep(0)
            self.kinds.append(event.kind)

    recorder, slowish, plain = EventRecorder(), Slowish(), Plain()
    sup = tv.Supervisor(quiet(grace=0.01), subscribers=[recorder, slowish, plain])
    async with asyncio.timeout(GUARD):
        async with sup:
            sup.add(tv.TaskSpec.once("stubborn", stubborn))
            await recorder.wait_for(EventKind.ATTEMPT_STARTING, task="stubborn")
        report = await sup.shutdown()
    assert report.grace_exceeded
    assert report.stuck == ("stubborn",)
    for kinds in ([e.kind for e in recorder.events], slowish.kinds, [e.kind for e in plain.seen]):
        assert EventKind.GRACE_EXCEEDED in kinds
        assert kinds.count(EventKind.TASK_REMOVED) == 1
        assert kinds[-1] in (EventKind.GRACE_EXCEEDED, EventKind.TASK_REMOVED)
        assert kinds == [e.kind for e in recorder.events]


async def test_shutdown_drains_every_queue_under_one_shared_deadline() -> None:
    per_event, timeout, subscribers = 0.05, 0.3, 6

    class Slow(Named):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.done = 0

        async def on_event(self, event: Event) -> None:  # type: ignore[override]
            await asyncio.sleep(per_event)  # this subscriber's own work, not a synchronisation
            self.done += 1

    subs = [Slow(f"slow{i}") for i in range(subscribers)]
    sup = tv.Supervisor(quiet(subscriber_shutdown_timeout=timeout), subscribers=subs)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(GUARD):
        await sup.start()
        for h in [sup.add(s) for s in once(10)]:  # 60 events: 3 s of work for each of them
            await h
        started = loop.time()
        await sup.shutdown()
    elapsed = loop.time() - started
    # One deadline for all: about `timeout`, where one per subscriber would take 6 x as long.
    assert elapsed < 1.0, elapsed
    # They drained side by side, each got some work done, and what was left was dropped.
    assert all(1 <= s.done < 10 * PER_TASK for s in subs), [s.done for s in subs]


async def test_a_subscriber_swallowing_cancellation_does_not_hold_up_the_shutdown() -> None:
    release = asyncio.Event()
    finished = asyncio.Event()

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
                await release.wait()  # swallows the drain's cancellation and keeps going
                finished.set()

    stubborn = Stubborn()
    sup = tv.Supervisor(quiet(subscriber_shutdown_timeout=0.05), subscribers=[stubborn])
    async with asyncio.timeout(GUARD):
        await sup.run(once(3))  # returns: the drain gave up on it instead of hanging
    release.set()
    async with asyncio.timeout(GUARD):
        await finished.wait()
    assert len(stubborn.seen) == 1  # the rest of its queue was dropped


async def test_shutdown_is_shared_idempotent_and_waits_for_the_drain() -> None:
    slow, witness = Gated("slow"), EventRecorder()
    sup = tv.Supervisor(quiet(subscriber_shutdown_timeout=GUARD), subscribers=[slow, witness])
    async with asyncio.timeout(GUARD):
        await sup.start()
        for h in [sup.add(s) for s in once(2)]:
            await h
        closers = [asyncio.ensure_future(sup.shutdown()) for _ in range(3)]
        await witness.wait_for(EventKind.ALL_STOPPED_WITHIN_GRACE)  # the drain has begun
        assert not any(c.done() for c in closers)  # all wait for the one drain
        slow.gate.set()
        reports = await asyncio.gather(*closers)
        again = await sup.shutdown()  # and once more, after the fact
    assert all(r == again for r in reports)
    assert ordinary(slow.events) == ordinary(witness.events)
    assert len(ordinary(slow.events)) == 2 * PER_TASK + CLOSING


async def test_shutdown_of_a_supervisor_never_started() -> None:
    witness = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[witness])
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
        assert await sup.shutdown() == report
    assert not report.grace_exceeded
    assert [e.kind for e in witness.events] == [
        EventKind.SHUTDOWN_REQUESTED,
        EventKind.ALL_STOPPED_WITHIN_GRACE,
    ]
    with pytest.raises(tv.SupervisorClosed):
        sup.add(tv.TaskSpec.once("late", noop))


# ---------------------------------------------------------------- sync subscribers


async def test_sync_subscribers_of_different_capacities_each_lose_only_their_own_excess() -> None:
    small, medium, big = Named("small", 2), Named("medium", 5), Named("big", 100_000)
    await burst([small, medium, big], 20)
    everything = ordinary(big.events)
    assert len(everything) == 20 * PER_TASK + CLOSING
    for sub in (small, medium):
        got = ordinary(sub.events)
        assert set(seqs(got)) < set(seqs(everything))
        assert strictly_increasing(seqs(got))
        assert big.select(OVERFLOW, task=sub.name)
    # Each burst starts with 20 TASK_ADD_REQUESTED: the first ones fill each queue.
    assert ordinary(small.events)[:2] == everything[:2]
    assert ordinary(medium.events)[:2] == everything[:2]
    assert len(ordinary(small.events)) <= len(ordinary(medium.events))
    assert not big.select(OVERFLOW, task="big")


async def test_a_sync_subscriber_gets_room_again_after_each_delivery() -> None:
    # It wants TASK_ADD_REQUESTED only and has room for 2; three bursts of 3 adds each.
    small = Only(EventKind.TASK_ADD_REQUESTED, capacity=2)
    witness = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[small, witness])
    async with asyncio.timeout(GUARD):
        async with sup:
            for r in range(3):
                for spec in once(3, f"r{r}-"):
                    sup.add(spec)
                # the burst has been delivered to the sync subscribers (witness is one too)
                await witness.wait_for(EventKind.TASK_ADDED, task=f"r{r}-2")
    got = [e.task for e in ordinary(small.seen)]
    assert got == [f"r{r}-{i}" for r in range(3) for i in range(2)]


def async_from_e2(seen: list[int]) -> Callable[[Event], Awaitable[None] | None]:
    """A sync ``on_event`` that records each seq, and for task ``e2``'s events returns an
    awaitable instead (which then records it)."""

    async def record(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append(event.seq)

    def sometimes_async(event: Event) -> Awaitable[None] | None:
        if event.task == "e2":
            return record(event)
        seen.append(event.seq)
        return None

    return sometimes_async


async def test_a_sync_on_event_that_returns_an_awaitable_keeps_its_order() -> None:
    seen: list[int] = []
    witness, other = EventRecorder(), Plain()
    await run(once(6, "e"), [async_from_e2(seen), other, witness])
    assert seen == seqs(witness.events)
    assert other.seen == witness.events
    assert len(seen) == 6 * PER_TASK + CLOSING


async def test_an_event_is_stamped_when_it_is_published() -> None:
    recorder = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[recorder])
    async with asyncio.timeout(GUARD):
        async with sup:
            before = time.time()
            handle = sup.add(tv.TaskSpec.once("job", noop))
            after = time.time()  # read before any delivery could take place
            await handle
    requested, added = recorder.select(
        {EventKind.TASK_ADD_REQUESTED, EventKind.TASK_ADDED}, task="job"
    )
    assert before <= requested.at <= added.at <= after
    assert requested.seq < added.seq
    assert all(type(e) is Event for e in recorder.events)


@pytest.mark.parametrize("beside", ["alone", "beside an async subscriber"])
async def test_controller_events_carry_their_slot_and_reason(beside: str) -> None:
    plain = Plain()
    others: list[object] = []
    if beside != "alone":
        gated = Gated()
        gated.gate.set()
        others.append(gated)
    sup = tv.Supervisor(quiet(), subscribers=[plain, *others], controller=tv.ControllerConfig())
    async with asyncio.timeout(GUARD):
        async with sup:
            outcome = await sup.submit(
                tv.ControllerSpec.queue(tv.TaskSpec.once("job", noop), slot="key")
            )
    assert outcome.ok
    (submitted,) = [e for e in plain.seen if e.kind is EventKind.CONTROLLER_SUBMITTED]
    assert (submitted.task, submitted.slot, submitted.reason) == ("job", "key", None)
    assert submitted.task_id is not None
    moves = [e for e in plain.seen if e.kind is EventKind.CONTROLLER_SLOT_TRANSITION]
    assert moves[0].reason == "idle→admitting"
    for moved in moves:
        assert (moved.task, moved.task_id, moved.slot) == (None, None, "key")
        assert (moved.duration, moved.outcome, moved.attempt) == (None, None, None)
    if others:
        assert isinstance(others[0], Gated)
        assert others[0].events == plain.seen


# ---------------------------------------------------------------- sup.events()


async def collect(stream: tv.EventStream) -> list[Event]:
    """Every event the stream still yields; it must end (the supervisor has shut down)."""
    async with asyncio.timeout(GUARD):
        return [e async for e in stream]


async def test_events_sees_a_task_and_ends_after_shutdown() -> None:
    sup = tv.Supervisor(config=quiet())
    stream = sup.events()  # before start: subscribed all the same
    async with asyncio.timeout(GUARD):
        async with sup:
            outcome = await sup.add(tv.TaskSpec.once("job", noop))
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
    assert strictly_increasing(seqs(events))
    assert await collect(sup.events()) == []  # after shutdown: ends at once


async def test_events_is_subscribed_at_the_call() -> None:
    witness = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[witness])
    async with asyncio.timeout(GUARD):
        async with sup:
            await sup.add(tv.TaskSpec.once("before", noop))
            stream = sup.events()
            await sup.add(tv.TaskSpec.once("after", noop))  # nobody iterates: nothing missed
    events = await collect(stream)
    assert [e for e in events if e.task == "before"] == []
    after = [e for e in witness.events if e.seq >= events[0].seq]
    assert events == after
    assert len([e for e in events if e.task == "after"]) == PER_TASK


async def test_events_delivers_while_iterated_and_ends_after_shutdown() -> None:
    sup = tv.Supervisor(quiet())
    stream = sup.events()
    got: list[Event] = []
    first_finished = asyncio.Event()

    async def consume() -> None:
        async for e in stream:
            got.append(e)
            if e.kind is EventKind.TASK_FINISHED:
                first_finished.set()

    async with asyncio.timeout(GUARD):
        consumer = asyncio.ensure_future(consume())
        async with sup:
            await sup.add(tv.TaskSpec.once("one", noop))
            await first_finished.wait()  # delivered while the supervisor runs
            await sup.add(tv.TaskSpec.once("two", noop))
        await consumer  # the iteration ends by itself
    assert len(got) == 2 * PER_TASK + CLOSING
    assert strictly_increasing(seqs(got))


async def test_events_aclose_stops_the_iteration_and_unsubscribes() -> None:
    witness = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[witness])
    async with asyncio.timeout(GUARD):
        async with sup:
            stream = sup.events(capacity=1)
            waiting = asyncio.ensure_future(anext(stream, None))
            await sup.add(tv.TaskSpec.once("one", noop))
            assert await waiting is not None  # it was listening
            await stream.aclose()
            for h in [sup.add(s) for s in once(5)]:  # would overflow a listening stream
                await h
    assert [e async for e in stream] == []
    assert not overflows_since(witness, "events", "t0")


def overflows_since(witness: EventRecorder, name: str, task: str) -> list[Event]:
    """Overflow reports about ``name`` published after ``task`` was requested."""
    (requested,) = witness.select(EventKind.TASK_ADD_REQUESTED, task=task)
    return [e for e in witness.select(OVERFLOW, task=name) if e.seq > requested.seq]


async def test_events_as_an_async_context_manager() -> None:
    witness = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[witness])
    async with asyncio.timeout(GUARD):
        async with sup:
            async with sup.events(capacity=1) as stream:
                handle = sup.add(tv.TaskSpec.once("job", noop))
                first = await anext(stream)
            await handle
            for h in [sup.add(s) for s in once(5)]:
                await h
    assert (first.kind, first.task) == (EventKind.TASK_ADD_REQUESTED, "job")
    assert [e async for e in stream] == []
    assert not overflows_since(witness, "events", "t0")  # left: it listens no more


async def test_events_overflow_is_reported_to_others() -> None:
    witness = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[witness])
    stream = sup.events(capacity=2)
    async with asyncio.timeout(GUARD):
        await sup.run(once(3))
    got = await collect(stream)
    assert ordinary(got)[:2] == witness.events[:2]
    overflows = witness.select(OVERFLOW, task="events")
    assert overflows
    assert overflows[0].reason == "full"


async def test_an_abandoned_events_stream_unsubscribes() -> None:
    witness = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[witness])
    stream = sup.events(capacity=1)
    del stream
    gc.collect()
    async with asyncio.timeout(GUARD):
        await sup.run(once(5))
    assert len(witness.events) == 5 * PER_TASK + CLOSING
    assert not witness.select(OVERFLOW, task="events")


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


@pytest.mark.parametrize("kind_of_subscriber", [Only, OnlyAsync, OnlyBlocking])
async def test_event_kinds_delivers_only_those_kinds_in_order(
    kind_of_subscriber: type[Only],
) -> None:
    only = kind_of_subscriber(EventKind.TASK_FINISHED, EventKind.ATTEMPT_SUCCEEDED)
    everything = Plain()
    await run(once(3), [only, everything])
    wanted = [
        e
        for e in everything.seen
        if e.kind in (EventKind.TASK_FINISHED, EventKind.ATTEMPT_SUCCEEDED)
    ]
    assert len(wanted) == 6
    assert only.seen == wanted


async def test_kinds_nobody_wants_are_not_delivered_but_counted() -> None:
    only = Only(EventKind.TASK_FINISHED)
    sup = tv.Supervisor(quiet(), subscribers=[only])
    counts = sup.event_counts()
    async with asyncio.timeout(GUARD):
        await sup.run(once(4))
    assert [e.kind for e in only.seen] == [EventKind.TASK_FINISHED] * 4
    assert counts[EventKind.TASK_FINISHED] == 4
    assert counts[EventKind.ATTEMPT_STARTING] == 4  # counted, though nobody wanted it
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
    everything = Plain()
    sup = tv.Supervisor(quiet(), subscribers=[everything])
    async with asyncio.timeout(GUARD):
        async with sup:
            await sup.add(tv.TaskSpec.once("before", noop))
            counts = sup.event_counts()
            assert sum(counts.values()) == 0  # counting starts when first asked for
            await sup.add(tv.TaskSpec.once("after", noop))
            assert counts[EventKind.TASK_ADDED] == 1
            assert counts[EventKind.TASK_REMOVED] == 1
    assert counts[EventKind.ALL_STOPPED_WITHIN_GRACE] == 1
    assert sum(counts.values()) == sum(1 for e in everything.seen if e.task != "before")


async def test_a_filtered_subscriber_capacity_counts_only_its_own_events() -> None:
    # 20 adds in one loop iteration publish 40 events; it wants 20 of them and has room for 20.
    only = Only(EventKind.TASK_ADD_REQUESTED, capacity=20)
    witness = EventRecorder()
    await burst([only, witness], 20)
    assert len(only.seen) == 20
    assert not witness.select(OVERFLOW)
    # and with room for 19, it is the one to overflow
    tight = Only(EventKind.TASK_ADD_REQUESTED, capacity=19)
    witness = EventRecorder()
    await burst([tight, witness], 20)
    assert [e.task for e in tight.seen] == [f"t{i}" for i in range(19)]
    overflows = witness.select(OVERFLOW)
    assert {e.task for e in overflows} == {"Only"}
    assert overflows[0].reason == "full"


def test_on_attach_is_called_once_by_each_supervisor() -> None:
    class Attaching(Plain):
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
    sub = Plain()
    sub.event_kinds = kinds  # type: ignore[assignment]
    with pytest.raises(error, match=match):
        tv.Supervisor(subscribers=[sub])
