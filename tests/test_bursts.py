"""Events under bursts (SPEC §14): overflow reported per episode, and batches that do not drown
their subscribers.

An *overflow episode* of a subscriber starts with its first dropped event and ends when its
queue has been drained empty: the first drop publishes one ``SUBSCRIBER_OVERFLOW`` (reason
``full``, ``dropped=None``), further drops publish nothing, and the end publishes one
``SUBSCRIBER_OVERFLOW`` (reason ``recovered``, ``dropped`` = the episode's total), delivered to
that subscriber too. So, once its episodes are over, a subscriber has received every published
event but the sum of its ``recovered`` counts.

Everything goes through a real ``Supervisor``; a witness ``EventRecorder`` with a capacity no
burst here can fill sees every published event. Waits are on events, handles and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import taskvisor as tv
from conftest import GUARD
from taskvisor import Event, EventKind, Subscriber
from taskvisor.subscribers import LogSubscriber
from taskvisor.testing import EventRecorder

OVERFLOW = EventKind.SUBSCRIBER_OVERFLOW
PER_TASK = 6
CLOSING = 2
BIG = 1 << 20
"""A witness's capacity: far more than any burst here publishes in one loop iteration."""

_NO_FIELD = object()


def dropped(event: Event) -> int | None:
    """``event.dropped`` (SPEC §14), failing clearly where the field does not exist yet."""
    value: Any = getattr(event, "dropped", _NO_FIELD)
    assert value is not _NO_FIELD, "Event has no field `dropped` (SPEC §14)"
    assert value is None or isinstance(value, int)
    return value


def quiet(**config: Any) -> tv.SupervisorConfig:
    config.setdefault("handle_signals", False)
    config.setdefault("grace", 5.0)
    return tv.SupervisorConfig(**config)


async def noop() -> None:
    pass


def once(n: int, prefix: str = "t") -> list[tv.TaskSpec]:
    return [tv.TaskSpec.once(f"{prefix}{i}", noop) for i in range(n)]


async def wait_for(
    recorder: EventRecorder,
    kind: EventKind,
    *,
    task: str | None = None,
    where: Callable[[Event], bool] | None = None,
    count: int = 1,
    timeout: float = GUARD,
) -> Event:
    """``recorder.wait_for``, failing with a summary instead of every recorded kind (a burst
    records tens of thousands)."""
    try:
        return await recorder.wait_for(kind, task=task, where=where, count=count, timeout=timeout)
    except TimeoutError:
        pass  # failed below, outside the handler: the recorder's own message is huge here
    seen = len(recorder.select(kind, task=task, where=where))
    overflows = Counter((e.task, e.reason) for e in recorder.select(OVERFLOW))
    pytest.fail(
        f"{recorder.name}: no {kind.value} #{count} (task={task}) within {timeout}s; "
        f"{seen} matching, {len(recorder)} events in all; overflow reports: "
        f"{dict(overflows.most_common(6))}"
    )


def reports(witness: EventRecorder, name: str) -> list[Event]:
    """Every overflow report about subscriber ``name``, in publish order."""
    return witness.select(OVERFLOW, task=name)


def full(event: Event) -> bool:
    return event.kind is OVERFLOW and event.reason == "full"


def recovered(event: Event) -> bool:
    return event.kind is OVERFLOW and event.reason == "recovered"


def check_episodes(about: list[Event]) -> list[int]:
    """Assert the reports about one subscriber alternate full, recovered, full, ...; each full
    without a count, each recovered with one >= 1. Return the recovered counts."""
    assert about, "no overflow report at all"
    summary = f"{len(about)} reports, reasons {Counter(r.reason for r in about)}"
    counts = []
    for i, e in enumerate(about):
        if i % 2 == 0:
            assert e.reason == "full", summary
            assert dropped(e) is None
        else:
            assert e.reason == "recovered", summary
            n = dropped(e)
            assert n is not None
            assert n >= 1
            counts.append(n)
    return counts


