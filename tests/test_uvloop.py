"""The supervisor runs unchanged on uvloop (issue 7): real scenarios, each on a uvloop loop.

Skipped only when uvloop is not importable (it is in the ``dev`` extra, so CI runs these).
Each test runs its scenario through ``asyncio.Runner(loop_factory=uvloop.new_event_loop)``
and first checks that the running loop really is uvloop's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest

import taskvisor as tv
from conftest import GUARD, Recorder, check_task_events, forever
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O

uvloop = pytest.importorskip("uvloop")


def on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario`` on a fresh uvloop event loop, under a guard."""

    async def main() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with asyncio.timeout(GUARD * 2):
            await scenario()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def config(grace: float = 5.0) -> tv.SupervisorConfig:
    return tv.SupervisorConfig(grace=grace, handle_signals=False)


def test_run_batch_with_restarts() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        failures = {"flaky": 2}

        async def flaky() -> None:
            if failures["flaky"]:
                failures["flaky"] -= 1
                raise tv.Fail("not yet")

        async def noop() -> None:
            pass

        specs = [tv.TaskSpec.once(f"t{i}", noop) for i in range(200)]
        specs.append(
            tv.TaskSpec.restartable("flaky", flaky, backoff=tv.BackoffPolicy.constant(0.001))
        )
        sup = tv.Supervisor(config(grace=5.0), subscribers=[recorder])
        report = await sup.run(specs)

        assert report == tv.ShutdownReport(grace_exceeded=False, stuck=(), grace=5.0)
        assert check_task_events(recorder.events) == 201
        finished = recorder.of(K.TASK_FINISHED)
        assert {e.outcome for e in finished} == {O.COMPLETED}
        assert len(recorder.of(K.ATTEMPT_STARTING, "flaky")) == 3
        assert sup.list() == []

    on_uvloop(scenario)


def test_add_then_cancel() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with tv.Supervisor(config(grace=5.0), subscribers=[recorder]) as sup:
            handle = sup.add(tv.TaskSpec.once("idle", forever))
            await recorder.wait_for(K.ATTEMPT_STARTING, task="idle")
            assert sup.get("idle") is not None
            assert await sup.cancel(handle.id) is True
            outcome = await handle
            assert outcome.kind is O.CANCELED
            assert not sup.is_alive("idle")
            assert await sup.cancel("idle") is False
        assert recorder.kinds("idle")[-2:] == [K.TASK_FINISHED, K.TASK_REMOVED]
        check_task_events(recorder.events)

    on_uvloop(scenario)


def test_attempt_timeout() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with tv.Supervisor(config(), subscribers=[recorder]) as sup:
            outcome = await sup.add(tv.TaskSpec.once("slow", forever, timeout=0.05))
        assert outcome.kind is O.FAILED
        assert outcome.attempts == 1
        timed_out = recorder.of(K.ATTEMPT_TIMED_OUT, "slow")
        assert len(timed_out) == 1
        assert timed_out[0].timeout == 0.05
        duration = timed_out[0].duration
        assert duration is not None
        assert duration >= 0.04
        check_task_events(recorder.events)

    on_uvloop(scenario)


def test_shutdown_with_grace_exceeded() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        started = asyncio.Event()

        async def stubborn() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.Event().wait()  # ignores the stop until forced

        async def polite(ctx: tv.TaskContext) -> None:
            await ctx.cancelled()

        sup = tv.Supervisor(config(grace=0.1), subscribers=[recorder])
        await sup.start()
        slow = sup.add(tv.TaskSpec.once("stubborn", stubborn))
        quick = sup.add(tv.TaskSpec.once("polite", polite))
        async with asyncio.timeout(GUARD):
            await started.wait()
        await recorder.wait_for(K.ATTEMPT_STARTING, task="polite")
        report = await sup.shutdown()

        assert report == tv.ShutdownReport(grace_exceeded=True, stuck=("stubborn",), grace=0.1)
        assert (await slow).kind is O.FORCE_ABORTED
        assert (await quick).kind is O.CANCELED
        assert len(recorder.of(K.GRACE_EXCEEDED)) == 1
        assert not recorder.of(K.ALL_STOPPED_WITHIN_GRACE)
        check_task_events(recorder.events)

    on_uvloop(scenario)


def test_subscribers_of_every_kind_see_every_event() -> None:
    async def scenario() -> None:
        sync_seen: list[tv.Event] = []
        async_seen: list[tv.Event] = []
        thread_seen: list[tv.Event] = []
        threads: set[int] = set()

        class Sync:
            def on_event(self, event: tv.Event) -> None:
                sync_seen.append(event)

        class Async:
            async def on_event(self, event: tv.Event) -> None:
                await asyncio.sleep(0)
                async_seen.append(event)

        class Blocking:
            blocking = True

            def on_event(self, event: tv.Event) -> None:
                threads.add(threading.get_ident())
                thread_seen.append(event)

        class Broken:
            def on_event(self, event: tv.Event) -> None:
                raise RuntimeError("boom")

        recorder = Recorder()
        sup = tv.Supervisor(config(), subscribers=[recorder, Sync(), Async(), Blocking(), Broken()])
        stream = sup.events()
        streamed: list[tv.Event] = []

        async def read() -> None:
            async for event in stream:
                streamed.append(event)

        reader = asyncio.create_task(read())

        async def noop() -> None:
            pass

        await sup.run([tv.TaskSpec.once(f"t{i}", noop) for i in range(20)])
        await reader

        # Panic reports raised while the queues drain may come too late for some subscribers:
        # compare the lifecycle events, which every subscriber must see, in publish order.
        def lifecycle(events: list[tv.Event]) -> list[int]:
            return [e.seq for e in events if not e.is_diagnostic]

        everything = lifecycle(recorder.events)
        assert len(everything) == 20 * 6 + 2  # 6 per task, SHUTDOWN_REQUESTED, ALL_STOPPED
        panics = recorder.of(K.SUBSCRIBER_PANICKED)
        assert panics
        assert {e.task for e in panics} == {"Broken"}
        assert "boom" in (panics[0].reason or "")
        assert check_task_events(recorder.events) == 20
        for seen in (sync_seen, async_seen, thread_seen, streamed):
            assert lifecycle(seen) == everything
        assert threads
        assert threading.get_ident() not in threads

    on_uvloop(scenario)
