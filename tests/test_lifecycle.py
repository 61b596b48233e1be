"""Both ways to run a supervisor (``run`` batches, ``async with``/``start``/``shutdown``), the
order of a task's events and the fields each event carries (SPEC §3, §6)."""

from __future__ import annotations

import asyncio
import time

import pytest

import taskvisor as tv
from conftest import (
    FAST,
    GUARD,
    SPEC_OPTIONAL_FIELDS,
    Recorder,
    SupervisorFactory,
    forever,
    succeed,
)
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O
from taskvisor import RejectionKind as R


def present(event: tv.Event) -> set[str]:
    """The names of the optional fields an event carries."""
    return {f for f in SPEC_OPTIONAL_FIELDS if getattr(event, f) is not None}


def recording_body(log: list[str], name: str) -> tv.TaskSpec:
    async def body() -> None:
        log.append(name)

    return tv.TaskSpec.once(name, body)


# --------------------------------------------------------------------------- run()


async def test_run_returns_when_every_task_finished(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=3.0)
    log: list[str] = []
    async with asyncio.timeout(GUARD):
        report = await sup.run([recording_body(log, n) for n in ("a", "b", "c")])
    assert sorted(log) == ["a", "b", "c"]
    assert report == tv.ShutdownReport(grace_exceeded=False, stuck=(), grace=3.0)
    assert sup.closed
    assert sup.list() == []
    finished = {e.task: e.outcome for e in recorder.of(K.TASK_FINISHED)}
    assert finished == {"a": O.COMPLETED, "b": O.COMPLETED, "c": O.COMPLETED}


