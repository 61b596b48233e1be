"""Shutdown: one shared operation that closes admission, stops every task within grace,
force-stops the rest, never hangs, reports once, and drains subscribers (SPEC §3, §4, §7)."""

from __future__ import annotations

import asyncio

import pytest

import taskvisor as tv
from conftest import GUARD, Recorder, SupervisorFactory, forever
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O

FORCED = O.FORCE_ABORTED


def slow_cleanup(name: str, seconds: float = GUARD * 3) -> tv.TaskSpec:
    """Runs until stopped, then needs ``seconds`` (far beyond any grace used here) to clean up."""

    async def body() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(seconds)

    return tv.TaskSpec(name, body)


def stubborn(name: str, release: asyncio.Event, swallowed: list[str]) -> tv.TaskSpec:
    """Swallows every cancellation until ``release`` is set (so the test can end it)."""

    async def body() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                swallowed.append(name)

    return tv.TaskSpec(name, body)


async def started(recorder: Recorder, *names: str) -> None:
    for name in names:
        await recorder.wait_for(K.ATTEMPT_STARTING, task=name)


# --------------------------------------------------------------------------- one operation


async def test_every_caller_gets_the_same_report(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=2.0)
    async with sup:
        sup.add(tv.TaskSpec("w", forever))
        await started(recorder, "w")
        async with asyncio.timeout(GUARD):
            reports = await asyncio.gather(*(sup.shutdown() for _ in range(5)))
            later = await sup.shutdown()
    assert all(r is reports[0] for r in reports)
    assert later is reports[0]
    assert later == tv.ShutdownReport(grace_exceeded=False, stuck=(), grace=2.0)
    assert len(recorder.of(K.SHUTDOWN_REQUESTED)) == 1
    assert len(recorder.of(K.ALL_STOPPED_WITHIN_GRACE)) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shutdown(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()

    async def needs_gate() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await gate.wait()

    await sup.start()
    handle = sup.add(tv.TaskSpec("w", needs_gate))
    await started(recorder, "w")
    first = asyncio.create_task(sup.shutdown())
    await recorder.wait_for(K.TASK_REMOVE_REQUESTED, task="w")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    assert not report.grace_exceeded
    assert handle.outcome is not None
    assert handle.outcome.kind is O.CANCELED


async def test_shutdown_of_an_idle_or_never_started_supervisor(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=0.5)
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    assert report == tv.ShutdownReport(grace_exceeded=False, stuck=(), grace=0.5)
    assert [e.kind for e in recorder.events] == [
        K.SHUTDOWN_REQUESTED,
        K.ALL_STOPPED_WITHIN_GRACE,
    ]


async def test_shutdown_closes_admission(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()

    async def needs_gate() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await gate.wait()

    await sup.start()
    sup.add(tv.TaskSpec("w", needs_gate))
    await started(recorder, "w")
    pending = asyncio.ensure_future(sup.shutdown())
    await recorder.wait_for(K.SHUTDOWN_REQUESTED)
    assert sup.closed
    with pytest.raises(tv.SupervisorClosed):
        sup.add(tv.TaskSpec("late", forever))
    with pytest.raises(tv.SupervisorClosed):
        await sup.run([tv.TaskSpec("late", forever)])
    with pytest.raises(tv.SupervisorClosed):
        await sup.start()
    # Management calls still work while stopping.
    info = sup.get("w")
    assert info is not None
    assert info.state is tv.TaskState.STOPPING
    assert sup.remove("w") is False
    gate.set()
    async with asyncio.timeout(GUARD):
        await pending
    with pytest.raises(tv.SupervisorClosed):
        sup.add(tv.TaskSpec("later", forever))
    assert recorder.of(K.TASK_ADD_REQUESTED, "late") == []


# --------------------------------------------------------------------------- within grace


async def test_every_task_is_asked_to_stop(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=2)
    seen_cancelled: list[str] = []

    async def polite(ctx: tv.TaskContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            assert ctx.is_cancelled()
            seen_cancelled.append(ctx.name)

    await sup.start()
    handles = [sup.add(tv.TaskSpec(f"t{i}", polite)) for i in range(5)]
    await started(recorder, "t0", "t1")
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    assert not report.grace_exceeded
    assert report.stuck == ()
    assert sorted(seen_cancelled) == ["t0", "t1"]  # the others were still waiting for a slot
    # Polite bodies return normally: the attempt succeeded, the task is still CANCELED.
    assert [h.outcome.kind for h in handles if h.outcome] == [O.CANCELED] * 5
    assert len(recorder.of(K.ATTEMPT_SUCCEEDED)) == 2
    assert len(recorder.of(K.TASK_REMOVE_REQUESTED)) == 5
    assert sup.list() == []


# --------------------------------------------------------------------------- grace exceeded


async def test_tasks_still_running_after_grace_are_force_aborted(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=0.2)
    await sup.start()
    slow = sup.add(slow_cleanup("slow"))
    quick = sup.add(tv.TaskSpec("quick", forever))
    await started(recorder, "slow", "quick")
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    assert report == tv.ShutdownReport(grace_exceeded=True, stuck=("slow",), grace=0.2)
    assert slow.outcome is not None
    assert slow.outcome.kind is O.FORCE_ABORTED
    assert quick.outcome is not None
    assert quick.outcome.kind is O.CANCELED
    exceeded = recorder.of(K.GRACE_EXCEEDED)
    assert len(exceeded) == 1
    assert exceeded[0].reason is not None
    assert "slow" in exceeded[0].reason
    assert "quick" not in exceeded[0].reason
    assert recorder.of(K.ALL_STOPPED_WITHIN_GRACE) == []
    assert len(recorder.of(K.SHUTDOWN_REQUESTED)) == 1
    finished = recorder.of(K.TASK_FINISHED, "slow")
    assert [e.outcome for e in finished] == [O.FORCE_ABORTED]


async def test_stuck_names_are_sorted_and_match_the_forced_outcomes(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=0.1)
    await sup.start()
    names = ["zeta", "alpha", "mid", "beta", "omega"]
    handles = [sup.add(slow_cleanup(n)) for n in names]
    handles.append(sup.add(tv.TaskSpec("quick", forever)))
    await started(recorder, *names, "quick")
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    assert report.stuck == tuple(sorted(names))
    assert report.grace_exceeded
    forced = sorted(h.name for h in handles if h.outcome and h.outcome.kind is O.FORCE_ABORTED)
    assert tuple(forced) == report.stuck


async def test_a_body_swallowing_cancellation_forever_never_hangs_shutdown(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=0.1)
    release = asyncio.Event()
    swallowed: list[str] = []
    await sup.start()
    handles = [sup.add(stubborn(n, release, swallowed)) for n in ("s2", "s1")]
    await started(recorder, "s1", "s2")
    try:
        async with asyncio.timeout(GUARD):
            report = await sup.shutdown()
        assert report.stuck == ("s1", "s2")
        assert report.grace_exceeded
        assert [h.outcome.kind for h in handles if h.outcome] == [O.FORCE_ABORTED] * 2
        assert swallowed.count("s1") >= 2  # the stop, then the force
        assert sup.list() == []
        assert not sup.is_alive("s1")
        removed = {e.task for e in recorder.of(K.TASK_REMOVED)}
        assert removed == {"s1", "s2"}
        # The abandoned attempts are still closed by exactly one terminal event each.
        for name in ("s1", "s2"):
            assert [e.kind for e in recorder.of(task=name)][-3:] == [
                K.ATTEMPT_CANCELED,
                K.TASK_FINISHED,
                K.TASK_REMOVED,
            ]
    finally:
        release.set()


async def test_grace_zero_forces_at_once(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=0)
    await sup.start()
    slow = sup.add(slow_cleanup("slow"))
    quick = sup.add(tv.TaskSpec("quick", forever))
    await started(recorder, "slow", "quick")
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    assert report == tv.ShutdownReport(grace_exceeded=True, stuck=("slow",), grace=0.0)
    assert slow.outcome is not None
    assert slow.outcome.kind is O.FORCE_ABORTED
    # A body that stops at the first cancellation is not stuck even with no grace at all.
    assert quick.outcome is not None
    assert quick.outcome.kind is O.CANCELED


async def test_a_task_individually_stopped_beyond_grace_is_forced(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=0.1)
    async with sup:
        by_remove = sup.add(slow_cleanup("by_remove"))
        by_cancel = sup.add(slow_cleanup("by_cancel"))
        await started(recorder, "by_remove", "by_cancel")
        assert sup.remove("by_remove")
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("by_cancel")
            removed = await by_remove
        assert removed.kind is O.FORCE_ABORTED
        assert by_cancel.outcome is not None
        assert by_cancel.outcome.kind is O.FORCE_ABORTED
    assert recorder.of(K.GRACE_EXCEEDED) == []  # the later shutdown had nothing left to wait for


async def test_a_stop_requested_before_shutdown_counts_against_the_shutdown(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    """Every FORCE_ABORTED outcome of a shutdown is reported in ``stuck``."""
    sup = make_supervisor(grace=0.2)
    await sup.start()
    handles = [sup.add(slow_cleanup(f"t{i}")) for i in range(4)]
    await started(recorder, *(f"t{i}" for i in range(4)))
    sup.remove("t0")  # its own grace timer runs out during the shutdown's grace
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    forced = tuple(
        sorted(h.name for h in handles if h.outcome and h.outcome.kind is O.FORCE_ABORTED)
    )
    assert forced == ("t0", "t1", "t2", "t3")
    assert report.stuck == forced
    assert len(recorder.of(K.GRACE_EXCEEDED)) == 1


@pytest.mark.parametrize("attempt", range(5))
async def test_grace_exceeded_agrees_with_the_outcomes(
    make_supervisor: SupervisorFactory, recorder: Recorder, attempt: int
) -> None:
    """The force timer and the shutdown's grace end together: the report must still agree."""
    sup = make_supervisor(grace=0.05)
    await sup.start()
    handles = [sup.add(slow_cleanup(f"t{i}", 0.001 * attempt)) for i in range(6)]
    handles += [sup.add(slow_cleanup(f"late{i}", 0.06)) for i in range(3)]
    await started(recorder, *(h.name for h in handles))
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    forced = tuple(
        sorted(h.name for h in handles if h.outcome and h.outcome.kind is O.FORCE_ABORTED)
    )
    assert report.stuck == forced
    assert report.grace_exceeded == bool(forced)
    assert bool(recorder.of(K.GRACE_EXCEEDED)) == bool(forced)
    assert bool(recorder.of(K.ALL_STOPPED_WITHIN_GRACE)) != bool(forced)


# --------------------------------------------------------------------------- subscribers


async def test_tail_events_reach_subscribers_before_the_drain(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=0.1)
    await sup.start()
    stream = sup.events()
    sup.add(slow_cleanup("slow"))
    sup.add(tv.TaskSpec("quick", forever))
    await started(recorder, "slow", "quick")
    async with asyncio.timeout(GUARD):
        await sup.shutdown()
        streamed = [e async for e in stream]  # ends after the shutdown
    # shutdown() returned after the drain: the recorder already has the tail.
    tail = [e.kind for e in recorder.events[-4:]]
    assert tail[-1] in (K.TASK_REMOVED, K.GRACE_EXCEEDED)
    assert K.GRACE_EXCEEDED in tail
    assert recorder.of(K.TASK_REMOVED)[-1].task == "slow"
    assert [e.seq for e in streamed] == [e.seq for e in recorder.events if e.seq >= streamed[0].seq]
    assert streamed[-1].kind in (K.TASK_REMOVED, K.GRACE_EXCEEDED)


async def test_all_stopped_and_last_removed_reach_every_subscriber(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    other = Recorder("other")
    sup = make_supervisor(subscribers=(other,))
    async with sup:
        sup.add(tv.TaskSpec("w", forever))
        await started(recorder, "w")
    for rec in (recorder, other):
        kinds = [e.kind for e in rec.events]
        assert kinds[-1] is K.ALL_STOPPED_WITHIN_GRACE
        assert kinds.count(K.SHUTDOWN_REQUESTED) == 1
        removed = [e for e in rec.events if e.kind is K.TASK_REMOVED]
        assert [e.task for e in removed] == ["w"]
        assert removed[0].seq > rec.of(K.SHUTDOWN_REQUESTED)[0].seq


async def test_drain_is_bounded_by_subscriber_shutdown_timeout(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    class Stuck(tv.Subscriber):
        async def on_event(self, event: tv.Event) -> None:
            await asyncio.Event().wait()

    sup = make_supervisor(subscribers=(Stuck(),), subscriber_shutdown_timeout=0.05)
    await sup.start()
    handle = sup.add(tv.TaskSpec("w", forever))
    await started(recorder, "w")
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    assert not report.grace_exceeded
    assert handle.outcome is not None
    assert handle.outcome.kind is O.CANCELED
    assert recorder.events[-1].kind is K.ALL_STOPPED_WITHIN_GRACE
