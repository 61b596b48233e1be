"""``await sup.restart(id_or_name)``: the current attempt stops as ``cancel`` would stop it and
the next one starts at once, in the same task (SPEC §13, 13.1.6)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory, forever
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O
from taskvisor import TaskState as S

LONG = GUARD * 6
"""An interval or delay no test waits out."""


def attempt_kinds(recorder: Recorder, name: str) -> list[tuple[str, int | None]]:
    """The task's attempt and backoff events as (kind, attempt)."""
    wanted = {
        K.ATTEMPT_STARTING,
        K.ATTEMPT_SUCCEEDED,
        K.ATTEMPT_FAILED,
        K.ATTEMPT_TIMED_OUT,
        K.ATTEMPT_CANCELED,
        K.BACKOFF_SCHEDULED,
    }
    return [(e.kind.value, e.attempt) for e in recorder.of(task=name) if e.kind in wanted]


async def test_restart_of_a_running_task_starts_its_next_attempt_in_the_same_task(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    seen: list[tuple[int, int, str]] = []

    async def body(ctx: tv.TaskContext) -> None:
        seen.append((ctx.id, ctx.attempt, "start"))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append((ctx.id, ctx.attempt, "cancelled"))
            raise

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec("w", body))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="w")
        counts = sup.event_counts()
        before = counts[K.ATTEMPT_STARTING]
        assert await sup.restart("w") is True
        # True once the new attempt has published ATTEMPT_STARTING: it has, already.
        assert counts[K.ATTEMPT_STARTING] == before + 1
        got = sup.get(handle.id)
        assert got is not None
        assert (got.id, got.name, got.state, got.attempt) == (handle.id, "w", S.RUNNING, 2)
        # Neither a failure nor a restart (SPEC §10.3).
        assert (got.restarts, got.last_error) == (0, None)
        assert not handle.done()
        await recorder.wait_for(K.ATTEMPT_STARTING, task="w", attempt=2)
        assert seen[:2] == [(handle.id, 1, "start"), (handle.id, 1, "cancelled")]
        assert await sup.restart(handle.id) is True  # by id too
        await recorder.wait_for(K.ATTEMPT_STARTING, task="w", attempt=3)
        assert recorder.of(K.TASK_REMOVE_REQUESTED, "w") == []  # a restart is no stop
    assert attempt_kinds(recorder, "w")[:5] == [
        ("attempt_starting", 1),
        ("attempt_canceled", 1),
        ("attempt_starting", 2),
        ("attempt_canceled", 2),
        ("attempt_starting", 3),
    ]
    assert len(recorder.of(K.TASK_ADDED, "w")) == 1
    outcome = handle.outcome
    assert outcome is not None
    assert (outcome.kind, outcome.attempts) == (O.CANCELED, 3)


