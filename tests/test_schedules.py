"""Periodic tasks that look healthy, and their schedules: ``TaskState.SCHEDULED`` vs
``BACKOFF``, ``TaskInfo.restarts`` and times, fixed rate, jitter, first delay, cron
(SPEC §13, 13.1.5, 13.1.8, 13.1.9)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import math
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O
from taskvisor import TaskState as S

LONG = GUARD * 6
"""An interval or delay no test waits out."""

TOL = 0.005
"""Slack between two wall-clock readings of one step (they are microseconds apart)."""


async def until(check: Callable[[], bool], what: str = "condition") -> None:
    """Wait for ``check()`` to hold, polling every millisecond, under the guard.

    For a state that no event announces (the wait for a first run publishes nothing).
    """
    try:
        async with asyncio.timeout(GUARD):
            for _ in itertools.count():
                if check():
                    return
                await asyncio.sleep(0.001)
    except TimeoutError:
        pytest.fail(f"{what} did not hold within {GUARD}s")


def info(sup: tv.Supervisor, name: str) -> tv.TaskInfo:
    got = sup.get(name)
    assert got is not None, f"{name} is not registered"
    return got


def state_of(sup: tv.Supervisor, name: str) -> S | None:
    got = sup.get(name)
    return None if got is None else got.state


async def succeed() -> None:
    pass


async def fail_first(ctx: tv.TaskContext) -> None:
    if ctx.attempt == 1:
        raise tv.Fail("first run fails")


# --------------------------------------------------------------------------- SCHEDULED vs BACKOFF


async def test_waiting_after_a_success_is_scheduled_and_after_a_failure_backoff(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec.periodic("healthy", succeed, LONG))
        sup.add(
            tv.TaskSpec.periodic(
                "failing", fail_first, LONG, backoff=tv.BackoffPolicy.constant(LONG)
            )
        )
        ok = await recorder.wait_for(K.BACKOFF_SCHEDULED, task="healthy")
        bad = await recorder.wait_for(K.BACKOFF_SCHEDULED, task="failing")
        assert ok.backoff_source is tv.BackoffSource.SUCCESS
        assert bad.backoff_source is tv.BackoffSource.FAILURE
        assert info(sup, "healthy").state is S.SCHEDULED
        assert info(sup, "failing").state is S.BACKOFF
        assert sup.state_counts()[S.SCHEDULED] == 1
        assert sup.state_counts()[S.BACKOFF] == 1


async def test_a_periodic_task_that_recovers_goes_from_backoff_to_scheduled(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec.periodic("p", fail_first, LONG, backoff=FAST))
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", count=2)
        got = info(sup, "p")
        assert (got.state, got.attempt, got.restarts) == (S.SCHEDULED, 2, 1)
        assert got.last_error == "first run fails"  # the last failure stays visible


async def test_a_healthy_periodic_task_shows_no_restarts(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.periodic("tick", succeed, 0.001))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="tick", count=6)
        got = info(sup, "tick")
        assert got.attempt >= 6
        assert got.restarts == 0
        assert got.last_error is None
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert outcome.kind is O.CANCELED
    assert outcome.reason is not None
    assert "error" not in outcome.reason


async def test_restarts_count_only_attempts_after_a_failure(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # S F S F F S S: attempts 3, 5, 6 follow a failure (2, 4, 5); 2, 4, 7, 8 follow a success.
    script = "SFSFFSSS"

    async def body(ctx: tv.TaskContext) -> None:
        if script[ctx.attempt - 1 if ctx.attempt <= len(script) else -1] == "F":
            raise tv.Fail(f"no {ctx.attempt}")

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec.periodic("p", body, LONG, backoff=FAST))
        # The wait after attempt 1 is LONG: restart() ends it (13.1.6), each time.
        for attempt in range(1, 8):
            await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", attempt=attempt)
            if script[attempt - 1] == "S":
                assert await sup.restart("p")
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", attempt=8)
        got = info(sup, "p")
        assert got.attempt == 8
        assert got.restarts == 3


# --------------------------------------------------------------------------- TaskInfo times


async def test_times_while_running_scheduled_and_backing_off(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    gate = asyncio.Event()

    async def body(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 1:
            await gate.wait()
            return
        raise tv.Fail("second fails")

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        before = time.time()
        sup.add(tv.TaskSpec.periodic("p", body, LONG, backoff=tv.BackoffPolicy.constant(LONG)))
        fresh = info(sup, "p")
        assert (fresh.started_at, fresh.last_success_at) == (None, None)

        starting = await recorder.wait_for(K.ATTEMPT_STARTING, task="p")
        running = info(sup, "p")
        assert running.state is S.RUNNING
        assert running.started_at is not None
        assert before <= running.started_at <= time.time()
        assert running.started_at == pytest.approx(starting.at, abs=TOL)
        assert running.next_attempt_at is None  # 13.1.5: None while an attempt runs
        assert running.last_success_at is None

        gate.set()
        waiting = await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p")
        scheduled = info(sup, "p")
        assert scheduled.state is S.SCHEDULED
        assert scheduled.started_at == running.started_at  # the last attempt's start
        assert scheduled.last_success_at is not None
        assert running.started_at <= scheduled.last_success_at <= waiting.at + TOL
        assert scheduled.next_attempt_at == pytest.approx(waiting.at + LONG, abs=TOL)

        assert await sup.restart("p")  # attempt 2 now; it fails
        failed = await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", attempt=2)
        backoff = info(sup, "p")
        assert backoff.state is S.BACKOFF
        assert backoff.started_at is not None
        assert backoff.started_at > scheduled.last_success_at
        assert backoff.last_success_at == scheduled.last_success_at  # the last *success*
        assert backoff.next_attempt_at == pytest.approx(failed.at + LONG, abs=TOL)


async def test_times_of_a_task_waiting_for_its_first_attempt(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(max_concurrent=1)
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec.once("holder", hold))
        await recorder.wait_for(K.ATTEMPT_STARTING, task="holder")
        sup.add(tv.TaskSpec.once("waiter", succeed))
        got = info(sup, "waiter")
        assert got.state is S.WAITING
        assert (got.started_at, got.last_success_at, got.next_attempt_at) == (None, None, None)
        gate.set()


# --------------------------------------------------------------------------- first delay, jitter


async def test_first_delay_is_scheduled_and_gets_no_jitter(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        before = time.time()
        sup.add(tv.TaskSpec.periodic("p", succeed, LONG, first_delay=0.05, jitter=LONG))
        await until(lambda: state_of(sup, "p") is not S.WAITING, "leaving WAITING")
        after = time.time()
        got = info(sup, "p")
        # Waiting for a first run is SCHEDULED (13.1.5); the wait is first_delay, no jitter.
        assert got.state is S.SCHEDULED
        assert got.attempt == 0
        assert got.next_attempt_at is not None
        assert before + 0.05 - TOL <= got.next_attempt_at <= after + 0.05 + TOL
        starting = await recorder.wait_for(K.ATTEMPT_STARTING, task="p")
        assert starting.at >= before + 0.05 - TOL
        # No BACKOFF_SCHEDULED before the first attempt: a task's events begin with it.
        assert recorder.kinds("p")[:3] == [
            K.TASK_ADD_REQUESTED,
            K.TASK_ADDED,
            K.ATTEMPT_STARTING,
        ]


async def test_a_first_delay_can_be_cut_short_by_a_stop(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.periodic("p", succeed, 1.0, first_delay=LONG))
        await until(lambda: state_of(sup, "p") is S.SCHEDULED, "SCHEDULED")
        assert await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert (outcome.kind, outcome.attempts) == (O.CANCELED, 0)
    assert recorder.of(K.ATTEMPT_STARTING, "p") == []


async def test_jitter_adds_up_to_its_amount_to_each_wait(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    every, jitter = 0.002, 0.004
    starts: list[float] = []

    async def body() -> None:
        starts.append(time.monotonic())

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.periodic("p", body, every, jitter=jitter))
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", count=25)
        await handle.cancel()
    delays = [e.delay for e in recorder.of(K.BACKOFF_SCHEDULED, "p")]
    assert all(d is not None and every <= d <= every + jitter for d in delays), delays
    assert len(set(delays)) > len(delays) // 2  # drawn afresh for each wait
    # Each run starts no sooner than its wait allows.
    for prev, nxt, delay in zip(starts, starts[1:], delays, strict=False):
        assert delay is not None
        assert nxt - prev >= delay - 0.0005


# --------------------------------------------------------------------------- fixed rate


def grid_offsets(recorder: Recorder, name: str, every: float) -> tuple[list[float], float]:
    """Where each run after a success was scheduled, in intervals from the first start."""
    first = recorder.of(K.ATTEMPT_STARTING, name)[0].at
    waits = recorder.of(K.BACKOFF_SCHEDULED, name)
    assert all(e.backoff_source is tv.BackoffSource.SUCCESS for e in waits)
    return [(e.at + (e.delay or 0.0) - first) / every for e in waits], first


async def test_fixed_rate_runs_start_on_the_grid_and_skip_missed_ticks(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    every = 0.05

    async def body(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 3:
            await asyncio.sleep(every * 2.4)  # overruns: misses two ticks

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.periodic("p", body, every, fixed_rate=True))
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", count=6)
        await handle.cancel()
    ticks, _ = grid_offsets(recorder, "p", every)
    # Every run is scheduled on the grid first start + k × every ...
    assert all(abs(t - round(t)) < TOL / every for t in ticks), ticks
    ks = [round(t) for t in ticks]
    # ... one run per tick at most: never two on one tick, never bunched after the overrun.
    assert all(b > a for a, b in itertools.pairwise(ks)), ks
    # The run after the overrun (attempt 3, started on tick ks[1]) skips the ticks it missed.
    assert ks[2] >= ks[1] + 3, ks
    delays = [e.delay for e in recorder.of(K.BACKOFF_SCHEDULED, "p")]
    assert all(d is not None and 0.0 <= d <= every + TOL for d in delays), delays
    # Runs start no sooner than their tick.
    starts = [e.at for e in recorder.of(K.ATTEMPT_STARTING, "p")]
    first = starts[0]
    for k, start in zip(ks, starts[1:], strict=False):
        assert start >= first + k * every - TOL


async def test_fixed_rate_does_not_drift_with_the_runs_duration(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    every = 0.04

    async def body() -> None:
        await asyncio.sleep(every / 2)  # a fixed delay would put runs 1.5 × every apart

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(tv.TaskSpec.periodic("p", body, every, fixed_rate=True))
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", count=4)
        await handle.cancel()
    ticks, _ = grid_offsets(recorder, "p", every)
    assert all(abs(t - round(t)) < TOL / every for t in ticks), ticks
    delays = [e.delay for e in recorder.of(K.BACKOFF_SCHEDULED, "p")]
    # Each wait is what is left of the interval, not the whole interval.
    assert all(d is not None and d < every for d in delays), delays


async def test_fixed_rate_grid_starts_after_the_first_delay_and_jitter_does_not_move_it(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    every, jitter = 0.05, 0.02
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        added = time.time()
        handle = sup.add(
            tv.TaskSpec.periodic(
                "p", succeed, every, fixed_rate=True, jitter=jitter, first_delay=0.03
            )
        )
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", count=5)
        await handle.cancel()
    ticks, first = grid_offsets(recorder, "p", every)
    assert first >= added + 0.03 - TOL  # the grid starts at the first run, after first_delay
    # Each start lies within [tick, tick + jitter] of the grid of the first start.
    ks = [math.floor(t + TOL / every) for t in ticks]
    for t, k in zip(ticks, ks, strict=True):
        assert -TOL <= (t - k) * every <= jitter + TOL, (ticks, ks)
    assert all(b > a for a, b in itertools.pairwise(ks)), ks


async def test_a_failure_under_fixed_rate_backs_off_then_rejoins_the_grid(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    every = 0.05

    async def body(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 2:
            raise tv.Fail("once")

    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(
            tv.TaskSpec.periodic(
                "p", body, every, fixed_rate=True, backoff=tv.BackoffPolicy.constant(0.003)
            )
        )
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p", count=4)
        await handle.cancel()
    waits = recorder.of(K.BACKOFF_SCHEDULED, "p")
    assert [e.backoff_source for e in waits[:3]] == [
        tv.BackoffSource.SUCCESS,
        tv.BackoffSource.FAILURE,
        tv.BackoffSource.SUCCESS,
    ]
    assert waits[1].delay == 0.003
    first = recorder.of(K.ATTEMPT_STARTING, "p")[0].at
    for e in (waits[0], *waits[2:]):
        t = (e.at + (e.delay or 0.0) - first) / every
        assert abs(t - round(t)) < TOL / every, t


# --------------------------------------------------------------------------- cron


def next_match(after: float, tz: dt.tzinfo, *, minute: int | None) -> float:
    """The next whole minute (``minute=None``) or hour at ``minute`` strictly after ``after``."""
    now = dt.datetime.fromtimestamp(after, tz)
    if minute is None:
        nxt = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    else:
        nxt = now.replace(minute=minute, second=0, microsecond=0)
        if nxt <= now:
            nxt += dt.timedelta(hours=1)
    return nxt.timestamp()


def local_tz() -> dt.tzinfo:
    tz = dt.datetime.now().astimezone().tzinfo
    assert tz is not None
    return tz


async def test_cron_first_run_is_the_first_matching_time_after_the_add(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        added = time.time()
        sup.add(tv.TaskSpec.cron("minutely", succeed, "* * * * *"))
        await until(lambda: state_of(sup, "minutely") is not S.WAITING, "leaving WAITING")
        got = info(sup, "minutely")
        assert got.state is S.SCHEDULED  # waiting for a first run is SCHEDULED (13.1.5)
        assert got.attempt == 0
        assert got.next_attempt_at is not None
        assert got.next_attempt_at == pytest.approx(
            next_match(added, local_tz(), minute=None), abs=TOL
        )
        assert recorder.of(K.ATTEMPT_STARTING, "minutely") == []


@pytest.mark.parametrize(
    ("tz", "offset"),
    [
        ("UTC", 0),
        (ZoneInfo("UTC"), 0),
        ("Asia/Kolkata", 30 * 60),  # UTC+05:30: the top of a local hour is :30 UTC
        (ZoneInfo("Asia/Kathmandu"), 15 * 60),  # UTC+05:45
        (None, None),  # local time
    ],
)
async def test_cron_reads_its_expression_in_its_time_zone(
    make_supervisor: SupervisorFactory, tz: ZoneInfo | str | None, offset: int | None
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        added = time.time()
        sup.add(tv.TaskSpec.cron("hourly", succeed, "0 * * * *", tz=tz))
        await until(lambda: state_of(sup, "hourly") is S.SCHEDULED, "SCHEDULED")
        nxt = info(sup, "hourly").next_attempt_at
    assert nxt is not None
    assert added < nxt <= added + 3600 + TOL
    if offset is not None:
        assert (nxt - offset) % 3600 == pytest.approx(0, abs=TOL) or (
            nxt - offset
        ) % 3600 == pytest.approx(3600, abs=TOL)
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz or local_tz()
    assert nxt == pytest.approx(next_match(added, zone, minute=0), abs=TOL)


async def test_cron_next_run_after_a_success_is_the_next_matching_time(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec.cron("minutely", succeed, "* * * * *", tz="UTC"))
        await until(lambda: state_of(sup, "minutely") is S.SCHEDULED, "SCHEDULED")
        assert await sup.restart("minutely")  # run now instead of within the minute
        done = await recorder.wait_for(K.BACKOFF_SCHEDULED, task="minutely")
        got = info(sup, "minutely")
    assert done.backoff_source is tv.BackoffSource.SUCCESS
    assert got.state is S.SCHEDULED
    assert (got.attempt, got.restarts) == (1, 0)
    expected = next_match(done.at, dt.UTC, minute=None)
    assert got.next_attempt_at == pytest.approx(expected, abs=TOL)
    assert done.delay is not None
    assert done.at + done.delay == pytest.approx(expected, abs=TOL)


async def test_cron_jitter_delays_within_its_amount(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        added = time.time()
        sup.add(tv.TaskSpec.cron("hourly", succeed, "0 * * * *", tz="UTC", jitter=30.0))
        await until(lambda: state_of(sup, "hourly") is S.SCHEDULED, "SCHEDULED")
        # 13.1.9 settles that a *first delay* gets no jitter; a cron run is a schedule's run.
        nxt = info(sup, "hourly").next_attempt_at
    assert nxt is not None
    top = next_match(added, dt.UTC, minute=0)
    assert top - TOL <= nxt <= top + 30.0 + TOL


async def test_a_failed_cron_run_is_retried_by_backoff(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        sup.add(tv.TaskSpec.cron("c", fail_first, "0 0 1 1 *", tz="UTC", backoff=FAST))
        await until(lambda: state_of(sup, "c") is S.SCHEDULED, "SCHEDULED")
        assert await sup.restart("c")
        await recorder.wait_for(K.ATTEMPT_SUCCEEDED, task="c")  # attempt 2, after a backoff
        waits = recorder.of(K.BACKOFF_SCHEDULED, "c")
    assert waits[0].backoff_source is tv.BackoffSource.FAILURE
    assert waits[0].delay == pytest.approx(0.001)
    assert waits[1].backoff_source is tv.BackoffSource.SUCCESS


@pytest.mark.parametrize(
    "expression",
    [
        "0 * * * * *",  # six fields (seconds): refused
        "0 0 * * * * 2030",  # seven
        "* * * *",  # four
        "",
        "61 * * * *",
        "* 25 * * *",
        "every minute",
    ],
)
def test_a_bad_cron_expression_is_refused_naming_it(expression: str) -> None:
    with pytest.raises(ValueError, match="cron") as info:
        tv.TaskSpec.cron("c", succeed, expression)
    assert repr(expression) in str(info.value)


def test_cron_expression_and_time_zone_types() -> None:
    with pytest.raises(TypeError, match="cron"):
        tv.TaskSpec.cron("c", succeed, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tz") as bad_zone:
        tv.TaskSpec.cron("c", succeed, "* * * * *", tz="Mars/Olympus_Mons")
    assert "Mars/Olympus_Mons" in str(bad_zone.value)
    with pytest.raises(TypeError, match="tz"):
        tv.TaskSpec.cron("c", succeed, "* * * * *", tz=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="jitter"):
        tv.TaskSpec.cron("c", succeed, "* * * * *", jitter=-1.0)
