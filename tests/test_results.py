"""What a task gives back: ``TaskOutcome.result``, ``ShutdownReport.outcomes``, the last error
in the reason of a task stopped before it ever succeeded, and ``Event.error`` (SPEC §13,
13.1.2, 13.1.3, 13.1.7)."""

from __future__ import annotations

import asyncio
import functools
import traceback
from collections.abc import Awaitable, Callable

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory, forever
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O

LONG = tv.BackoffPolicy.constant(GUARD * 6)
"""A backoff far longer than any test: a task in it stays in BACKOFF until stopped."""


def returning(*values: object) -> Callable[[tv.TaskContext], Awaitable[object]]:
    """Attempt n returns ``values[n-1]``; an exception instance there is raised instead."""

    async def body(ctx: tv.TaskContext) -> object:
        value = values[min(ctx.attempt, len(values)) - 1]
        if isinstance(value, BaseException):
            raise value
        return value

    return body


async def outcome_of(sup: tv.Supervisor, spec: tv.TaskSpec) -> tv.TaskOutcome:
    async with asyncio.timeout(GUARD), sup:
        return await sup.add(spec)


# --------------------------------------------------------------------------- TaskOutcome.result


async def test_a_one_shot_task_gives_back_what_it_returned(
    make_supervisor: SupervisorFactory,
) -> None:
    payload = {"rows": [1, 2, 3]}
    outcome = await outcome_of(make_supervisor(), tv.TaskSpec.once("q", returning(payload)))
    assert outcome.ok
    assert outcome.result is payload  # the very object, not a copy


async def test_the_result_is_that_of_the_attempt_that_succeeded_after_retries(
    make_supervisor: SupervisorFactory,
) -> None:
    spec = tv.TaskSpec.restartable(
        "q", returning(tv.Fail("a"), RuntimeError("b"), "third"), backoff=FAST
    )
    outcome = await outcome_of(make_supervisor(), spec)
    assert (outcome.kind, outcome.attempts, outcome.result) == (O.COMPLETED, 3, "third")


async def test_no_successful_attempt_means_no_result(
    make_supervisor: SupervisorFactory,
) -> None:
    spec = tv.TaskSpec.restartable("q", returning(tv.Fail("down")), backoff=FAST, max_retries=2)
    outcome = await outcome_of(make_supervisor(), spec)
    assert (outcome.kind, outcome.attempts, outcome.result) == (O.FAILED, 3, None)


async def test_a_failed_task_keeps_the_result_of_its_last_success(
    make_supervisor: SupervisorFactory,
) -> None:
    # 13.1.2: the last attempt that published ATTEMPT_SUCCEEDED, whatever the outcome.
    spec = tv.TaskSpec(
        "p",
        returning(1, 2, tv.Fail("x"), tv.Fail("y")),
        restart=tv.RestartPolicy.always(),
        backoff=FAST,
        max_retries=1,
    )
    outcome = await outcome_of(make_supervisor(), spec)
    assert (outcome.kind, outcome.attempts, outcome.result) == (O.FAILED, 4, 2)


async def test_a_fatal_task_keeps_the_result_of_its_last_success(
    make_supervisor: SupervisorFactory,
) -> None:
    spec = tv.TaskSpec(
        "p", returning("ok", tv.Fatal("no")), restart=tv.RestartPolicy.always(), backoff=FAST
    )
    outcome = await outcome_of(make_supervisor(), spec)
    assert (outcome.kind, outcome.attempts, outcome.result) == (O.FATAL, 2, "ok")


async def test_a_cancelled_periodic_task_keeps_its_last_result(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def count(ctx: tv.TaskContext) -> int:
        return ctx.attempt * 10

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.periodic("p", count, 0.002))
        await recorder.wait_for(K.ATTEMPT_SUCCEEDED, task="p", count=3)
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert outcome.kind is O.CANCELED
    last_success = recorder.of(K.ATTEMPT_SUCCEEDED, "p")[-1]
    assert last_success.attempt is not None
    assert outcome.result == last_success.attempt * 10


async def test_a_body_that_returns_on_its_stop_gives_that_value(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # Its attempt publishes ATTEMPT_SUCCEEDED (SPEC §4): its value is the result, the
    # outcome is still CANCELED.
    async def body() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "partial"
        return "never"

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.once("q", body))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="q")
        assert await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert (outcome.kind, outcome.result) == (O.CANCELED, "partial")
    assert [e.kind for e in recorder.of(task="q") if e.attempt == 1][-1] is K.ATTEMPT_SUCCEEDED