async def episodes_over(witness: EventRecorder, name: str) -> None:
    """Wait until every episode of ``name`` that has begun has been reported recovered.

    Call it once nothing else is being published: the only events still to come are then the
    ``recovered`` reports themselves (which start no new episode).
    """
    while True:
        began = len(witness.select(OVERFLOW, task=name, where=full))
        if not began:
            return
        await wait_for(witness, OVERFLOW, task=name, where=recovered, count=began, timeout=GUARD)
        if len(witness.select(OVERFLOW, task=name, where=full)) == began:
            return


class Gated(EventRecorder):
    """An async subscriber that holds each event until ``gate`` opens, then records it."""

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__()
        self.queue_capacity = capacity
        self._name = name
        self.gate = asyncio.Event()

    @property
    def name(self) -> str:
        return self._name

    async def on_event(self, event: Event) -> None:  # type: ignore[override]
        await self.gate.wait()
        super().on_event(event)


class Plain(Subscriber):
    """A plain sync subscriber at the default capacity."""

    def __init__(self) -> None:
        self.seen: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.seen.append(event)


class Quick(Subscriber):
    """An async subscriber that never blocks, at the default capacity."""

    def __init__(self) -> None:
        self.seen: list[Event] = []

    async def on_event(self, event: Event) -> None:
        self.seen.append(event)


# ---------------------------------------------------------------- one report per episode


async def test_an_episode_is_reported_once_when_it_begins_and_once_when_it_ends() -> None:
    small, witness = Gated("small", capacity=4), EventRecorder(capacity=BIG)
    sup = tv.Supervisor(quiet(), subscribers=[small, witness])
    async with asyncio.timeout(GUARD):
        async with sup:
            for h in [sup.add(s) for s in once(10)]:  # 60 events for a queue of 4: drops
                await h
            await wait_for(witness, EventKind.TASK_REMOVED, count=10)
            # During the episode: one report, at its first drop, however many were dropped.
            (began,) = reports(witness, "small")
            assert began.reason == "full"
            assert dropped(began) is None
            small.gate.set()  # it drains its queue: the episode ends
            end = await wait_for(witness, OVERFLOW, task="small", where=recovered)
            # delivered to the subscriber itself too
            await wait_for(small, OVERFLOW, task="small", where=recovered)
            published = len(witness.events)  # nothing else is published meanwhile
            assert reports(witness, "small") == [began, end]
            n = dropped(end)
            assert n is not None
            assert n >= 1
            # Every event published so far reached it, but the n dropped ones.
            assert len(small.events) + n == published
            assert began in witness.events[: witness.events.index(end)]
    # After the episode: room again, so the closing events reached it too.
    assert reports(witness, "small") == [began, end]
    assert len(small.events) + n == len(witness.events)
    assert small.events[-1].kind is EventKind.ALL_STOPPED_WITHIN_GRACE


async def test_each_episode_is_reported_on_its_own() -> None:
    small, witness = Gated("small", capacity=4), EventRecorder(capacity=BIG)
    sup = tv.Supervisor(quiet(), subscribers=[small, witness])
    async with asyncio.timeout(GUARD):
        async with sup:
            for episode in range(3):
                small.gate.clear()
                for h in [sup.add(s) for s in once(5, f"e{episode}-")]:
                    await h
                await wait_for(witness, EventKind.TASK_REMOVED, task=f"e{episode}-4")
                assert len(witness.select(OVERFLOW, task="small", where=full)) == episode + 1
                small.gate.set()
                await wait_for(witness, OVERFLOW, where=recovered, count=episode + 1)
                await wait_for(small, OVERFLOW, where=recovered, count=episode + 1)
    counts = check_episodes(reports(witness, "small"))
    assert len(counts) == 3
    assert len(small.events) + sum(counts) == len(witness.events)


