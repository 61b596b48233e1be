"""Outcomes and handles: one reliable result per task, resolved after cleanup, independent of
the event path, with the original error, reason, exit code and attempt count (SPEC §1, §5)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory, forever
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O


async def run_one(sup: tv.Supervisor, spec: tv.TaskSpec) -> tv.TaskOutcome:
    async with asyncio.timeout(GUARD):
        async with sup:
            return await sup.add(spec)


# --------------------------------------------------------------------------- the handle


async def test_handle_is_awaitable_and_reports_done(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()

    async def body() -> None:
        await gate.wait()

    async with sup:
        handle = sup.add(tv.TaskSpec.once("t", body))
        assert (handle.name, handle.done(), handle.outcome) == ("t", False, None)
        assert "pending" in repr(handle)
        gate.set()
        async with asyncio.timeout(GUARD):
            outcome = await handle
            again = await handle
    assert handle.done()
    assert handle.outcome is outcome
    assert again is outcome
    assert outcome == tv.TaskOutcome(O.COMPLETED, attempts=1)
    assert outcome.ok
    assert "completed" in repr(handle)
    assert await handle.cancel() is False


async def test_outcome_resolves_only_after_cleanup(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    seen: list[tuple[bool, object, bool]] = []

    async def watcher(handle: tv.TaskHandle) -> None:
        await handle
        # First step after resolution: the task is gone and its name is free.
        seen.append((sup.is_alive("t"), sup.get(handle.id), handle.name in _names(sup)))
        sup.add(tv.TaskSpec.once("t", forever))

    async with sup:
        for end in ("return", "fail", "cancel"):
            handle = sup.add(tv.TaskSpec.once("t", _ending(end)))
            watching = asyncio.ensure_future(watcher(handle))
            if end == "cancel":
                await recorder.wait_for(K.ATTEMPT_STARTING, task="t", task_id=handle.id)
                sup.remove(handle.id)
            async with asyncio.timeout(GUARD):
                await watching
                second = sup.get("t")
                assert second is not None
                await sup.cancel("t")
    assert seen == [(False, None, False)] * 3


def _names(sup: tv.Supervisor) -> set[str]:
    return {i.name for i in sup.list()}


async def _noop() -> None:
    return None


def _ending(end: str) -> Callable[[], Awaitable[None]]:
    async def body() -> None:
        if end == "fail":
            raise tv.Fail("x")
        if end == "cancel":
            await asyncio.Event().wait()

    return body


async def test_cancelling_a_waiter_does_not_cancel_the_task(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()

    async def body() -> None:
        await gate.wait()

    async with sup:
        handle = sup.add(tv.TaskSpec.once("t", body))
        waiter = asyncio.ensure_future(_await(handle))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert sup.is_alive("t")
        gate.set()
        async with asyncio.timeout(GUARD):
            assert (await handle).kind is O.COMPLETED


async def _await(handle: tv.TaskHandle) -> tv.TaskOutcome:
    return await handle


async def test_dropping_the_handle_does_not_stop_the_task(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()

    async def body() -> None:
        await gate.wait()

    async with sup:
        sup.add(tv.TaskSpec.once("t", body))
        gc.collect()
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        gc.collect()
        assert sup.is_alive("t")
        gate.set()
        finished = await recorder.wait_for(K.TASK_FINISHED, task="t")
    assert finished.outcome is O.COMPLETED


# --------------------------------------------------------------------------- independent of events


class SlowNarrow(tv.Subscriber):
    """Capacity 1, and every event takes until ``release`` is set."""

    queue_capacity = 1

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.got = 0

    async def on_event(self, event: tv.Event) -> None:
        self.got += 1
        await self.release.wait()


class Raiser(tv.Subscriber):
    """Raises on every event."""

    def on_event(self, event: tv.Event) -> None:
        raise RuntimeError("subscriber bug")


async def test_outcomes_do_not_depend_on_the_event_path(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    slow = SlowNarrow()
    sup = make_supervisor(subscribers=(slow, Raiser()), subscriber_shutdown_timeout=0.05)
    expected: dict[str, O] = {}
    handles: list[tv.TaskHandle] = []

    async def fail() -> None:
        raise tv.Fail("f")

    async def fatal() -> None:
        raise tv.Fatal("f")

    async def hang() -> None:
        await asyncio.Event().wait()

    async with asyncio.timeout(GUARD):
        async with sup:
            for i in range(10):
                for name, spec, kind in (
                    ("ok", tv.TaskSpec.once(f"ok{i}", _noop), O.COMPLETED),
                    (
                        "fail",
                        tv.TaskSpec.restartable(f"fail{i}", fail, backoff=FAST, max_retries=2),
                        O.FAILED,
                    ),
                    ("fatal", tv.TaskSpec.restartable(f"fatal{i}", fatal), O.FATAL),
                    ("slow", tv.TaskSpec.once(f"slow{i}", hang, timeout=0.005), O.FAILED),
                    ("stop", tv.TaskSpec(f"stop{i}", forever), O.CANCELED),
                ):
                    del name
                    handles.append(sup.add(spec))
                    expected[spec.name] = kind
            for i in range(10):
                assert sup.remove(f"stop{i}")
            outcomes = [await h for h in handles]
    assert {h.name: o.kind for h, o in zip(handles, outcomes, strict=True)} == expected
    assert {o.attempts for o, h in zip(outcomes, handles, strict=True) if "fail" in h.name} == {3}
    assert slow.got <= 2
    assert recorder.of(K.SUBSCRIBER_OVERFLOW)
    assert recorder.of(K.SUBSCRIBER_PANICKED)
    slow.release.set()


# --------------------------------------------------------------------------- error and reason


async def test_the_original_error_is_kept_with_its_cause(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    root = ConnectionError("refused")

    async def body() -> None:
        try:
            raise root
        except ConnectionError as err:
            raise tv.Fail("db down", exit_code=2) from err

    outcome = await run_one(make_supervisor(), tv.TaskSpec.once("t", body))
    assert isinstance(outcome.error, tv.Fail)
    assert outcome.error.__cause__ is root
    assert (outcome.kind, outcome.reason, outcome.exit_code, outcome.attempts) == (
        O.FAILED,
        "db down",
        2,
        1,
    )
    assert recorder.of(K.ATTEMPT_FAILED, "t")[0].reason == "db down"


@pytest.mark.parametrize(
    ("exc", "reason", "exit_code", "kind"),
    [
        (tv.Fail("disk full", exit_code=28), "disk full", 28, O.FAILED),
        (tv.Fail("no code"), "no code", None, O.FAILED),
        (tv.Fatal("bad input", exit_code=65), "bad input", 65, O.FATAL),
        (ValueError("boom"), "ValueError: boom", None, O.FAILED),
        (KeyError("k"), "KeyError: 'k'", None, O.FAILED),
        (RuntimeError(), "RuntimeError", None, O.FAILED),
    ],
)
async def test_reason_and_exit_code_agree_everywhere(
    make_supervisor: SupervisorFactory,
    recorder: Recorder,
    exc: Exception,
    reason: str,
    exit_code: int | None,
    kind: O,
) -> None:
    async def body() -> None:
        raise exc

    sup = make_supervisor()
    async with sup:
        handle = sup.add(
            tv.TaskSpec.restartable(
                "t", body, backoff=tv.BackoffPolicy.constant(0.05), max_retries=1
            )
        )
        if kind is O.FAILED:
            await recorder.wait_for(K.BACKOFF_SCHEDULED, task="t")
            info = sup.get("t")
            assert info is not None
            assert info.last_error == reason
        async with asyncio.timeout(GUARD):
            outcome = await handle
    assert (outcome.kind, outcome.reason, outcome.exit_code) == (kind, reason, exit_code)
    assert outcome.error is exc
    assert outcome.attempts == (2 if kind is O.FAILED else 1)
    failed = recorder.of(K.ATTEMPT_FAILED, "t")
    assert {(e.reason, e.exit_code) for e in failed} == {(reason, exit_code)}
    finished = recorder.of(K.TASK_FINISHED, "t")[0]
    assert (finished.outcome, finished.reason, finished.exit_code) == (kind, reason, exit_code)


# --------------------------------------------------------------------------- cancellation


async def test_a_body_that_catches_the_stop_and_returns_is_canceled(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    cleaned: list[bool] = []

    async def body(ctx: tv.TaskContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.001)  # cleanup may await
            cleaned.append(ctx.is_cancelled())

    sup = make_supervisor()
    async with sup:
        handle = sup.add(tv.TaskSpec.restartable("t", body))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("t")
    outcome = handle.outcome
    assert outcome is not None
    assert (outcome.kind, outcome.attempts, outcome.error) == (O.CANCELED, 1, None)
    assert cleaned == [True]
    assert recorder.kinds("t")[-4:] == [
        K.TASK_REMOVE_REQUESTED,
        K.ATTEMPT_SUCCEEDED,
        K.TASK_FINISHED,
        K.TASK_REMOVED,
    ]


async def test_a_body_that_reraises_the_stop_reports_attempt_canceled(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def body() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.001)
            raise

    sup = make_supervisor()
    async with sup:
        handle = sup.add(tv.TaskSpec.restartable("t", body))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("t")
    assert handle.outcome is not None
    assert handle.outcome.kind is O.CANCELED
    assert len(recorder.of(K.ATTEMPT_CANCELED, "t")) == 1
    assert recorder.of(K.ATTEMPT_SUCCEEDED, "t") == []


async def test_a_failure_while_stopping_is_not_retried(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def body() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise tv.Fail("cleanup broke") from None

    sup = make_supervisor()
    async with sup:
        handle = sup.add(tv.TaskSpec.restartable("t", body, backoff=FAST))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("t")
    assert handle.outcome is not None
    assert (handle.outcome.kind, handle.outcome.attempts) == (O.CANCELED, 1)
    assert len(recorder.of(K.ATTEMPT_STARTING, "t")) == 1
    assert recorder.of(K.BACKOFF_SCHEDULED, "t") == []


@pytest.mark.parametrize("how", ["raise", "cancelled_future", "task_cancels_itself"])
async def test_cancelled_error_nobody_requested_is_a_cooperative_stop(
    make_supervisor: SupervisorFactory, recorder: Recorder, how: str
) -> None:
    async def body() -> None:
        if how == "raise":
            raise asyncio.CancelledError
        if how == "cancelled_future":
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.cancel()
            await fut
        else:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(1)

    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec("t", body, restart=tv.RestartPolicy.always(), max_retries=None),
    )
    assert (outcome.kind, outcome.attempts, outcome.error) == (O.CANCELED, 1, None)
    assert not outcome.ok
    assert recorder.kinds("t") == [
        K.TASK_ADD_REQUESTED,
        K.TASK_ADDED,
        K.ATTEMPT_STARTING,
        K.ATTEMPT_CANCELED,
        K.TASK_FINISHED,
        K.TASK_REMOVED,
    ]


async def test_each_task_gets_exactly_one_finish_and_outcome(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=0.05)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    try:
        async with asyncio.timeout(GUARD):
            async with sup:
                handle = sup.add(tv.TaskSpec("s", stubborn))
                await recorder.wait_for(K.ATTEMPT_STARTING, task="s")
                # Remove, cancel and shutdown all race; the body never gives in.
                sup.remove("s")
                cancelling = asyncio.ensure_future(sup.cancel("s"))
                report = await sup.shutdown()
                assert await cancelling is False
    finally:
        release.set()
    assert handle.outcome is not None
    assert handle.outcome.kind is O.FORCE_ABORTED
    assert report.stuck == ("s",)
    assert len(recorder.of(K.TASK_FINISHED, "s")) == 1
    assert len(recorder.of(K.TASK_REMOVED, "s")) == 1
