"""Fault injection on the event path: subscribers that raise, block, crawl or overflow.

Whatever a subscriber does, the tasks and the other subscribers must not notice: the same
workload gives exactly the same outcomes, a healthy subscriber next to the faulty one sees
every event in order, nothing storms, and shutdown returns within
``subscriber_shutdown_timeout`` (plus a margin) even when a subscriber never finishes.
Blocking the loop from a sync ``on_event`` is the user's fault (SPEC §7): the blocking case
here uses ``blocking = True`` (its own thread), and slow async subscribers sleep.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory, check_task_events
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O

SUB_TIMEOUT = 0.3
"""``subscriber_shutdown_timeout`` of every supervisor here."""
MARGIN = 1.0
"""Slack on the shutdown bound: the bound is a correctness property, the margin is for load."""


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class Expected:
    kind: O
    attempts: int
    exit_code: int | None = None


EXPECTED = {
    "ok": Expected(O.COMPLETED, 1),
    "flaky": Expected(O.COMPLETED, 3),
    "doomed": Expected(O.FAILED, 3, exit_code=2),
    "fatal": Expected(O.FATAL, 1, exit_code=9),
    "slow": Expected(O.FAILED, 2),
    "periodic": Expected(O.CANCELED, 3),
}


async def run_workload(sup: tv.Supervisor) -> dict[str, tv.TaskOutcome]:
    """Run tasks whose outcomes are known exactly; return them by name."""
    flaky_calls = 0
    ticks = 0
    third_tick = asyncio.Event()

    async def ok() -> None:
        pass

    async def flaky() -> None:
        nonlocal flaky_calls
        flaky_calls += 1
        if flaky_calls < 3:
            raise tv.Fail("not yet")

    async def doomed() -> None:
        raise tv.Fail("never", exit_code=2)

    async def fatal() -> None:
        raise tv.Fatal("broken", exit_code=9)

    async def slow() -> None:
        await asyncio.Event().wait()

    async def periodic(ctx: tv.TaskContext) -> None:
        nonlocal ticks
        ticks += 1
        if ticks == 3:
            third_tick.set()
            await ctx.cancelled()  # the third attempt is the one being cancelled

    handles = [
        sup.add(tv.TaskSpec.once("ok", ok)),
        sup.add(tv.TaskSpec.restartable("flaky", flaky, backoff=FAST)),
        sup.add(tv.TaskSpec.restartable("doomed", doomed, backoff=FAST, max_retries=2)),
        sup.add(tv.TaskSpec.restartable("fatal", fatal, backoff=FAST)),
        sup.add(tv.TaskSpec.restartable("slow", slow, backoff=FAST, timeout=0.01, max_retries=1)),
        sup.add(tv.TaskSpec.periodic("periodic", periodic, every=0.001)),
    ]
    async with asyncio.timeout(GUARD):
        await third_tick.wait()
        assert await sup.cancel("periodic") is True
        outcomes = {h.name: await h for h in handles}
    assert sup.list() == []
    return outcomes


def assert_exact(outcomes: dict[str, tv.TaskOutcome]) -> None:
    got = {name: Expected(o.kind, o.attempts, o.exit_code) for name, o in outcomes.items()}
    assert got == EXPECTED


def assert_saw_everything(recorder: Recorder) -> None:
    """The healthy subscriber lost nothing and saw every task's events in SPEC §6 order."""
    assert not [e for e in recorder.of(K.SUBSCRIBER_OVERFLOW) if e.task == recorder.name]
    assert check_task_events(recorder.events) == len(EXPECTED)
    finished = {e.task: e.outcome for e in recorder.of(K.TASK_FINISHED)}
    assert finished == {name: exp.kind for name, exp in EXPECTED.items()}