async def test_natural_completion_publishes_shutdown_events_once(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        report = await sup.run([recording_body([], n) for n in ("a", "b")])
    # run returned after the drain: the recorder has seen everything.
    requested = recorder.of(K.SHUTDOWN_REQUESTED)
    assert len(requested) == 1
    assert len(recorder.of(K.ALL_STOPPED_WITHIN_GRACE)) == 1
    assert recorder.of(K.GRACE_EXCEEDED) == []
    last_removed = recorder.of(K.TASK_REMOVED)[-1]
    assert last_removed.seq < requested[0].seq < recorder.of(K.ALL_STOPPED_WITHIN_GRACE)[0].seq
    # No task was stopped: natural completion is not a stop request.
    assert recorder.of(K.TASK_REMOVE_REQUESTED) == []
    # A later shutdown() is the same shared operation and publishes nothing new.
    assert await sup.shutdown() is report
    assert len(recorder.of(K.SHUTDOWN_REQUESTED)) == 1


async def test_run_waits_for_tasks_added_meanwhile(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()
    handles: list[tv.TaskHandle] = []

    async def late() -> None:
        await gate.wait()

    async def first() -> None:
        handles.append(sup.add(tv.TaskSpec.once("late", late)))

    async with asyncio.timeout(GUARD):
        runner = asyncio.create_task(sup.run([tv.TaskSpec.once("first", first)]))
        await recorder.wait_for(K.TASK_REMOVED, task="first")
        await recorder.wait_for(K.ATTEMPT_STARTING, task="late")
        for _ in range(5):  # give a buggy run() every chance to return early
            await asyncio.sleep(0)
        assert not runner.done()
        assert sup.is_alive("late")
        gate.set()
        report = await runner
    assert not report.grace_exceeded
    assert handles[0].outcome is not None
    assert handles[0].outcome.kind is O.COMPLETED
    # Shutdown only began after the late task finished.
    assert recorder.of(K.TASK_REMOVED, "late")[0].seq < recorder.of(K.SHUTDOWN_REQUESTED)[0].seq


async def test_run_returns_on_shutdown(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        runner = asyncio.create_task(sup.run([tv.TaskSpec("w", forever)]))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="w")
        report = await sup.shutdown()
        assert await runner is report
    assert not report.grace_exceeded
    finished = recorder.of(K.TASK_FINISHED, "w")
    assert [e.outcome for e in finished] == [O.CANCELED]
    assert recorder.of(K.SHUTDOWN_REQUESTED)[0].reason != "natural completion"


async def test_run_with_an_empty_batch_returns_at_once(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        report = await sup.run([])
    assert not report.grace_exceeded
    assert len(recorder.of(K.ALL_STOPPED_WITHIN_GRACE)) == 1


async def test_batch_with_a_repeated_name_is_rejected_whole(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    log: list[str] = []
    batch = [recording_body(log, n) for n in ("a", "b", "c", "b", "a")]
    with pytest.raises(tv.TaskAlreadyExists) as err:
        await sup.run(batch)
    assert err.value.name == "b"  # the first conflict met in batch order
    assert log == []
    assert sup.list() == []
    assert not sup.closed
    failed = [await recorder.wait_for(K.TASK_ADD_FAILED, count=i) for i in range(1, 6)]
    assert [(e.task, e.rejection) for e in failed] == [
        ("a", R.ALREADY_EXISTS),
        ("b", R.ALREADY_EXISTS),
        ("c", R.BATCH_REJECTED),
        ("b", R.ALREADY_EXISTS),
        ("a", R.ALREADY_EXISTS),
    ]
    assert all(e.outcome is O.REJECTED for e in failed)
    # The supervisor is as it was: a good batch runs normally afterwards.
    async with asyncio.timeout(GUARD):
        await sup.run([recording_body(log, "a")])
    assert log == ["a"]
    assert [e.task for e in recorder.of(K.TASK_ADDED)] == ["a"]


async def test_batch_conflicting_with_a_registered_task_is_rejected_whole(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    log: list[str] = []
    async with sup:
        held = sup.add(tv.TaskSpec("x", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="x")
        before = sup.list()
        with pytest.raises(tv.TaskAlreadyExists) as err:
            await sup.run([recording_body(log, "y"), recording_body(log, "x")])
        assert err.value.name == "x"
        failed = [await recorder.wait_for(K.TASK_ADD_FAILED, count=i) for i in (1, 2)]
        assert [(e.task, e.rejection) for e in failed] == [
            ("y", R.BATCH_REJECTED),
            ("x", R.ALREADY_EXISTS),
        ]
        assert sup.list() == before
        assert sup.get("x") is not None
        assert sup.get("y") is None
        assert not held.done()
        # No run is active after the rejection: a second run is not AlreadyRunning.
        assert await sup.cancel("x")
        async with asyncio.timeout(GUARD):
            await sup.run([recording_body(log, "y")])
    assert log == ["y"]


async def test_second_run_raises_already_running(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    log: list[str] = []
    async with asyncio.timeout(GUARD):
        runner = asyncio.create_task(sup.run([tv.TaskSpec("w", forever)]))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="w")
        with pytest.raises(tv.AlreadyRunning):
            await sup.run([recording_body(log, "other")])
        assert sup.get("other") is None
        assert sup.is_alive("w")
        assert not runner.done()
        await sup.shutdown()
        await runner
    assert log == []


async def test_run_after_shutdown_raises_closed(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    await sup.shutdown()
    with pytest.raises(tv.SupervisorClosed):
        await sup.run([recording_body([], "a")])
    with pytest.raises(tv.SupervisorClosed):
        await sup.start()


async def test_run_refuses_anything_but_specs(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    spec = recording_body([], "a")
    with pytest.raises(TypeError, match="specs"):
        await sup.run(spec)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"specs\[1\]"):
        await sup.run([spec, "b"])  # type: ignore[list-item]
    assert sup.list() == []


async def test_cancelling_run_shuts_the_supervisor_down(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    handles: list[tv.TaskHandle] = []

    async def spawner() -> None:
        handles.append(sup.add(tv.TaskSpec("child", forever)))
        await asyncio.Event().wait()

    async with asyncio.timeout(GUARD):
        runner = asyncio.create_task(sup.run([tv.TaskSpec("w", spawner)]))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="child")
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    # Like a task group: no task outlives the cancelled run.
    assert sup.closed
    assert sup.list() == []
    assert handles[0].outcome is not None
    assert handles[0].outcome.kind is O.CANCELED


# --------------------------------------------------------------------------- async with


async def test_async_with_starts_and_shuts_down(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        async with sup as entered:
            assert entered is sup
            assert not sup.closed
            handle = sup.add(tv.TaskSpec("w", forever))
            await recorder.wait_for(K.ATTEMPT_STARTING, task="w")
    assert sup.closed
    assert handle.outcome is not None
    assert handle.outcome.kind is O.CANCELED
    assert len(recorder.of(K.SHUTDOWN_REQUESTED)) == 1
    assert len(recorder.of(K.ALL_STOPPED_WITHIN_GRACE)) == 1
    with pytest.raises(tv.SupervisorClosed):
        sup.add(tv.TaskSpec("again", forever))


async def test_async_with_shuts_down_when_the_block_raises(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    handles: list[tv.TaskHandle] = []

    async def block() -> None:
        async with sup:
            handles.append(sup.add(tv.TaskSpec("w", forever)))
            await recorder.wait_for(K.ATTEMPT_STARTING, task="w")
            raise LookupError("inside")

    with pytest.raises(LookupError, match="inside"):
        await block()
    handle = handles[0]
    assert sup.closed
    assert handle.outcome is not None
    assert handle.outcome.kind is O.CANCELED


async def test_explicit_start_and_shutdown(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    await sup.start()
    await sup.start()  # idempotent while open
    handle = sup.add(tv.TaskSpec.once("a", forever))
    await recorder.wait_for(K.ATTEMPT_STARTING, task="a")
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    assert report.grace_exceeded is False
    assert handle.outcome is not None
    assert handle.outcome.kind is O.CANCELED


# --------------------------------------------------------------------------- event order


async def test_event_order_of_a_task_that_fails_then_succeeds(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise tv.Fail(f"try {calls}")

    async with asyncio.timeout(GUARD):
        await sup.run([tv.TaskSpec.restartable("f", flaky, backoff=FAST)])
    assert recorder.kinds("f") == [
        K.TASK_ADD_REQUESTED,
        K.TASK_ADDED,
        K.ATTEMPT_STARTING,
        K.ATTEMPT_FAILED,
        K.BACKOFF_SCHEDULED,
        K.ATTEMPT_STARTING,
        K.ATTEMPT_FAILED,
        K.BACKOFF_SCHEDULED,
        K.ATTEMPT_STARTING,
        K.ATTEMPT_SUCCEEDED,
        K.TASK_FINISHED,
        K.TASK_REMOVED,
    ]
    assert [e.attempt for e in recorder.of(K.ATTEMPT_STARTING, "f")] == [1, 2, 3]
    seqs = [e.seq for e in recorder.events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


async def test_event_order_of_a_stopped_task(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        sup.add(tv.TaskSpec("w", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="w")
        assert await sup.cancel("w")
        await recorder.wait_for(K.TASK_REMOVED, task="w")
    assert recorder.kinds("w") == [
        K.TASK_ADD_REQUESTED,
        K.TASK_ADDED,
        K.ATTEMPT_STARTING,
        K.TASK_REMOVE_REQUESTED,
        K.ATTEMPT_CANCELED,
        K.TASK_FINISHED,
        K.TASK_REMOVED,
    ]


async def test_event_fields_follow_the_table(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise tv.Fail("nope", exit_code=3)

    async def hang() -> None:
        await asyncio.Event().wait()

    before = time.time()
    async with asyncio.timeout(GUARD):
        async with sup:
            handles = {
                "flaky": sup.add(tv.TaskSpec.restartable("flaky", flaky, backoff=FAST)),
                "slow": sup.add(tv.TaskSpec.once("slow", hang, timeout=0.01)),
                "stopped": sup.add(tv.TaskSpec("stopped", forever)),
                "periodic": sup.add(tv.TaskSpec.periodic("periodic", succeed, 0.005)),
            }
            await recorder.wait_for(K.ATTEMPT_STARTING, task="stopped")
            await recorder.wait_for(K.BACKOFF_SCHEDULED, task="periodic")
            await handles["flaky"]
            await handles["slow"]
            assert await sup.cancel("stopped")
            assert await sup.cancel("periodic")
    after = time.time()
    base = {"task", "task_id"}
    expected = {
        K.TASK_ADD_REQUESTED: {"task"},
        K.TASK_ADDED: base,
        K.ATTEMPT_STARTING: base | {"attempt"},
        K.ATTEMPT_SUCCEEDED: base | {"attempt", "duration"},
        K.ATTEMPT_TIMED_OUT: base | {"attempt", "duration", "timeout"},
        K.ATTEMPT_CANCELED: base | {"attempt", "duration"},
        K.TASK_REMOVE_REQUESTED: base,
        K.TASK_REMOVED: base,
    }
    for e in recorder.events:
        assert before <= e.at <= after
        if e.task in handles and e.kind is not K.TASK_ADD_REQUESTED:
            assert e.task_id == handles[e.task].id
        if e.kind in expected:
            assert present(e) == expected[e.kind], e
    failed = recorder.of(K.ATTEMPT_FAILED, "flaky")
    assert [present(e) for e in failed] == [
        base | {"attempt", "duration", "reason", "exit_code", "error"}
    ]
    assert (failed[0].reason, failed[0].exit_code, failed[0].attempt) == ("nope", 3, 1)
    backoff_fail = recorder.of(K.BACKOFF_SCHEDULED, "flaky")
    assert [present(e) for e in backoff_fail] == [
        base | {"attempt", "delay", "backoff_source", "reason"}
    ]
    assert backoff_fail[0].backoff_source is tv.BackoffSource.FAILURE
    assert backoff_fail[0].reason == "nope"
    assert backoff_fail[0].delay == pytest.approx(0.001)
    backoff_ok = recorder.of(K.BACKOFF_SCHEDULED, "periodic")[0]
    assert present(backoff_ok) == base | {"attempt", "delay", "backoff_source"}
    assert backoff_ok.backoff_source is tv.BackoffSource.SUCCESS
    assert backoff_ok.delay == pytest.approx(0.005)
    timed_out = recorder.of(K.ATTEMPT_TIMED_OUT, "slow")[0]
    assert timed_out.timeout == pytest.approx(0.01)
    assert timed_out.duration is not None
    assert timed_out.duration >= 0.009
    finished = {e.task: e for e in recorder.of(K.TASK_FINISHED)}
    assert present(finished["flaky"]) == base | {"outcome"}
    assert finished["flaky"].outcome is O.COMPLETED
    assert present(finished["slow"]) == base | {"outcome", "reason"}
    assert finished["slow"].outcome is O.FAILED
    assert finished["stopped"].outcome is O.CANCELED
    assert "reason" in present(recorder.of(K.SHUTDOWN_REQUESTED)[0])
    assert present(recorder.of(K.ALL_STOPPED_WITHIN_GRACE)[0]) == set()


async def test_fatal_exit_code_reaches_task_finished(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()

    async def fatal() -> None:
        raise tv.Fatal("broken config", exit_code=78)

    async with asyncio.timeout(GUARD):
        await sup.run([tv.TaskSpec.restartable("f", fatal, backoff=FAST)])
    finished = recorder.of(K.TASK_FINISHED, "f")[0]
    assert (finished.outcome, finished.reason, finished.exit_code) == (
        O.FATAL,
        "broken config",
        78,
    )


async def test_context_carries_identity_and_attempt(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()
    seen: list[tuple[tv.TaskId, str, int, bool]] = []

    async def body(ctx: tv.TaskContext) -> None:
        seen.append((ctx.id, ctx.name, ctx.attempt, ctx.is_cancelled()))
        if ctx.attempt < 3:
            raise tv.Fail("again")

    async with sup:
        handle = sup.add(tv.TaskSpec.restartable("ctx", body, backoff=FAST))
        async with asyncio.timeout(GUARD):
            outcome = await handle
    assert outcome.kind is O.COMPLETED
    assert seen == [(handle.id, "ctx", n, False) for n in (1, 2, 3)]
    assert isinstance(seen[0][0], tv.TaskId)


# --------------------------------------------------------------------------- configuration


def test_config_defaults() -> None:
    config = tv.SupervisorConfig()
    assert (
        config.grace,
        config.subscriber_shutdown_timeout,
        config.max_concurrent,
        config.handle_signals,
    ) == (60.0, 5.0, None, True)
    assert tv.SupervisorConfig(grace=0, subscriber_shutdown_timeout=0).grace == 0.0
    with pytest.raises(AttributeError):
        config.grace = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"grace": -1.0}, ValueError, "grace"),
        ({"grace": float("inf")}, ValueError, "grace"),
        ({"grace": float("nan")}, ValueError, "grace"),
        ({"grace": "1"}, TypeError, "grace"),
        ({"grace": True}, TypeError, "grace"),
        ({"subscriber_shutdown_timeout": -0.5}, ValueError, "subscriber_shutdown_timeout"),
        ({"subscriber_shutdown_timeout": None}, TypeError, "subscriber_shutdown_timeout"),
        ({"max_concurrent": 0}, ValueError, "max_concurrent"),
        ({"max_concurrent": 1.5}, TypeError, "max_concurrent"),
        ({"max_concurrent": True}, TypeError, "max_concurrent"),
        ({"handle_signals": 1}, TypeError, "handle_signals"),
    ],
)
def test_config_refuses_bad_values(
    kwargs: dict[str, object], error: type[Exception], param: str
) -> None:
    with pytest.raises(error, match=param):
        tv.SupervisorConfig(**kwargs)  # type: ignore[arg-type]


def test_supervisor_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError, match="config"):
        tv.Supervisor(config={"grace": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="defaults"):
        tv.Supervisor(defaults=tv.SupervisorConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="subscribers"):
        tv.Supervisor(subscribers="recorder")
    with pytest.raises(TypeError, match="subscriber"):
        tv.Supervisor(subscribers=[object()])


def test_building_a_supervisor_needs_no_running_loop() -> None:
    sup = tv.Supervisor(tv.SupervisorConfig(max_concurrent=2))
    assert not sup.closed
    assert sup.config.max_concurrent == 2
    assert sup.defaults == tv.TaskDefaults()
    # ...but using it does.
    with pytest.raises(RuntimeError, match="event loop"):
        sup.add(tv.TaskSpec("t", forever))


# --------------------------------------------------------------------------- the context


async def test_context_sees_the_stop_request(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    seen: list[str] = []

    async def body(ctx: tv.TaskContext) -> None:
        async def helper() -> None:
            # Another task than the attempt is not cancelled: it learns of the stop here.
            await ctx.cancelled()
            seen.append(f"helper saw stop: {ctx.is_cancelled()}")

        watcher = asyncio.create_task(helper())
        try:
            await ctx.sleep(GUARD * 3)
        except asyncio.CancelledError:
            seen.append("sleep ended by the stop")
            await watcher
            with pytest.raises(asyncio.CancelledError):
                await ctx.sleep(0)  # a stopped context refuses to sleep at all
            raise

    async with sup:
        handle = sup.add(tv.TaskSpec("t", body))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="t")
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("t")
    assert sorted(seen) == ["helper saw stop: True", "sleep ended by the stop"]
    assert handle.outcome is not None
    assert handle.outcome.kind is O.CANCELED


async def test_context_sleep_returns_normally_without_a_stop(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()

    async def body(ctx: tv.TaskContext) -> None:
        await ctx.sleep(0.001)
        await ctx.sleep(0)
        assert not ctx.is_cancelled()

    async with asyncio.timeout(GUARD):
        async with sup:
            outcome = await sup.add(tv.TaskSpec.once("t", body))
    assert outcome.kind is O.COMPLETED
