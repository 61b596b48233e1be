"""``taskvisor.testing``: the event recorder and the switches that make retries instant."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import taskvisor as tv
from conftest import make_event
from taskvisor.testing import (
    NO_BACKOFF_DEFAULTS,
    ZERO_BACKOFF,
    EventRecorder,
    no_backoff,
)

E = tv.EventKind
ROOT = Path(__file__).resolve().parent.parent
SLOW = tv.BackoffPolicy.constant(30.0)
"""A backoff no test could sit through: only the testing switches make these tests pass."""


def flaky(failures: int) -> tv.TaskSpec:
    """A restartable task that fails ``failures`` times, then succeeds; 30 s backoff."""
    left = failures

    async def body() -> None:
        nonlocal left
        if left:
            left -= 1
            raise tv.Fail("not yet")

    return tv.TaskSpec.restartable("flaky", body, backoff=SLOW)


async def _noop() -> None:
    return None


async def _boom() -> None:
    raise RuntimeError("boom")


def quiet() -> tv.SupervisorConfig:
    return tv.SupervisorConfig(handle_signals=False, grace=5.0)


# ---------------------------------------------------------------------------- EventRecorder


async def test_recorder_records_every_event_in_order() -> None:
    rec = EventRecorder()
    async with asyncio.timeout(10):
        await tv.Supervisor(quiet(), subscribers=[rec]).run([tv.TaskSpec.once("a", _boom)])
    assert rec.kinds("a") == [
        E.TASK_ADD_REQUESTED,
        E.TASK_ADDED,
        E.ATTEMPT_STARTING,
        E.ATTEMPT_FAILED,
        E.TASK_FINISHED,
        E.TASK_REMOVED,
    ]
    assert rec.kinds()[-2:] == [E.SHUTDOWN_REQUESTED, E.ALL_STOPPED_WITHIN_GRACE]
    seqs = [e.seq for e in rec]
    assert seqs == sorted(seqs)
    assert len(rec) == len(seqs) == len(rec.events)


async def test_wait_for_wakes_on_a_live_event_and_returns_it() -> None:
    rec = EventRecorder()
    started = asyncio.Event()

    async def body() -> None:
        started.set()
        await asyncio.Event().wait()

    sup = tv.Supervisor(quiet(), subscribers=[rec])
    async with asyncio.timeout(10), sup:
        handle = sup.add(tv.TaskSpec.once("blocked", body))
        event = await rec.wait_for(E.ATTEMPT_STARTING, task="blocked")
        assert event.kind is E.ATTEMPT_STARTING
        assert event.task_id == handle.id
        assert event.attempt == 1
        waiter = asyncio.create_task(rec.wait_for(E.TASK_FINISHED, task="blocked"))
        await started.wait()
        assert not waiter.done()
        assert await handle.cancel() is True
        finished = await waiter
    assert finished.outcome is tv.OutcomeKind.CANCELED


async def test_wait_for_filters_by_kind_set_task_predicate_and_count() -> None:
    rec = EventRecorder()
    for name, attempt in [("a", 1), ("b", 1), ("a", 2), ("a", 3)]:
        rec.on_event(make_event(E.ATTEMPT_STARTING, name, tv.TaskId(1), attempt=attempt))
    rec.on_event(make_event(E.TASK_FINISHED, "a", tv.TaskId(1), outcome=tv.OutcomeKind.FAILED))

    assert (await rec.wait_for(E.ATTEMPT_STARTING, task="a", count=3)).attempt == 3
    assert (await rec.wait_for(task="b")).task == "b"
    second = await rec.wait_for(E.ATTEMPT_STARTING, where=lambda e: e.attempt == 2)
    assert (second.task, second.attempt) == ("a", 2)
    either = await rec.wait_for({E.TASK_FINISHED, E.TASK_REMOVED}, task="a")
    assert either.kind is E.TASK_FINISHED
    assert [e.attempt for e in rec.select(E.ATTEMPT_STARTING, task="a")] == [1, 2, 3]
    assert len(rec.select()) == 5


async def test_wait_for_wakes_once_the_matching_event_is_recorded() -> None:
    rec = EventRecorder()
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(rec.wait_for(E.TASK_REMOVED, task="x", count=2))
    await asyncio.sleep(0)  # let it start waiting; then feed events from callbacks
    for n in range(3):
        loop.call_soon(rec.on_event, make_event(E.TASK_REMOVED, "x", tv.TaskId(n + 1)))
    async with asyncio.timeout(5):
        got = await waiter
    assert got.task_id == tv.TaskId(2)


async def test_wait_for_timeout_names_what_was_recorded() -> None:
    rec = EventRecorder()
    rec.on_event(make_event(E.TASK_ADDED, "t", tv.TaskId(1)))
    with pytest.raises(
        TimeoutError, match=r"task_finished for task 't'.*recorded for 't': task_added"
    ):
        await rec.wait_for(E.TASK_FINISHED, task="t", timeout=0.01)


async def test_clear_forgets_events_and_waiters_see_only_new_ones() -> None:
    rec = EventRecorder()
    rec.on_event(make_event(E.TASK_ADDED, "old", tv.TaskId(1)))
    rec.clear()
    assert len(rec) == 0
    assert rec.kinds() == []
    waiter = asyncio.create_task(rec.wait_for(E.TASK_ADDED))
    await asyncio.sleep(0)
    rec.on_event(make_event(E.TASK_ADDED, "new", tv.TaskId(2)))
    async with asyncio.timeout(5):
        assert (await waiter).task == "new"


async def test_recorder_arguments_are_checked() -> None:
    rec = EventRecorder()
    with pytest.raises(TypeError, match="kind"):
        await rec.wait_for("task_added")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="kind"):
        rec.select([E.TASK_ADDED, "x"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="task"):
        rec.select(task=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count"):
        await rec.wait_for(E.TASK_ADDED, count=0)
    with pytest.raises(ValueError, match="timeout"):
        await rec.wait_for(E.TASK_ADDED, timeout=-1)
    with pytest.raises(ValueError, match="capacity"):
        EventRecorder(capacity=0)
    assert EventRecorder(capacity=7).queue_capacity == 7


# ------------------------------------------------------------------- no backoff in tests


async def test_no_backoff_makes_every_failure_backoff_zero() -> None:
    rec = EventRecorder()
    with no_backoff():
        async with asyncio.timeout(10):
            await tv.Supervisor(quiet(), subscribers=[rec]).run([flaky(2)])
    backoffs = rec.select(E.BACKOFF_SCHEDULED, task="flaky")
    assert [e.delay for e in backoffs] == [0.0, 0.0]
    assert [e.backoff_source for e in backoffs] == [tv.BackoffSource.FAILURE] * 2
    finished = await rec.wait_for(E.TASK_FINISHED, task="flaky")
    assert finished.outcome is tv.OutcomeKind.COMPLETED
    assert await observed_backoff() == 0.002  # and it is off again after the block


async def observed_backoff() -> float:
    """The delay a task's one retry waits right now: its policy's 2 ms, or 0 under the switch.

    Read from the BACKOFF_SCHEDULED event of a real supervisor, as a user would see it.
    """
    rec = EventRecorder()
    left = 1

    async def once_failing() -> None:
        nonlocal left
        if left:
            left -= 1
            raise tv.Fail("x")

    spec = tv.TaskSpec.restartable("t", once_failing, backoff=tv.BackoffPolicy.constant(0.002))
    async with asyncio.timeout(10):
        await tv.Supervisor(quiet(), subscribers=[rec]).run([spec])
    (backoff,) = rec.select(E.BACKOFF_SCHEDULED)
    assert backoff.delay is not None
    return backoff.delay


async def test_no_backoff_nests_and_restores_the_policy_delay() -> None:
    assert await observed_backoff() == 0.002
    with no_backoff():
        with no_backoff():
            assert await observed_backoff() == 0.0
        assert await observed_backoff() == 0.0  # the outer block still holds
    assert await observed_backoff() == 0.002
    with pytest.raises(RuntimeError), no_backoff():
        raise RuntimeError("the switch is restored on errors too")
    assert await observed_backoff() == 0.002


async def test_no_backoff_keeps_periodic_intervals() -> None:
    rec = EventRecorder()
    with no_backoff():
        sup = tv.Supervisor(quiet(), subscribers=[rec])
        async with asyncio.timeout(10), sup:
            sup.add(tv.TaskSpec.periodic("tick", _noop, every=30.0))
            event = await rec.wait_for(E.BACKOFF_SCHEDULED, task="tick")
    assert event.delay == 30.0
    assert event.backoff_source is tv.BackoffSource.SUCCESS


async def test_no_backoff_defaults_preset() -> None:
    assert NO_BACKOFF_DEFAULTS.backoff == ZERO_BACKOFF
    assert ZERO_BACKOFF.delay(5) == 0.0
    rec = EventRecorder()
    body = flaky(2).fn
    defaults = dataclasses.replace(NO_BACKOFF_DEFAULTS, max_retries=5)
    async with asyncio.timeout(10):
        await tv.Supervisor(quiet(), defaults=defaults, subscribers=[rec]).run(
            [tv.TaskSpec("inherits", body)]
        )
    assert [e.delay for e in rec.select(E.BACKOFF_SCHEDULED)] == [0.0, 0.0]
    assert (await rec.wait_for(E.TASK_FINISHED)).outcome is tv.OutcomeKind.COMPLETED


def test_example_testing_kit_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.testing_kit", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "ok: flaky recovered after 2 failures" in out.stdout
