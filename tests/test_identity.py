"""Registry and management: ids, unique names while registered, add/cancel/remove/list/get/
is_alive, exact ``TaskInfo``, and the races between them (SPEC §3)."""

from __future__ import annotations

import asyncio

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory, forever
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O
from taskvisor import TaskState as S


def slow_cleanup(gate: asyncio.Event) -> tv.TaskSpec:
    """A body that runs until stopped, then needs ``gate`` to finish its cleanup."""

    async def body() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await gate.wait()

    return tv.TaskSpec("slow", body)


# --------------------------------------------------------------------------- ids and names


async def test_task_ids_are_unique_ints_never_reused(
    make_supervisor: SupervisorFactory,
) -> None:
    a, b = make_supervisor(), make_supervisor()
    ids: list[tv.TaskId] = []
    async with asyncio.timeout(GUARD):
        async with a, b:
            for _ in range(3):
                for sup in (a, b):
                    handle = sup.add(tv.TaskSpec.once("same", forever))
                    ids.append(handle.id)
                    assert await handle.cancel()
    assert all(isinstance(i, tv.TaskId) and isinstance(i, int) for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert repr(ids[0]) == f"TaskId({int(ids[0])})"


async def test_adding_a_registered_name_is_refused(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        first = sup.add(tv.TaskSpec("dup", forever))
        with pytest.raises(tv.TaskAlreadyExists) as err:
            sup.add(tv.TaskSpec.once("dup", forever))
        assert err.value.name == "dup"
        assert isinstance(err.value, tv.TaskvisorError)
        failed = await recorder.wait_for(K.TASK_ADD_FAILED, task="dup")
        assert (failed.rejection, failed.outcome) == (tv.RejectionKind.ALREADY_EXISTS, O.REJECTED)
        requested = recorder.of(K.TASK_ADD_REQUESTED, "dup")
        assert len(requested) == 2
        assert requested[1].seq < failed.seq
        info = sup.get("dup")
        assert info is not None
        assert info.id == first.id
        assert not first.done()
        assert [i.id for i in sup.list()] == [first.id]


async def test_add_refuses_anything_but_a_spec(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    async with sup:
        with pytest.raises(TypeError, match="TaskSpec"):
            sup.add("work")  # type: ignore[arg-type]
        assert sup.list() == []


async def test_keys_of_the_wrong_type_are_refused(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    async with sup:
        with pytest.raises(TypeError, match="id_or_name"):
            await sup.cancel(True)
        with pytest.raises(TypeError, match="id_or_name"):
            sup.remove(1.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="id_or_name"):
            sup.get(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name"):
            sup.is_alive(3)  # type: ignore[arg-type]


async def test_list_get_and_is_alive_read_the_registry(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()
    async with sup:
        handles = [sup.add(tv.TaskSpec(n, forever)) for n in ("c", "a", "b")]
        # Exact at once, before any event or body ran.
        assert [i.name for i in sup.list()] == ["c", "a", "b"]
        assert [i.id for i in sup.list()] == sorted(h.id for h in handles)
        assert all(sup.is_alive(n) for n in "abc")
        for h in handles:
            by_id = sup.get(h.id)
            assert by_id is not None
            assert by_id == sup.get(h.name)
            assert sup.get(int(h.id)) == by_id
        assert sup.get("zzz") is None
        assert sup.get(10**12) is None
        assert not sup.is_alive("zzz")
        async with asyncio.timeout(GUARD):
            assert await handles[1].cancel()
        # Gone at the moment the outcome resolved.
        assert not sup.is_alive("a")
        assert sup.get(handles[1].id) is None
        assert [i.name for i in sup.list()] == ["c", "b"]


async def test_a_name_is_reusable_after_cleanup_with_a_new_id(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        old = sup.add(tv.TaskSpec("svc", forever))
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("svc")
        new = sup.add(tv.TaskSpec("svc", forever))  # right after, no await in between
        assert new.id != old.id
        assert sup.get(old.id) is None
        info = sup.get("svc")
        assert info is not None
        assert info.id == new.id
        await recorder.wait_for(K.ATTEMPT_STARTING, task="svc", task_id=new.id)
        assert not new.done()


async def test_a_stopping_task_still_holds_its_name(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()
    async with sup:
        handle = sup.add(slow_cleanup(gate))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="slow")
        assert sup.remove("slow")
        with pytest.raises(tv.TaskAlreadyExists):
            sup.add(tv.TaskSpec("slow", forever))
        gate.set()
        async with asyncio.timeout(GUARD):
            assert (await handle).kind is O.CANCELED
        sup.add(tv.TaskSpec("slow", forever))


# --------------------------------------------------------------------------- TaskInfo


async def test_task_info_is_exact_in_every_state(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()

    async def third_time_runs(ctx: tv.TaskContext) -> None:
        if ctx.attempt < 3:
            raise tv.Fail(f"no {ctx.attempt}")
        try:
            await asyncio.Event().wait()
        finally:
            await gate.wait()

    async with sup:
        runner = sup.add(tv.TaskSpec.restartable("runner", third_time_runs, backoff=FAST))
        assert sup.get(runner.id) == tv.TaskInfo(runner.id, "runner", S.WAITING, 0, 0, None)
        await recorder.wait_for(K.ATTEMPT_STARTING, task="runner", attempt=3)
        running = sup.get("runner")
        assert running is not None
        assert running.started_at is not None
        assert running.next_attempt_at is None
        assert running.last_success_at is None
        assert running == tv.TaskInfo(
            runner.id, "runner", S.RUNNING, 3, 2, "no 2", started_at=running.started_at
        )
        assert sup.remove("runner")
        assert sup.get("runner") == tv.TaskInfo(
            runner.id, "runner", S.STOPPING, 3, 2, "no 2", started_at=running.started_at
        )
        gate.set()
        async with asyncio.timeout(GUARD):
            await runner
        assert sup.get("runner") is None


async def test_waiting_task_reports_waiting_until_it_gets_the_slot(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1)
    async with sup:
        holder = sup.add(tv.TaskSpec("holder", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="holder")
        waiter = sup.add(tv.TaskSpec.restartable("waiter", forever))
        for _ in range(5):
            await asyncio.sleep(0)
        assert sup.get("waiter") == tv.TaskInfo(waiter.id, "waiter", S.WAITING, 0, 0, None)
        async with asyncio.timeout(GUARD):
            await holder.cancel()
        await recorder.wait_for(K.ATTEMPT_STARTING, task="waiter")
        info = sup.get("waiter")
        assert info is not None
        assert info.started_at is not None
        assert info == tv.TaskInfo(
            waiter.id, "waiter", S.RUNNING, 1, 0, None, started_at=info.started_at
        )


# --------------------------------------------------------------------------- cancel / remove


async def test_remove_is_true_only_for_the_request_that_stopped_the_task(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()
    async with sup:
        handle = sup.add(slow_cleanup(gate))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="slow")
        assert sup.remove("slow") is True
        assert sup.remove("slow") is False
        assert sup.remove(handle.id) is False
        assert sup.remove("unknown") is False
        assert not handle.done()  # remove does not wait
        gate.set()
        async with asyncio.timeout(GUARD):
            outcome = await handle
        assert outcome.kind is O.CANCELED
        assert sup.remove("slow") is False
        assert await sup.cancel("slow") is False
        assert await sup.cancel(handle.id) is False
        assert await handle.cancel() is False
    assert len(recorder.of(K.TASK_REMOVE_REQUESTED, "slow")) == 1


async def test_cancel_by_id_by_int_and_through_the_handle(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        async with sup:
            a = sup.add(tv.TaskSpec("a", forever))
            b = sup.add(tv.TaskSpec("b", forever))
            c = sup.add(tv.TaskSpec("c", forever))
            assert await sup.cancel(a.id)
            assert await sup.cancel(int(b.id))
            assert await c.cancel()
    assert [h.outcome.kind for h in (a, b, c) if h.outcome] == [O.CANCELED] * 3


async def test_concurrent_cancels_one_true_and_all_wait_for_cleanup(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()
    returned: list[tuple[bool, bool]] = []

    async def cancel(key: str | tv.TaskId) -> None:
        result = await sup.cancel(key)
        returned.append((result, handle.done()))

    async with sup:
        handle = sup.add(slow_cleanup(gate))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="slow")
        keys: list[str | tv.TaskId] = ["slow", handle.id] * 10
        storm = asyncio.gather(*(cancel(k) for k in keys))
        via_handle = asyncio.ensure_future(handle.cancel())
        await recorder.wait_for(K.TASK_REMOVE_REQUESTED, task="slow")
        for _ in range(5):
            await asyncio.sleep(0)
        assert returned == []  # everyone waits for the cleanup
        gate.set()
        async with asyncio.timeout(GUARD):
            await storm
            handle_result = await via_handle
    assert [r for r, _ in returned].count(True) + handle_result == 1
    assert all(done for _, done in returned)
    assert len(returned) == 20
    assert len(recorder.of(K.TASK_REMOVE_REQUESTED, "slow")) == 1


async def test_cancel_while_waiting_for_a_slot(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1)
    async with sup:
        holder = sup.add(tv.TaskSpec("holder", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="holder")
        waiter = sup.add(tv.TaskSpec("waiter", forever))
        for _ in range(5):
            await asyncio.sleep(0)
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("waiter")
        outcome = waiter.outcome
        assert outcome is not None
        assert (outcome.kind, outcome.attempts) == (O.CANCELED, 0)
        assert recorder.of(K.ATTEMPT_STARTING, "waiter") == []
        assert not holder.done()
        # The slot was not leaked: after the holder, a new task runs.
        async with asyncio.timeout(GUARD):
            await holder.cancel()
            assert (await sup.add(tv.TaskSpec.once("next", _return))).kind is O.COMPLETED


async def _return() -> None:
    return None


async def test_remove_before_the_first_attempt_runs_no_body(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    ran: list[int] = []

    async def body() -> None:
        ran.append(1)

    async with sup:
        handle = sup.add(tv.TaskSpec.once("t", body))
        assert sup.remove("t")  # same step as add: the runner has not begun
        async with asyncio.timeout(GUARD):
            outcome = await handle
    assert ran == []
    assert (outcome.kind, outcome.attempts) == (O.CANCELED, 0)
    assert recorder.kinds("t") == [
        K.TASK_ADD_REQUESTED,
        K.TASK_ADDED,
        K.TASK_REMOVE_REQUESTED,
        K.TASK_FINISHED,
        K.TASK_REMOVED,
    ]


async def test_cancel_with_an_expired_timeout_raises_and_the_stop_proceeds(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    gate = asyncio.Event()
    async with sup:
        handle = sup.add(slow_cleanup(gate))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="slow")
        with pytest.raises(tv.TaskTerminationTimeout) as err:
            await sup.cancel("slow", timeout=0.02)
        assert err.value.task_id == handle.id
        assert err.value.timeout == 0.02
        assert isinstance(err.value, tv.TaskvisorError)
        info = sup.get("slow")
        assert info is not None
        assert info.state is S.STOPPING
        # A second caller with a timeout also gives up, and its request is not "the" request.
        with pytest.raises(tv.TaskTerminationTimeout):
            await sup.cancel(handle.id, timeout=0)
        gate.set()
        async with asyncio.timeout(GUARD):
            assert (await handle).kind is O.CANCELED
            assert await sup.cancel("slow", timeout=0.01) is False


async def test_cancel_timeout_on_a_task_that_has_to_be_forced(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=0.1)
    gate = asyncio.Event()
    async with sup:
        handle = sup.add(slow_cleanup(gate))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="slow")
        with pytest.raises(tv.TaskTerminationTimeout):
            await sup.cancel("slow", timeout=0.01)
        async with asyncio.timeout(GUARD):
            outcome = await handle  # the stop went on: forced after grace
    assert outcome.kind is O.FORCE_ABORTED


async def test_readding_a_name_while_the_old_body_is_abandoned(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    """The old task's late end never touches the new task of the same name."""
    sup = make_supervisor(grace=0.05)
    release = asyncio.Event()
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                swallowed += 1

    async with sup:
        old = sup.add(tv.TaskSpec("svc", stubborn))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="svc")
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("svc")  # returns after force + abandon
        assert old.outcome is not None
        assert old.outcome.kind is O.FORCE_ABORTED
        assert swallowed >= 2
        new = sup.add(tv.TaskSpec("svc", forever))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="svc", task_id=new.id)
        release.set()  # the old body now returns, long after its cleanup
        for _ in range(10):
            await asyncio.sleep(0)
        info = sup.get("svc")
        assert info is not None
        assert (info.id, info.state) == (new.id, S.RUNNING)
        assert sup.is_alive("svc")
        assert not new.done()
        assert recorder.of(K.ATTEMPT_SUCCEEDED, "svc") == []
        async with asyncio.timeout(GUARD):
            assert await new.cancel()
    finished = [(e.task_id, e.outcome) for e in recorder.of(K.TASK_FINISHED, "svc")]
    assert finished == [(old.id, O.FORCE_ABORTED), (new.id, O.CANCELED)]


async def test_adds_racing_shutdown_are_refused_or_resolved(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=1.0)
    await sup.start()
    handles: list[tv.TaskHandle] = []
    refused = 0

    async def adder(i: int) -> None:
        nonlocal refused
        for _ in range(i % 7):
            await asyncio.sleep(0)
        try:
            handles.append(sup.add(tv.TaskSpec(f"t{i}", forever)))
        except tv.SupervisorClosed:
            refused += 1

    async def stopper() -> tv.ShutdownReport:
        for _ in range(3):
            await asyncio.sleep(0)
        return await sup.shutdown()

    async with asyncio.timeout(GUARD):
        results = await asyncio.gather(*(adder(i) for i in range(140)), stopper())
    report = results[-1]
    assert isinstance(report, tv.ShutdownReport)
    assert not report.grace_exceeded
    assert refused + len(handles) == 140
    assert refused > 0
    assert handles
    assert all(h.done() for h in handles)
    assert {h.outcome.kind for h in handles if h.outcome} == {O.CANCELED}
    assert sup.list() == []
    finished = {e.task_id for e in recorder.of(K.TASK_FINISHED)}
    assert finished == {h.id for h in handles}


def test_a_supervisor_refuses_a_second_event_loop() -> None:
    sup = tv.Supervisor(config=tv.SupervisorConfig(grace=0.2))

    async def first() -> None:
        async with sup:
            handle = sup.add(tv.TaskSpec.once("once", _instant))
            assert (await handle).ok

    async def second() -> None:
        with pytest.raises(RuntimeError, match="event loop it was started on"):
            sup.add(tv.TaskSpec.once("again", _instant))

    asyncio.run(first())
    asyncio.run(second())


async def _instant() -> None:
    return None