async def test_other_subscribers_get_every_event_and_the_reports() -> None:
    small, fast = Gated("small", capacity=2), EventRecorder(capacity=BIG)
    plain = Plain()
    sup = tv.Supervisor(quiet(), subscribers=[small, fast, plain])
    async with asyncio.timeout(GUARD):
        async with sup:
            for h in [sup.add(s) for s in once(8)]:
                await h
            await wait_for(fast, EventKind.TASK_REMOVED, count=8)
            small.gate.set()
            await wait_for(fast, OVERFLOW, task="small", where=recovered)
    assert plain.seen == fast.events
    assert [e.task for e in fast.select(OVERFLOW)] == ["small", "small"]
    assert len([e for e in fast.events if not e.is_diagnostic]) == 8 * PER_TASK + CLOSING


async def test_a_subscriber_that_never_recovers_is_reported_once() -> None:
    # Stuck for good: one `full` at its first drop, nothing more while it stays stuck, no
    # `recovered` (its queue never drained), and, cut at the drain deadline, `closed` once at
    # most. Another subscriber raising on everything adds diagnostics: they start no reports.
    stuck, witness = Gated("stuck", capacity=1), EventRecorder(capacity=BIG)

    def raising(event: Event) -> None:
        raise RuntimeError("boom")

    sup = tv.Supervisor(
        quiet(subscriber_shutdown_timeout=0.05), subscribers=[stuck, raising, witness]
    )
    async with asyncio.timeout(GUARD):
        async with sup:
            for h in [sup.add(s) for s in once(20)]:
                await h
    about = reports(witness, "stuck")
    assert about[0].reason == "full"
    assert dropped(about[0]) is None
    assert [e.reason for e in about[1:]] in ([], ["closed"])
    assert stuck.events == []


# ---------------------------------------------------------------- bursts and batches


async def test_ten_thousand_synchronous_adds_drop_and_report_per_episode() -> None:
    plain, witness = Plain(), EventRecorder(capacity=BIG)
    sup = tv.Supervisor(quiet(), subscribers=[plain, witness])
    n = 10_000
    async with asyncio.timeout(GUARD * 6):
        async with sup:
            handles = [sup.add(s) for s in once(n)]  # one loop iteration: 20,000 events
            for h in handles:
                assert (await h).ok
            await wait_for(witness, EventKind.TASK_REMOVED, count=n, timeout=GUARD * 3)
            await episodes_over(witness, "Plain")
            published = len(witness.events)
            counts = check_episodes(reports(witness, "Plain"))
            assert len(plain.seen) + sum(counts) == published
    assert sum(counts) > 0
    # An episode needs a full queue: never more episodes than published / capacity.
    assert len(counts) <= published // Subscriber.queue_capacity
    assert len(plain.seen) + sum(counts) == len(witness.events)
    assert not reports(witness, "EventRecorder")


async def test_a_run_of_5000_tasks_reaches_every_subscriber_that_keeps_up() -> None:
    class CountingHandler(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.count = 0

        def emit(self, record: logging.LogRecord) -> None:
            self.count += 1

    logger = logging.getLogger("taskvisor.test_bursts")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = CountingHandler()
    logger.addHandler(handler)
    plain, quick, witness = Plain(), Quick(), EventRecorder(capacity=BIG)
    log = LogSubscriber(logger)
    sup = tv.Supervisor(quiet(), subscribers=[plain, quick, log, witness])
    n = 5_000
    try:
        async with asyncio.timeout(GUARD * 6):
            await sup.run(once(n))
    finally:
        logger.removeHandler(handler)
    total = n * PER_TASK + CLOSING
    assert not witness.select(OVERFLOW)  # no drop at all, so no report
    assert len(witness.events) == total
    assert plain.seen == witness.events
    assert quick.seen == witness.events
    assert handler.count == total  # the LogSubscriber logged every one of them


async def test_a_batch_at_the_default_capacity_loses_nothing_for_a_single_subscriber() -> None:
    plain = Plain()
    sup = tv.Supervisor(quiet(), subscribers=[plain])
    async with asyncio.timeout(GUARD * 6):
        await sup.run(once(3_000))
    assert not [e for e in plain.seen if e.is_diagnostic]
    assert len(plain.seen) == 3_000 * PER_TASK + CLOSING