async def test_a_body_that_reraises_its_stop_has_no_new_result(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def body(ctx: tv.TaskContext) -> str:
        if ctx.attempt == 1:
            return "first"
        await asyncio.Event().wait()
        return "never"

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec("q", body, restart=tv.RestartPolicy.always()))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="q", attempt=2)
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert (outcome.kind, outcome.result) == (O.CANCELED, "first")


async def test_results_of_many_tasks_are_not_mixed_up(
    make_supervisor: SupervisorFactory,
) -> None:
    async def square(n: int) -> int:
        await asyncio.sleep(0.001 * (n % 3))
        return n * n

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handles = [
            sup.add(tv.TaskSpec.once(f"t{n}", functools.partial(square, n))) for n in range(20)
        ]
        outcomes = [await h for h in handles]
    assert [o.result for o in outcomes] == [n * n for n in range(20)]


# --------------------------------------------------------------------------- report.outcomes


async def test_report_outcomes_hold_every_task_registered_when_shutdown_began(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        async with sup:
            done = await sup.add(tv.TaskSpec.once("done-before", returning("early")))
            assert done.ok
            sup.add(tv.TaskSpec("a", forever))
            sup.add(tv.TaskSpec.restartable("b", returning(tv.Fail("db down")), backoff=LONG))
            await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
            await recorder.wait_for(K.BACKOFF_SCHEDULED, task="b")
        report = await sup.shutdown()
    # "done-before" had finished (and was no longer registered) when the shutdown began.
    assert set(report.outcomes) == {"a", "b"}
    assert report.outcomes["a"].kind is O.CANCELED
    assert report.outcomes["b"].kind is O.CANCELED
    assert report.outcomes["b"].reason is not None
    assert report.outcomes["b"].reason.endswith("db down")
    # Read-only: the report is a value.
    with pytest.raises(TypeError):
        report.outcomes["x"] = report.outcomes["a"]  # type: ignore[index]


async def test_report_outcomes_are_the_handles_outcomes(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        await sup.start()
        handle = sup.add(tv.TaskSpec("a", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
        report = await sup.shutdown()
    assert report.outcomes["a"] is handle.outcome


async def test_run_reports_its_whole_batch_and_tasks_added_meanwhile(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()

    async def spawner() -> str:
        # Added while run() is active; it finishes long before the shutdown begins.
        child = sup.add(tv.TaskSpec.once("child", returning("from child")))
        await child
        return "spawned"

    batch = [
        tv.TaskSpec.once("ok", returning(7)),
        tv.TaskSpec.once("bad", returning(tv.Fatal("config"))),
        tv.TaskSpec.once("spawner", spawner),
    ]
    async with asyncio.timeout(GUARD):
        report = await sup.run(batch)
    assert set(report.outcomes) == {"ok", "bad", "spawner", "child"}
    assert {name: o.kind for name, o in report.outcomes.items()} == {
        "ok": O.COMPLETED,
        "bad": O.FATAL,
        "spawner": O.COMPLETED,
        "child": O.COMPLETED,
    }
    assert report.outcomes["ok"].result == 7
    assert report.outcomes["child"].result == "from child"
    assert report.outcomes["spawner"].result == "spawned"
    assert report.outcomes["bad"].reason == "config"
    assert not report.grace_exceeded


async def test_run_stopped_by_shutdown_reports_finished_and_stopped_tasks(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()

    async def stopper() -> None:
        await recorder.wait_for(K.ATTEMPT_STARTING, task="forever")
        await recorder.wait_for(K.TASK_FINISHED, task="quick")
        await sup.shutdown()

    async with asyncio.timeout(GUARD):
        task = asyncio.create_task(stopper())
        report = await sup.run(
            [tv.TaskSpec.once("quick", returning("q")), tv.TaskSpec("forever", forever)]
        )
        await task
    assert {n: o.kind for n, o in report.outcomes.items()} == {
        "quick": O.COMPLETED,
        "forever": O.CANCELED,
    }
    assert report.outcomes["quick"].result == "q"


async def test_wait_returns_the_same_report(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        await sup.start()
        sup.add(tv.TaskSpec("a", forever))
        waiter = asyncio.create_task(sup.wait())
        await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
        assert not waiter.done()
        report = await sup.shutdown()
        assert await waiter is report
        assert await sup.wait() is report  # after the fact too


# --------------------------------------------------------------------------- honest reasons


async def test_a_task_cancelled_in_backoff_ends_with_its_last_error(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(
            tv.TaskSpec.restartable("db", returning(ConnectionError("refused")), backoff=LONG)
        )
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="db")
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert outcome.kind is O.CANCELED
    assert outcome.reason is not None
    assert outcome.reason.endswith("ConnectionError: refused"), outcome.reason
    finished = recorder.of(K.TASK_FINISHED, "db")[0]
    assert finished.reason == outcome.reason  # the same words in the event


async def test_a_task_stopped_while_running_after_failures_ends_with_its_last_error(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def body(ctx: tv.TaskContext) -> None:
        if ctx.attempt < 3:
            raise tv.Fail(f"boom {ctx.attempt}")
        await asyncio.Event().wait()

    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        async with sup:
            sup.add(tv.TaskSpec.restartable("t", body, backoff=FAST))
            await recorder.wait_for(K.ATTEMPT_STARTING, task="t", attempt=3)
        report = await sup.shutdown()
    outcome = report.outcomes["t"]
    assert outcome.kind is O.CANCELED
    assert outcome.reason is not None
    assert outcome.reason.endswith("boom 2"), outcome.reason


async def test_a_forced_task_that_never_succeeded_ends_with_its_last_error(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    release = asyncio.Event()

    async def body(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 1:
            raise TimeoutError("upstream")
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # a cleanup that outlasts the grace period

    sup = make_supervisor(grace=0.01)
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.restartable("t", body, backoff=FAST))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t", attempt=2)
        sup.remove("t")
        outcome = await handle
    assert outcome.kind is O.FORCE_ABORTED
    assert outcome.reason is not None
    assert outcome.reason.endswith("TimeoutError: upstream"), outcome.reason


async def test_a_failure_during_the_stop_is_the_last_error(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # The attempt stopped by the request fails in its cleanup: ATTEMPT_FAILED, not retried
    # (SPEC §4), and it is the last failed attempt of a task that never succeeded.
    async def body(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 1:
            raise tv.Fail("first")
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup broke")

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.restartable("t", body, backoff=FAST))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t", attempt=2)
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert outcome.kind is O.CANCELED
    assert recorder.of(K.ATTEMPT_FAILED, "t")[-1].reason == "RuntimeError: cleanup broke"
    assert outcome.reason is not None
    assert outcome.reason.endswith("RuntimeError: cleanup broke"), outcome.reason


async def test_a_timed_out_attempt_is_the_last_error_too(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.restartable("t", forever, timeout=0.01, backoff=LONG))
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="t")
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert outcome.kind is O.CANCELED
    info_reason = recorder.of(K.BACKOFF_SCHEDULED, "t")[0].reason
    assert info_reason is not None
    assert outcome.reason is not None
    assert outcome.reason.endswith(info_reason)
    assert "timed out" in outcome.reason


async def test_a_task_that_succeeded_once_is_not_blamed_on_an_old_error(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # Only a task that *never* succeeded ends with its last error.
    spec = tv.TaskSpec(
        "p",
        returning(tv.Fail("old trouble"), "fine"),
        restart=tv.RestartPolicy.always(interval=GUARD * 6),
        backoff=FAST,
    )
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(spec)
        await recorder.wait_for(K.ATTEMPT_SUCCEEDED, task="p")
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert outcome.kind is O.CANCELED
    assert outcome.reason is not None
    assert "old trouble" not in outcome.reason


async def test_a_task_stopped_without_any_failure_has_a_plain_reason(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec("a", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert outcome.reason is not None
    assert "last error" not in outcome.reason


# --------------------------------------------------------------------------- Event.error


async def test_event_error_is_the_exception_of_a_failed_attempt_only(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    def deep() -> None:
        raise ValueError("deep down")

    async def body(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 1:
            deep()
        if ctx.attempt == 2:
            raise tv.Fail("soft")
        await asyncio.Event().wait()

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.restartable("t", body, backoff=FAST, timeout=0.02))
        await recorder.wait_for(K.ATTEMPT_TIMED_OUT, task="t")
        await handle.cancel()
    failed = recorder.of(K.ATTEMPT_FAILED, "t")
    assert [type(e.error) for e in failed] == [ValueError, tv.Fail]
    first = failed[0].error
    assert first is not None
    assert first.__traceback__ is not None
    frames = [f.name for f in traceback.extract_tb(first.__traceback__)]
    assert "deep" in frames  # the traceback reaches where it was raised
    others = [e for e in recorder.events if e.kind is not K.ATTEMPT_FAILED]
    assert all(e.error is None for e in others)
