"""Concurrency: the ``max_concurrent`` limit (a slot only while an attempt runs), storms of
concurrent adds/cancels/removes, and calls from the wrong thread (SPEC §3)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory, forever
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O


class Gauge:
    """Counts bodies running right now and remembers the peak."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.entered = 0

    def body(
        self, hold: int = 3, fail_every: int = 0
    ) -> Callable[[tv.TaskContext], Awaitable[None]]:
        async def run(ctx: tv.TaskContext) -> None:
            self.now += 1
            self.entered += 1
            self.peak = max(self.peak, self.now)
            try:
                for _ in range(hold):
                    await asyncio.sleep(0)
                if fail_every and ctx.attempt % fail_every:
                    raise tv.Fail("again")
            finally:
                self.now -= 1

        return run


async def yields(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- max_concurrent


@pytest.mark.parametrize("limit", [1, 3, 8])
async def test_max_concurrent_is_never_exceeded(
    make_supervisor: SupervisorFactory, limit: int
) -> None:
    gauge = Gauge()
    sup = make_supervisor(max_concurrent=limit)
    async with asyncio.timeout(GUARD):
        async with sup:
            handles = [sup.add(tv.TaskSpec.once(f"t{i}", gauge.body())) for i in range(150)]
            outcomes = [await h for h in handles]
    assert {o.kind for o in outcomes} == {O.COMPLETED}
    assert gauge.entered == 150
    assert gauge.peak == limit


async def test_limit_holds_with_retries_timeouts_and_cancels(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    gauge = Gauge()
    limit = 4
    sup = make_supervisor(max_concurrent=limit)
    rng = random.Random(7)

    async def hang(ctx: tv.TaskContext) -> None:
        await gauge.body(hold=1)(ctx)
        await asyncio.Event().wait()

    async with asyncio.timeout(GUARD):
        async with sup:
            handles = []
            for i in range(120):
                kind = i % 3
                if kind == 0:
                    spec = tv.TaskSpec.restartable(
                        f"r{i}", gauge.body(hold=2, fail_every=3), backoff=FAST
                    )
                elif kind == 1:
                    spec = tv.TaskSpec.restartable(
                        f"h{i}", hang, timeout=0.002, backoff=FAST, max_retries=1
                    )
                else:
                    spec = tv.TaskSpec(f"c{i}", hang)
                handles.append(sup.add(spec))
            victims = [h for h in handles if h.name.startswith("c")]
            rng.shuffle(victims)

            async def stop(h: tv.TaskHandle) -> bool:
                await yields(rng.randrange(20))
                return await h.cancel()

            assert all(await asyncio.gather(*(stop(h) for h in victims)))
            outcomes = [await h for h in handles]
    assert gauge.peak <= limit
    kinds = {h.name[0]: set() for h in handles}  # type: dict[str, set[O]]
    for h, o in zip(handles, outcomes, strict=True):
        kinds[h.name[0]].add(o.kind)
    assert kinds == {"r": {O.COMPLETED}, "h": {O.FAILED}, "c": {O.CANCELED}}


async def test_the_slot_is_free_during_backoff(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1)

    async def fail() -> None:
        raise tv.Fail("x")

    async with asyncio.timeout(GUARD):
        async with sup:
            sup.add(
                tv.TaskSpec.restartable("a", fail, backoff=tv.BackoffPolicy.constant(GUARD * 3))
            )
            await recorder.wait_for(K.BACKOFF_SCHEDULED, task="a")
            other = await sup.add(tv.TaskSpec.once("b", _noop))
            info = sup.get("a")
            assert info is not None
            assert info.state is tv.TaskState.BACKOFF
    assert other.kind is O.COMPLETED


async def test_the_slot_is_free_during_a_periodic_interval(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1)
    async with asyncio.timeout(GUARD):
        async with sup:
            sup.add(tv.TaskSpec.periodic("p", _noop, GUARD * 3))
            await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p")
            other = await sup.add(tv.TaskSpec.once("b", _noop))
    assert other.kind is O.COMPLETED


async def test_waiting_for_a_slot_is_fifo_and_starts_after_a_slot_is_held(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1)
    order: list[str] = []

    def body(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            order.append(name)
            await yields(2)

        return run

    async with asyncio.timeout(GUARD):
        async with sup:
            handles = [sup.add(tv.TaskSpec.once(f"t{i}", body(f"t{i}"))) for i in range(10)]
            for h in handles:
                await h
    assert order == [f"t{i}" for i in range(10)]
    # ATTEMPT_STARTING (slot held) of the next comes after the previous attempt ended.
    attempts = [e for e in recorder.events if e.kind.value.startswith("attempt_")]
    assert [e.kind for e in attempts] == [K.ATTEMPT_STARTING, K.ATTEMPT_SUCCEEDED] * 10


async def test_an_abandoned_body_gives_its_slot_back(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1, grace=0.05)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    try:
        async with asyncio.timeout(GUARD):
            async with sup:
                held = sup.add(tv.TaskSpec("stubborn", stubborn))
                await recorder.wait_for(K.ATTEMPT_STARTING, task="stubborn")
                assert await held.cancel()
                assert held.outcome is not None
                assert held.outcome.kind is O.FORCE_ABORTED
                nxt = await sup.add(tv.TaskSpec.once("next", _noop))
                assert nxt.kind is O.COMPLETED
    finally:
        release.set()


async def _noop() -> None:
    return None


async def test_a_stop_landing_just_as_the_slot_is_granted_does_not_leak_it(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    """The holder frees the slot and, in the same loop iteration and before the waiter runs,
    the waiter is removed: the slot it was granted must go to the next task."""
    sup = make_supervisor(max_concurrent=1)
    gate = asyncio.Event()

    async def holder() -> None:
        await gate.wait()
        # Runs right after this step, i.e. after the slot is released, before the waiter wakes.
        asyncio.get_running_loop().call_soon(sup.remove, "waiter")

    async with asyncio.timeout(GUARD):
        async with sup:
            first = sup.add(tv.TaskSpec.once("holder", holder))
            await recorder.wait_for(K.ATTEMPT_STARTING, task="holder")
            waiter = sup.add(tv.TaskSpec.once("waiter", forever))
            await yields(5)
            gate.set()
            assert (await first).kind is O.COMPLETED
            outcome = await waiter
            assert (outcome.kind, outcome.attempts) == (O.CANCELED, 0)
            third = await sup.add(tv.TaskSpec.once("third", _noop))
    assert third.kind is O.COMPLETED


# --------------------------------------------------------------------------- storms


async def test_storm_of_concurrent_adds_cancels_and_removes(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=10)
    rng = random.Random(1)
    n = 200
    handles: dict[str, tv.TaskHandle] = {}

    async def add(i: int) -> None:
        await yields(rng.randrange(10))
        kind = i % 4
        if kind == 0:
            spec = tv.TaskSpec(f"t{i}", forever)
        elif kind == 1:
            spec = tv.TaskSpec.once(f"t{i}", _noop)
        elif kind == 2:
            spec = tv.TaskSpec.restartable(f"t{i}", _failing, backoff=FAST)
        else:
            spec = tv.TaskSpec.periodic(f"t{i}", _noop, 0.001)
        handles[spec.name] = sup.add(spec)

    async with asyncio.timeout(GUARD * 2):
        async with sup:
            await asyncio.gather(*(add(i) for i in range(n)))
            assert len(sup.list()) <= n
            names = [f"t{i}" for i in range(n)] * 3
            rng.shuffle(names)

            async def stop(name: str) -> bool:
                await yields(rng.randrange(10))
                if rng.random() < 0.5:
                    return sup.remove(name) or await sup.cancel(name)
                return await sup.cancel(name)

            results = await asyncio.gather(*(stop(name) for name in names))
            outcomes = {name: await h for name, h in handles.items()}
            assert sup.list() == []
    # Each task stopped at most once (the once-tasks may have finished first).
    true_by_name: dict[str, int] = {}
    for name, r in zip(names, results, strict=True):
        true_by_name[name] = true_by_name.get(name, 0) + r
    assert all(count <= 1 for count in true_by_name.values())
    for i in range(n):
        expected = O.COMPLETED if i % 4 == 1 else O.CANCELED
        kind = outcomes[f"t{i}"].kind
        assert kind is expected or (i % 4 == 1 and kind is O.CANCELED), (i, kind)
        if i % 4 != 1:
            assert true_by_name[f"t{i}"] == 1
    finished = [int(e.task_id or 0) for e in recorder.of(K.TASK_FINISHED)]
    assert sorted(finished) == sorted(h.id for h in handles.values())


async def _failing() -> None:
    raise tv.Fail("x")


async def test_storm_of_add_cancel_readd_on_the_same_names(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    rng = random.Random(2)
    handles: list[tv.TaskHandle] = []
    refused = 0

    async def churn(name: str) -> None:
        nonlocal refused
        for _ in range(8):
            await yields(rng.randrange(4))
            try:
                handles.append(sup.add(tv.TaskSpec(name, forever)))
            except tv.TaskAlreadyExists:
                refused += 1
            await yields(rng.randrange(4))
            if rng.random() < 0.5:
                await sup.cancel(name)
            else:
                sup.remove(name)
            names = [i.name for i in sup.list()]
            assert len(names) == len(set(names))

    async with asyncio.timeout(GUARD * 2):
        async with sup:
            await asyncio.gather(*(churn(f"n{i % 25}") for i in range(100)))
            outcomes = [await h for h in handles]
    assert refused > 0
    assert {o.kind for o in outcomes} == {O.CANCELED}
    assert len({h.id for h in handles}) == len(handles)
    finished = [int(e.task_id or 0) for e in recorder.of(K.TASK_FINISHED)]
    assert sorted(finished) == sorted(h.id for h in handles)
    assert len(recorder.of(K.TASK_REMOVED)) == len(handles)


async def test_storm_of_cancels_while_waiting_for_slots(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    gauge = Gauge()
    limit = 3
    sup = make_supervisor(max_concurrent=limit)
    rng = random.Random(3)

    async def long(ctx: tv.TaskContext) -> None:
        await gauge.body(hold=5)(ctx)

    async with asyncio.timeout(GUARD * 2):
        async with sup:
            handles = [sup.add(tv.TaskSpec.once(f"t{i}", long)) for i in range(150)]
            victims = handles[::2]
            rng.shuffle(victims)

            async def stop(h: tv.TaskHandle) -> None:
                await yields(rng.randrange(30))
                await h.cancel()

            await asyncio.gather(*(stop(h) for h in victims))
            outcomes = {h.name: await h for h in handles}
    assert gauge.peak <= limit
    started = {e.task for e in recorder.of(K.ATTEMPT_STARTING)}
    for h in handles:
        o = outcomes[h.name]
        if h in victims:
            assert o.kind in (O.CANCELED, O.COMPLETED)
            assert o.attempts == (1 if h.name in started else 0)
        else:
            assert o.kind is O.COMPLETED
    assert gauge.entered == len(started)


# --------------------------------------------------------------------------- threads


async def test_calls_from_another_thread_raise_a_clear_runtime_error(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        handle = sup.add(tv.TaskSpec("t", forever))
        spec = tv.TaskSpec("other", forever)
        calls: list[Callable[[], Any]] = [
            lambda: sup.add(spec),
            lambda: sup.remove("t"),
            lambda: sup.list(),
            lambda: sup.get("t"),
            lambda: sup.is_alive("t"),
            lambda: sup.events(),
            lambda: asyncio.run(sup.cancel("t")),
            lambda: asyncio.run(handle.cancel()),
            lambda: asyncio.run(sup.shutdown()),
            lambda: asyncio.run(sup.start()),
            lambda: asyncio.run(sup.run([spec])),
        ]
        for call in calls:
            with pytest.raises(RuntimeError, match="thread"):
                await asyncio.to_thread(call)
        # Nothing happened to the supervisor.
        assert [i.name for i in sup.list()] == ["t"]
        assert not sup.closed
        info = sup.get("t")
        assert info is not None
        assert info.state is not tv.TaskState.STOPPING


async def test_chaos_of_every_operation_racing_shutdown(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    """Random adds, cancels (some with timeouts), removes and re-adds race a shutdown."""
    sup = make_supervisor(max_concurrent=5, grace=0.1)
    rng = random.Random(4)
    release = asyncio.Event()
    handles: list[tv.TaskHandle] = []
    errors: list[BaseException] = []

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    async def slow_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)

    bodies: list[Callable[..., Awaitable[None]]] = [forever, _noop, _failing, stubborn, slow_stop]
    shutting: list[asyncio.Future[tv.ShutdownReport]] = []

    async def actor(i: int) -> None:
        for step in range(6):
            await yields(rng.randrange(6))
            name = f"n{rng.randrange(30)}"
            op = rng.random()
            try:
                if op < 0.5:
                    body = bodies[rng.randrange(len(bodies))]
                    handles.append(
                        sup.add(tv.TaskSpec.restartable(name, body, backoff=FAST, max_retries=3))
                    )
                elif op < 0.7:
                    await sup.cancel(name, timeout=rng.choice([None, 0.0, 0.005]))
                elif op < 0.9:
                    sup.remove(name)
                else:
                    sup.get(name)
                    sup.list()
            except (tv.TaskAlreadyExists, tv.SupervisorClosed, tv.TaskTerminationTimeout):
                pass
            except BaseException as exc:  # anything else is a bug
                errors.append(exc)
            if i == 0 and step == 3:
                shutting.append(asyncio.ensure_future(sup.shutdown()))

    try:
        async with asyncio.timeout(GUARD * 2):
            await sup.start()
            await asyncio.gather(*(actor(i) for i in range(60)))
            report = await sup.shutdown()
            assert await shutting[0] is report
            outcomes = [await h for h in handles]
    finally:
        release.set()
    assert errors == []
    assert sup.list() == []
    assert handles
    forced = {h.name for h, o in zip(handles, outcomes, strict=True) if o.kind is O.FORCE_ABORTED}
    assert set(report.stuck) <= forced
    assert report.grace_exceeded == bool(report.stuck)
    assert report.stuck == tuple(sorted(report.stuck))
    finished = sorted(int(e.task_id or 0) for e in recorder.of(K.TASK_FINISHED))
    assert finished == sorted(h.id for h in handles)