async def test_restart_leaves_the_failure_streak_as_it_was(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # max_retries=1: attempt 1 fails (streak 1); attempt 2 is restarted (no failure);
    # attempt 3 fails: streak 2 > 1, the budget is spent.
    async def body(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 2:
            await asyncio.Event().wait()
        raise tv.Fail(f"no {ctx.attempt}")

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.restartable("t", body, backoff=FAST, max_retries=1))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t", attempt=2)
        assert await sup.restart("t")
        outcome = await handle
    assert (outcome.kind, outcome.attempts, outcome.reason) == (O.FAILED, 3, "no 3")
    assert recorder.of(K.ATTEMPT_CANCELED, "t")[0].attempt == 2


async def test_restart_ends_a_backoff_wait_at_once(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def body(ctx: tv.TaskContext) -> None:
        raise tv.Fail(f"no {ctx.attempt}")

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(
            tv.TaskSpec.restartable(
                "t", body, backoff=tv.BackoffPolicy.constant(LONG), max_retries=1
            )
        )
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="t")
        backing_off = sup.get("t")
        assert backing_off is not None
        assert backing_off.state is S.BACKOFF
        assert await sup.restart("t") is True
        # The streak is unchanged: attempt 2's failure spends the budget of one retry.
        outcome = await handle
    assert (outcome.kind, outcome.attempts, outcome.reason) == (O.FAILED, 2, "no 2")
    assert attempt_kinds(recorder, "t") == [
        ("attempt_starting", 1),
        ("attempt_failed", 1),
        ("backoff_scheduled", 1),
        ("attempt_starting", 2),  # no attempt ran: nothing was cancelled
        ("attempt_failed", 2),
    ]
    assert recorder.of(K.TASK_REMOVE_REQUESTED, "t") == []


async def test_restart_ends_a_scheduled_wait_at_once(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def body(ctx: tv.TaskContext) -> int:
        return ctx.attempt

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.periodic("p", body, LONG))
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p")
        assert await sup.restart("p") is True
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", count=2)
        got = sup.get("p")
        assert got is not None
        assert (got.state, got.attempt, got.restarts) == (S.SCHEDULED, 2, 0)
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert (outcome.kind, outcome.result) == (O.CANCELED, 2)


async def test_restart_ends_a_first_delay_at_once(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec.periodic("p", forever, LONG, first_delay=LONG))
        for _ in range(1000):  # the runner's first step enters the wait: no event for it
            got = sup.get("p")
            if got is not None and got.state is S.SCHEDULED:
                break
            await asyncio.sleep(0.001)
        assert await sup.restart("p") is True
        got = sup.get("p")
        assert got is not None
        assert (got.state, got.attempt) == (S.RUNNING, 1)
    assert recorder.of(K.ATTEMPT_CANCELED, "p")[0].attempt == 1  # by the shutdown


async def test_restart_refuses_a_task_waiting_for_a_concurrency_slot(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1)
    async with asyncio.timeout(GUARD), sup:
        holder = sup.add(tv.TaskSpec("holder", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="holder")
        waiter = sup.add(tv.TaskSpec("waiter", forever))
        assert await sup.restart("waiter") is False  # before its runner's first step
        for _ in range(3):  # ... and after it, whatever the loop did meanwhile
            await asyncio.sleep(0.001)
            assert await sup.restart("waiter") is False
        got = sup.get("waiter")
        assert got is not None
        assert (got.state, got.attempt) == (S.WAITING, 0)
        assert recorder.of(task="waiter")[-1].kind is K.TASK_ADDED  # nothing happened
        # Once it runs, it can be restarted.
        await holder.cancel()
        await recorder.wait_for(K.ATTEMPT_STARTING, task="waiter")
        assert await sup.restart(waiter.id) is True


async def test_restart_refuses_a_stopping_task(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    release = asyncio.Event()

    async def body() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec("t", body))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        assert sup.remove("t")
        got = sup.get("t")
        assert got is not None
        assert got.state is S.STOPPING
        assert await sup.restart("t") is False
        release.set()
        outcome = await handle
    assert (outcome.kind, outcome.attempts) == (O.CANCELED, 1)
    assert len(recorder.of(K.ATTEMPT_STARTING, "t")) == 1


async def test_restart_refuses_unknown_and_finished_tasks(
    make_supervisor: SupervisorFactory,
) -> None:
    async def quick() -> None:
        pass

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        assert await sup.restart("nobody") is False
        assert await sup.restart(10**9) is False
        handle = sup.add(tv.TaskSpec.once("done", quick))
        assert (await handle).ok
        assert await sup.restart("done") is False
        assert await sup.restart(handle.id) is False
        with pytest.raises(TypeError):
            await sup.restart(1.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await sup.restart(True)


async def test_restart_of_a_body_that_returns_on_its_cancellation(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # The body swallows the cancellation and returns: as under a stop (SPEC §4), its attempt
    # reports ATTEMPT_SUCCEEDED; the restart happens all the same, even under ``once``.
    async def body(ctx: tv.TaskContext) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return f"interrupted {ctx.attempt}"
        return "never"

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.once("t", body))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        assert await sup.restart("t") is True
        got = sup.get("t")
        assert got is not None
        assert (got.state, got.attempt) == (S.RUNNING, 2)
        assert not handle.done()
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert (outcome.kind, outcome.attempts, outcome.result) == (O.CANCELED, 2, "interrupted 2")
    assert attempt_kinds(recorder, "t") == [
        ("attempt_starting", 1),
        ("attempt_succeeded", 1),
        ("attempt_starting", 2),
        ("attempt_succeeded", 2),
    ]


async def test_the_next_attempts_timeout_still_works_after_a_restart(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.restartable("t", forever, timeout=0.2, max_retries=0))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        assert await sup.restart("t")
        outcome = await handle
    assert (outcome.kind, outcome.attempts) == (O.FAILED, 2)
    assert recorder.of(K.ATTEMPT_TIMED_OUT, "t")[0].attempt == 2


async def test_restart_racing_cancel_one_stop_wins(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        first = sup.add(tv.TaskSpec("a", forever))
        second = sup.add(tv.TaskSpec("b", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
        await recorder.wait_for(K.ATTEMPT_STARTING, task="b")
        # restart first, cancel right after (before the new attempt could start) ...
        restarted, cancelled = await asyncio.gather(sup.restart("a"), sup.cancel("a"))
        # ... and the other way round.
        cancelled_b, restarted_b = await asyncio.gather(sup.cancel("b"), sup.restart("b"))
    assert (restarted, cancelled) == (False, True)
    assert (cancelled_b, restarted_b) == (True, False)
    for handle in (first, second):
        outcome = handle.outcome
        assert outcome is not None
        assert (outcome.kind, outcome.attempts) == (O.CANCELED, 1)
        assert attempt_kinds(recorder, handle.name) == [
            ("attempt_starting", 1),
            ("attempt_canceled", 1),
        ]


async def test_a_stop_during_a_restarted_attempt_is_an_ordinary_stop(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec("a", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
        assert await sup.restart("a")
        assert await sup.cancel("a") is True
    outcome = handle.outcome
    assert outcome is not None
    assert (outcome.kind, outcome.attempts) == (O.CANCELED, 2)


async def test_concurrent_restarts_start_one_new_attempt(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec("a", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
        results = await asyncio.gather(*(sup.restart("a") for _ in range(3)))
        got = sup.get("a")
        assert got is not None
        assert got.attempt == 2
    assert results == [True, True, True]
    assert len(recorder.of(K.ATTEMPT_CANCELED, "a")) == 2  # attempt 1, then 2 at shutdown


async def test_restart_waiting_for_the_slot_it_gave_back(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # With max_concurrent=1 the restarted task waits for the slot like any attempt; restart()
    # returns once the new attempt has started.
    sup = make_supervisor(max_concurrent=1)
    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec("a", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
        assert await sup.restart("a") is True
        got = sup.get("a")
        assert got is not None
        assert (got.state, got.attempt) == (S.RUNNING, 2)


async def test_a_restart_pending_when_the_task_is_stopped_returns_false(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # The slot goes to someone else first; the restarted task is then removed while it waits.
    sup = make_supervisor(max_concurrent=1)
    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec("a", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
        sup.add(tv.TaskSpec("b", forever))  # waits for the slot, ahead of a's next attempt
        pending = asyncio.create_task(sup.restart("a"))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="b")
        assert not pending.done()
        waiting = sup.get("a")
        assert waiting is not None
        assert waiting.state is S.WAITING
        assert sup.remove("a")
        assert await pending is False


async def test_restart_of_a_body_that_swallows_its_cancellation_forces_it_after_grace(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # "As cancel would": the attempt gets the grace period, then it is cancelled again.
    swallowed: list[int] = []

    async def body(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed.append(ctx.attempt)
        await asyncio.Event().wait()  # goes on after the first cancellation

    sup = make_supervisor(grace=0.02)
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(
            tv.TaskSpec("t", body, timeout=0.5, backoff=tv.BackoffPolicy.constant(LONG))
        )
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        assert await sup.restart("t") is True
        got = sup.get("t")
        assert got is not None
        assert (got.state, got.attempt, got.restarts) == (S.RUNNING, 2, 0)
        assert swallowed == [1]
        assert not handle.done()
        # The two cancellations of attempt 1 leave the next attempt's timeout intact.
        await recorder.wait_for(K.ATTEMPT_TIMED_OUT, task="t", attempt=2)
    assert attempt_kinds(recorder, "t")[:4] == [
        ("attempt_starting", 1),
        ("attempt_canceled", 1),
        ("attempt_starting", 2),
        ("attempt_timed_out", 2),
    ]


async def test_restart_of_a_body_that_cannot_be_stopped_gives_up_on_it(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # It swallows every cancellation: like cancel(), the supervisor stops waiting for it
    # (SPEC §4: never hangs), resolves it FORCE_ABORTED, and the restart did not happen.
    release = asyncio.Event()

    async def body() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    sup = make_supervisor(grace=0.02)
    try:
        async with asyncio.timeout(GUARD), sup:
            handle = sup.add(tv.TaskSpec("t", body))
            await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
            assert await sup.restart("t") is False
            outcome = await handle
            assert outcome.kind is O.FORCE_ABORTED
            assert sup.get("t") is None
    finally:
        release.set()
    assert len(recorder.of(K.ATTEMPT_STARTING, "t")) == 1
