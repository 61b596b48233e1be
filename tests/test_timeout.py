"""Attempt timeouts: a retryable failure reported as ``ATTEMPT_TIMED_OUT``; a body raising
``TimeoutError`` itself is an ordinary failure; inheritance and disabling (SPEC §1, §2, §6)."""

from __future__ import annotations

import asyncio

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory, forever
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O


async def hang() -> None:
    await asyncio.Event().wait()


async def run_one(sup: tv.Supervisor, spec: tv.TaskSpec) -> tv.TaskOutcome:
    async with asyncio.timeout(GUARD):
        async with sup:
            return await sup.add(spec)


async def test_expired_timeout_is_a_failure_reported_as_timed_out(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    outcome = await run_one(make_supervisor(), tv.TaskSpec.once("t", hang, timeout=0.02))
    assert (outcome.kind, outcome.attempts) == (O.FAILED, 1)
    assert outcome.reason is not None
    assert "timed out" in outcome.reason
    assert isinstance(outcome.error, TimeoutError)
    timed_out = recorder.of(K.ATTEMPT_TIMED_OUT, "t")
    assert len(timed_out) == 1
    assert timed_out[0].timeout == 0.02
    assert timed_out[0].attempt == 1
    assert timed_out[0].duration is not None
    assert timed_out[0].duration >= 0.019
    # Exactly one terminal event for the attempt: no ATTEMPT_FAILED/CANCELED beside it.
    assert recorder.of(K.ATTEMPT_FAILED) == []
    assert recorder.of(K.ATTEMPT_CANCELED) == []
    finished = recorder.of(K.TASK_FINISHED, "t")[0]
    assert (finished.outcome, finished.reason) == (O.FAILED, outcome.reason)


async def test_timeouts_are_retried_within_the_budget(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    outcome = await run_one(
        sup, tv.TaskSpec.restartable("t", hang, timeout=0.005, backoff=FAST, max_retries=2)
    )
    assert (outcome.kind, outcome.attempts) == (O.FAILED, 3)
    assert len(recorder.of(K.ATTEMPT_TIMED_OUT, "t")) == 3
    waits = recorder.of(K.BACKOFF_SCHEDULED, "t")
    assert [e.backoff_source for e in waits] == [tv.BackoffSource.FAILURE] * 2
    assert all(e.reason == outcome.reason for e in waits)


async def test_each_attempt_gets_its_own_timeout(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def slow_first(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 1:
            await asyncio.Event().wait()
        await asyncio.sleep(0.001)

    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec.restartable("t", slow_first, timeout=0.05, backoff=FAST),
    )
    assert (outcome.kind, outcome.attempts) == (O.COMPLETED, 2)
    assert [e.kind for e in recorder.of(task="t") if e.kind.value.startswith("attempt_")] == [
        K.ATTEMPT_STARTING,
        K.ATTEMPT_TIMED_OUT,
        K.ATTEMPT_STARTING,
        K.ATTEMPT_SUCCEEDED,
    ]


async def test_last_error_names_the_timeout(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        sup.add(
            tv.TaskSpec.restartable(
                "t", hang, timeout=0.005, backoff=tv.BackoffPolicy.constant(GUARD * 3)
            )
        )
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="t")
        info = sup.get("t")
        assert info is not None
        assert info.state is tv.TaskState.BACKOFF
        assert info.last_error is not None
        assert "timed out" in info.last_error


@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_a_body_raising_timeout_error_itself_is_an_ordinary_failure(
    make_supervisor: SupervisorFactory, recorder: Recorder, timeout: float | None
) -> None:
    raised: list[TimeoutError] = []

    async def body() -> None:
        err = TimeoutError("upstream took too long")
        raised.append(err)
        raise err

    outcome = await run_one(make_supervisor(), tv.TaskSpec.once("t", body, timeout=timeout))
    assert outcome.kind is O.FAILED
    assert outcome.error is raised[0]
    assert outcome.reason == "TimeoutError: upstream took too long"
    assert recorder.of(K.ATTEMPT_TIMED_OUT) == []
    failed = recorder.of(K.ATTEMPT_FAILED, "t")
    assert [e.reason for e in failed] == ["TimeoutError: upstream took too long"]


async def test_a_body_whose_inner_wait_for_times_out_is_an_ordinary_failure(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def body() -> None:
        await asyncio.wait_for(asyncio.Event().wait(), 0.001)

    outcome = await run_one(make_supervisor(), tv.TaskSpec.once("t", body, timeout=5.0))
    assert outcome.kind is O.FAILED
    assert isinstance(outcome.error, TimeoutError)
    assert recorder.of(K.ATTEMPT_TIMED_OUT) == []
    assert len(recorder.of(K.ATTEMPT_FAILED, "t")) == 1


async def test_timeout_is_inherited_and_can_be_disabled(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(defaults=tv.TaskDefaults(timeout=0.01, restart=tv.RestartPolicy.NEVER))
    gate = asyncio.Event()

    async def gated() -> None:
        await gate.wait()

    async with asyncio.timeout(GUARD):
        async with sup:
            inherited = await sup.add(tv.TaskSpec("inherited", hang))
            # Both spellings disable the inherited timeout.
            disabled = sup.add(tv.TaskSpec("disabled", gated, timeout=None))
            zero = sup.add(tv.TaskSpec("zero", gated, timeout=0))
            own = await sup.add(tv.TaskSpec("own", hang, timeout=0.02))
            assert not disabled.done()
            assert not zero.done()
            gate.set()
            assert (await disabled).kind is O.COMPLETED
            assert (await zero).kind is O.COMPLETED
    assert inherited.kind is O.FAILED
    assert own.kind is O.FAILED
    timeouts = {e.task: e.timeout for e in recorder.of(K.ATTEMPT_TIMED_OUT)}
    assert timeouts == {"inherited": 0.01, "own": 0.02}


async def test_a_stop_during_a_timed_attempt_is_a_cancellation(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        handle = sup.add(tv.TaskSpec.restartable("t", forever, timeout=GUARD * 3))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("t")
    assert handle.outcome is not None
    assert handle.outcome.kind is O.CANCELED
    assert len(recorder.of(K.ATTEMPT_CANCELED, "t")) == 1
    assert recorder.of(K.ATTEMPT_TIMED_OUT) == []


async def test_a_timeout_releases_the_concurrency_slot(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1)
    async with asyncio.timeout(GUARD):
        async with sup:
            stuck = sup.add(tv.TaskSpec.once("stuck", hang, timeout=0.01))
            after = sup.add(tv.TaskSpec.once("after", hang, timeout=0.01))
            assert (await stuck).kind is O.FAILED
            assert (await after).kind is O.FAILED
    assert len(recorder.of(K.ATTEMPT_TIMED_OUT)) == 2


async def test_the_timeout_clock_starts_once_the_slot_is_held(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1)
    gate = asyncio.Event()

    async def holder() -> None:
        await gate.wait()

    async with asyncio.timeout(GUARD):
        async with sup:
            first = sup.add(tv.TaskSpec.once("holder", holder))
            await recorder.wait_for(K.ATTEMPT_STARTING, task="holder")
            waiter = sup.add(tv.TaskSpec.once("waiter", _quick, timeout=0.02))
            # Wait well past the waiter's timeout while it waits for the slot.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await waiter
            gate.set()
            assert (await first).kind is O.COMPLETED
            assert (await waiter).kind is O.COMPLETED
    assert recorder.of(K.ATTEMPT_TIMED_OUT) == []


async def _quick() -> None:
    await asyncio.sleep(0)