async def timed_shutdown(sup: tv.Supervisor) -> tuple[tv.ShutdownReport, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    took = loop.time() - started
    # Every task has finished: no grace is spent; draining shares one deadline (plus the
    # short wait after cancelling workers that outlive it).
    assert took <= SUB_TIMEOUT + 0.1 + MARGIN, f"shutdown took {took:.3f}s"
    return report, took


# --------------------------------------------------------------------------- faulty subscribers


class Boom(BaseException):
    """Not an ``Exception``: a subscriber raising it is still only a broken subscriber."""


class RaisesAlways(tv.Subscriber):
    """Raises on every event, diagnostics included."""

    def __init__(self) -> None:
        self.calls = 0

    def on_event(self, event: tv.Event) -> None:
        self.calls += 1
        raise RuntimeError(f"cannot handle {event.kind}")


class AsyncRaisesAlways(tv.Subscriber):
    def __init__(self) -> None:
        self.calls = 0

    async def on_event(self, event: tv.Event) -> None:
        self.calls += 1
        await asyncio.sleep(0)
        raise RuntimeError("async failure")


class RaisesCancelled(tv.Subscriber):
    """Lets a ``CancelledError`` of its own escape: a bug like any other."""

    def __init__(self) -> None:
        self.calls = 0

    async def on_event(self, event: tv.Event) -> None:
        self.calls += 1
        raise asyncio.CancelledError


class RaisesBaseException(tv.Subscriber):
    def __init__(self) -> None:
        self.calls = 0

    def on_event(self, event: tv.Event) -> None:
        self.calls += 1
        raise Boom("not an Exception")


class StuckThread(tv.Subscriber):
    """A ``blocking`` subscriber whose thread blocks (for seconds) until the test releases it."""

    blocking = True

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def on_event(self, event: tv.Event) -> None:
        self.calls += 1
        self.gate.wait(10)

    def release(self) -> None:
        self.gate.set()


class RaisesInThread(tv.Subscriber):
    blocking = True

    def __init__(self) -> None:
        self.calls = 0

    def on_event(self, event: tv.Event) -> None:
        self.calls += 1
        raise RuntimeError("thread failure")


class SlowAsync(tv.Subscriber):
    """Takes a second per event."""

    def __init__(self) -> None:
        self.calls = 0

    async def on_event(self, event: tv.Event) -> None:
        self.calls += 1
        await asyncio.sleep(1)


class TinyQueue(tv.Subscriber):
    """Queue of one, and slow: most events overflow."""

    queue_capacity = 1

    def __init__(self) -> None:
        self.calls = 0

    async def on_event(self, event: tv.Event) -> None:
        self.calls += 1
        await asyncio.sleep(0.01)


class IgnoresCancellation(tv.Subscriber):
    """Swallows the cancellation of its worker at shutdown, until the test releases it."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.calls = 0

    async def on_event(self, event: tv.Event) -> None:
        self.calls += 1
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                continue

    def release(self) -> None:
        self.released.set()


Factory = Callable[[], tv.Subscriber]


FAULTS: list[tuple[str, Factory]] = [
    ("raises", RaisesAlways),
    ("async-raises", AsyncRaisesAlways),
    ("raises-cancelled", RaisesCancelled),
    ("raises-base-exception", RaisesBaseException),
    ("thread-raises", RaisesInThread),
    ("thread-stuck", StuckThread),
    ("slow-async", SlowAsync),
    ("queue-of-one", TinyQueue),
    ("ignores-cancellation", IgnoresCancellation),
]


def release(sub: object) -> None:
    rel = getattr(sub, "release", None)
    if rel is not None:
        rel()


# --------------------------------------------------------------------------- tests


async def test_baseline_without_faults(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    """The workload's outcomes, with only the healthy subscriber (the reference)."""
    sup = make_supervisor(subscriber_shutdown_timeout=SUB_TIMEOUT)
    assert_exact(await run_workload(sup))
    report, _ = await timed_shutdown(sup)
    assert not report.grace_exceeded
    assert_saw_everything(recorder)


@pytest.mark.parametrize(("fault", "factory"), FAULTS, ids=[f for f, _ in FAULTS])
async def test_one_faulty_subscriber_changes_nothing(
    make_supervisor: SupervisorFactory, recorder: Recorder, fault: str, factory: Factory
) -> None:
    """Same outcomes, a healthy neighbour that sees everything, a bounded shutdown."""
    faulty = factory()
    sup = make_supervisor(subscribers=(faulty,), subscriber_shutdown_timeout=SUB_TIMEOUT)
    try:
        assert_exact(await run_workload(sup))
        report, _ = await timed_shutdown(sup)
    finally:
        release(faulty)
    assert not report.grace_exceeded
    assert_saw_everything(recorder)
    kinds = [e.kind for e in recorder.events]
    assert kinds.count(K.SHUTDOWN_REQUESTED) == 1
    assert kinds.count(K.ALL_STOPPED_WITHIN_GRACE) == 1
    assert getattr(faulty, "calls", 0) >= 1


@pytest.mark.parametrize(
    "factory",
    [RaisesAlways, AsyncRaisesAlways, RaisesCancelled, RaisesBaseException, RaisesInThread],
    ids=["sync", "async", "cancelled-error", "base-exception", "thread"],
)
async def test_a_subscriber_that_raises_is_reported_once_per_event_and_keeps_going(
    make_supervisor: SupervisorFactory, recorder: Recorder, factory: Factory
) -> None:
    """One SUBSCRIBER_PANICKED per ordinary event it failed on: its worker survives every
    failure, and failing on the panic events themselves starts no storm."""
    faulty = factory()
    sup = make_supervisor(subscribers=(faulty,), subscriber_shutdown_timeout=SUB_TIMEOUT)
    assert_exact(await run_workload(sup))
    # Every ordinary event published so far reaches the faulty subscriber and fails there.
    published = len([e for e in recorder.events if not e.is_diagnostic])
    await recorder.wait_for(K.SUBSCRIBER_PANICKED, task=faulty.name, count=published)
    panics = recorder.of(K.SUBSCRIBER_PANICKED)
    assert {e.task for e in panics} == {faulty.name}
    assert all(e.reason for e in panics)
    assert not recorder.of(K.SUBSCRIBER_OVERFLOW), "the worker died: its queue reports closed"
    await timed_shutdown(sup)
    # Bounded: at most one panic per ordinary event it was offered (shutdown's two included).
    ordinary = [e for e in recorder.events if not e.is_diagnostic]
    assert len(recorder.of(K.SUBSCRIBER_PANICKED)) <= len(ordinary)
    assert getattr(faulty, "calls", 0) >= published


async def test_a_stuck_thread_subscriber_never_blocks_publishing_or_shutdown(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    """Its thread is stuck on the first event for the whole test: tasks run, the healthy
    subscriber sees everything, shutdown gives up on it after the shared deadline."""
    stuck = StuckThread()
    sup = make_supervisor(subscribers=(stuck,), subscriber_shutdown_timeout=SUB_TIMEOUT)
    try:
        assert_exact(await run_workload(sup))
        assert stuck.calls == 1
        report, took = await timed_shutdown(sup)
        assert took >= SUB_TIMEOUT * 0.9, "shutdown must give the stuck subscriber its deadline"
        assert stuck.calls == 1
    finally:
        stuck.release()
    assert not report.grace_exceeded
    assert_saw_everything(recorder)


async def test_events_left_after_the_drain_deadline_are_dropped_even_in_a_thread(
    make_supervisor: SupervisorFactory,
) -> None:
    """SPEC §7: what is left at the deadline is dropped. A ``blocking`` subscriber that was
    stuck past the deadline gets no further event once it wakes up after shutdown."""
    stuck = StuckThread()
    sup = make_supervisor(subscribers=(stuck,), subscriber_shutdown_timeout=SUB_TIMEOUT)
    try:
        assert_exact(await run_workload(sup))
        await timed_shutdown(sup)
        calls_at_shutdown = stuck.calls
    finally:
        stuck.release()
    # The released thread finishes its call; it must then stop, not deliver what was queued.
    threads = [t for t in threading.enumerate() if t.name.startswith(f"taskvisor-{stuck.name}")]
    assert threads, "the subscriber's thread"
    for t in threads:
        await asyncio.to_thread(t.join, GUARD)
        assert not t.is_alive()
    assert stuck.calls == calls_at_shutdown


async def test_queue_of_one_overflows_for_itself_only(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    tiny = TinyQueue()
    sup = make_supervisor(subscribers=(tiny,), subscriber_shutdown_timeout=SUB_TIMEOUT)
    assert_exact(await run_workload(sup))
    await timed_shutdown(sup)
    overflows = recorder.of(K.SUBSCRIBER_OVERFLOW)
    assert overflows, "a queue of one behind a slow consumer must overflow"
    assert {e.task for e in overflows} == {tiny.name}
    assert {e.reason for e in overflows} <= {"full", "recovered", "closed"}
    assert_saw_everything(recorder)
    assert tiny.calls <= len([e for e in recorder.events if not e.is_diagnostic])


async def test_every_fault_at_once(make_supervisor: SupervisorFactory, recorder: Recorder) -> None:
    """All the faulty subscribers together, plus an ``events()`` stream nobody reads."""
    faulty = [factory() for _, factory in FAULTS]
    sup = make_supervisor(subscribers=tuple(faulty), subscriber_shutdown_timeout=SUB_TIMEOUT)
    unread = sup.events(capacity=1)
    try:
        assert_exact(await run_workload(sup))
        report, _ = await timed_shutdown(sup)
    finally:
        for sub in faulty:
            release(sub)
    assert not report.grace_exceeded
    assert_saw_everything(recorder)
    # The unread stream kept the first event and overflowed after it; read at last, it hands
    # that event out, then the end of its overflow episode (what it lost); it ends after
    # shutdown.
    async with asyncio.timeout(GUARD):
        left = [e async for e in unread]
    assert len(left) == 2
    assert left[0].kind is K.TASK_ADD_REQUESTED
    assert (left[1].kind, left[1].task, left[1].reason) == (
        K.SUBSCRIBER_OVERFLOW,
        "events",
        "recovered",
    )
    assert left[1].dropped is not None
    assert left[1].dropped >= 1


async def test_slow_subscribers_do_not_delay_tasks_with_many_events(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    """A burst of tasks with a subscriber taking a second per event: every task still finishes
    at its own pace (the outcomes resolve long before the slow subscriber could have read
    the events), and shutdown still keeps its deadline."""
    slow = SlowAsync()
    sup = make_supervisor(subscribers=(slow,), subscriber_shutdown_timeout=SUB_TIMEOUT)

    async def ok() -> None:
        pass

    handles = [sup.add(tv.TaskSpec.once(f"t{i}", ok)) for i in range(200)]
    async with asyncio.timeout(GUARD):
        outcomes = [await h for h in handles]
    assert all(o.kind is O.COMPLETED for o in outcomes)
    await timed_shutdown(sup)
    assert check_task_events(recorder.events) == 200


STUCK_FOREVER = """
import asyncio, threading
import taskvisor as tv

class Stuck(tv.Subscriber):
    blocking = True

    def on_event(self, event):
        threading.Event().wait()  # never returns

async def main():
    config = tv.SupervisorConfig(grace=0.1, subscriber_shutdown_timeout=0.2, handle_signals=False)
    async def ok():
        pass
    async with tv.Supervisor(config, subscribers=[Stuck()]) as sup:
        print((await sup.add(tv.TaskSpec.once("ok", ok))).kind.value, flush=True)
    print("shut down", flush=True)

asyncio.run(main())
"""


def test_a_subscriber_thread_stuck_forever_does_not_keep_the_process_alive() -> None:
    """Python cannot kill the thread, but the process still exits once ``main`` returns."""
    proc = subprocess.run(
        [sys.executable, "-c", STUCK_FOREVER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["completed", "shut", "down"]
