"""The attempt loop after a failure or a success: restart policies, backoff waits with each
task's own jitter state, the retry budget, and what counts as a failure (SPEC §1, §2, §4)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory, forever
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O


def scripted(script: str, log: list[float] | None = None) -> Callable[[], Awaitable[None]]:
    """A body whose attempt n follows ``script[n-1]``: ``F`` fails, ``S`` succeeds; after the
    script it succeeds. ``log`` gets the monotonic start and end of every attempt."""
    calls = 0

    async def body() -> None:
        nonlocal calls
        if log is not None:
            log.append(time.monotonic())
        step = script[calls] if calls < len(script) else "S"
        calls += 1
        try:
            if step == "F":
                raise tv.Fail(f"failure {calls}", exit_code=calls)
        finally:
            if log is not None:
                log.append(time.monotonic())

    return body


async def run_one(sup: tv.Supervisor, spec: tv.TaskSpec) -> tv.TaskOutcome:
    async with asyncio.timeout(GUARD):
        async with sup:
            return await sup.add(spec)


# --------------------------------------------------------------------------- restart policies


async def test_never_finishes_completed_after_one_success(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    outcome = await run_one(make_supervisor(), tv.TaskSpec.once("t", scripted("")))
    assert (outcome.kind, outcome.attempts, outcome.reason, outcome.error) == (
        O.COMPLETED,
        1,
        None,
        None,
    )
    assert outcome.ok
    assert recorder.of(K.BACKOFF_SCHEDULED) == []


async def test_never_finishes_failed_after_one_failure(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    outcome = await run_one(
        make_supervisor(), tv.TaskSpec.once("t", scripted("F"), max_retries=None)
    )
    assert (outcome.kind, outcome.attempts, outcome.reason, outcome.exit_code) == (
        O.FAILED,
        1,
        "failure 1",
        1,
    )
    assert isinstance(outcome.error, tv.Fail)
    assert not outcome.ok
    assert recorder.of(K.BACKOFF_SCHEDULED) == []


async def test_on_failure_retries_until_success(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    outcome = await run_one(
        make_supervisor(), tv.TaskSpec.restartable("t", scripted("FFF"), backoff=FAST)
    )
    assert (outcome.kind, outcome.attempts) == (O.COMPLETED, 4)
    sources = [e.backoff_source for e in recorder.of(K.BACKOFF_SCHEDULED, "t")]
    assert sources == [tv.BackoffSource.FAILURE] * 3


async def test_always_with_interval_runs_again_after_each_success(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    log: list[float] = []
    sup = make_supervisor()
    async with sup:
        handle = sup.add(tv.TaskSpec.periodic("p", scripted("", log), 0.005))
        await recorder.wait_for(K.ATTEMPT_SUCCEEDED, task="p", count=4)
        assert await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert outcome.kind is O.CANCELED
    waits = recorder.of(K.BACKOFF_SCHEDULED, "p")
    assert len(waits) >= 3
    assert {(e.backoff_source, e.delay, e.reason) for e in waits} == {
        (tv.BackoffSource.SUCCESS, 0.005, None)
    }
    # Each attempt starts at least `interval` after the previous one ended.
    starts, ends = log[0::2], log[1::2]
    for prev_end, next_start in zip(ends, starts[1:], strict=False):
        assert next_start - prev_end >= 0.005 - 1e-6


async def test_always_without_interval_is_never_a_hot_loop(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    log: list[float] = []
    sup = make_supervisor()
    async with sup:
        handle = sup.add(tv.TaskSpec("hot", scripted("", log), restart=tv.RestartPolicy.always()))
        await recorder.wait_for(K.ATTEMPT_SUCCEEDED, task="hot", count=30)
        await handle.cancel()
    starts, ends = log[0::2], log[1::2]
    n = len(starts)
    assert n >= 30
    # Attempt k+1 starts >= 1 ms after attempt k started, which is after attempt k-1 ended.
    for k in range(1, n - 1):
        assert starts[k + 1] - ends[k - 1] >= 0.001 - 1e-6
    assert starts[-1] - ends[0] >= (n - 2) * 0.001 - 1e-6
    waits = recorder.of(K.BACKOFF_SCHEDULED, "hot")
    assert all(e.backoff_source is tv.BackoffSource.SUCCESS for e in waits)
    assert all(e.delay is not None and 0.0 <= e.delay <= 0.001 for e in waits)


async def test_always_without_interval_restarts_a_slow_body_at_once(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def slow() -> None:
        await asyncio.sleep(0.003)

    sup = make_supervisor()
    async with sup:
        sup.add(tv.TaskSpec("slow", slow, restart=tv.RestartPolicy.always()))
        first = await recorder.wait_for(K.BACKOFF_SCHEDULED, task="slow")
    assert first.delay == 0.0


async def test_always_backs_off_after_failures(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        sup.add(
            tv.TaskSpec(
                "t",
                scripted("FSF"),
                restart=tv.RestartPolicy.always(interval=0.002),
                backoff=tv.BackoffPolicy.constant(0.003),
            )
        )
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="t", count=4)
    waits = recorder.of(K.BACKOFF_SCHEDULED, "t")[:4]
    assert [(e.backoff_source, e.delay, e.reason) for e in waits] == [
        (tv.BackoffSource.FAILURE, 0.003, "failure 1"),
        (tv.BackoffSource.SUCCESS, 0.002, None),
        (tv.BackoffSource.FAILURE, 0.003, "failure 3"),
        (tv.BackoffSource.SUCCESS, 0.002, None),
    ]


async def test_restart_policy_is_inherited_from_defaults(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor(defaults=tv.TaskDefaults(restart=tv.RestartPolicy.NEVER))
    outcome = await run_one(sup, tv.TaskSpec("t", scripted("F")))
    assert (outcome.kind, outcome.attempts) == (O.FAILED, 1)


# --------------------------------------------------------------------------- retry budget


@pytest.mark.parametrize("max_retries", [0, 1, 3])
async def test_budget_allows_n_plus_one_consecutive_failures(
    make_supervisor: SupervisorFactory, recorder: Recorder, max_retries: int
) -> None:
    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec.restartable("t", scripted("F" * 10), backoff=FAST, max_retries=max_retries),
    )
    n = max_retries + 1
    assert (outcome.kind, outcome.attempts) == (O.FAILED, n)
    assert (outcome.reason, outcome.exit_code) == (f"failure {n}", n)
    assert isinstance(outcome.error, tv.Fail)
    assert outcome.error.reason == f"failure {n}"
    assert len(recorder.of(K.ATTEMPT_STARTING, "t")) == n
    assert len(recorder.of(K.BACKOFF_SCHEDULED, "t")) == n - 1


async def test_budget_from_defaults_and_explicit_unlimited(
    make_supervisor: SupervisorFactory,
) -> None:
    defaults = tv.TaskDefaults(max_retries=1, backoff=FAST)
    sup = make_supervisor(defaults=defaults)
    async with asyncio.timeout(GUARD):
        async with sup:
            limited = await sup.add(tv.TaskSpec.restartable("limited", scripted("F" * 20)))
            unlimited = await sup.add(
                tv.TaskSpec.restartable("unlimited", scripted("F" * 20), max_retries=None)
            )
    assert (limited.kind, limited.attempts) == (O.FAILED, 2)
    assert (unlimited.kind, unlimited.attempts) == (O.COMPLETED, 21)


async def test_a_success_resets_the_failure_streak(
    make_supervisor: SupervisorFactory,
) -> None:
    script = "FFSFFSFFF"
    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec(
            "t",
            scripted(script),
            restart=tv.RestartPolicy.always(),
            backoff=FAST,
            max_retries=2,
        ),
    )
    assert (outcome.kind, outcome.attempts, outcome.reason) == (O.FAILED, 9, "failure 9")


async def test_fatal_is_never_retried(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def fatal() -> None:
        raise tv.Fatal("bad config", exit_code=78)

    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec("t", fatal, restart=tv.RestartPolicy.always(), max_retries=None),
    )
    assert (outcome.kind, outcome.attempts, outcome.reason, outcome.exit_code) == (
        O.FATAL,
        1,
        "bad config",
        78,
    )
    assert isinstance(outcome.error, tv.Fatal)
    assert recorder.of(K.BACKOFF_SCHEDULED) == []
    failed = recorder.of(K.ATTEMPT_FAILED, "t")
    assert [(e.reason, e.exit_code) for e in failed] == [("bad config", 78)]


async def test_any_other_exception_is_a_retryable_failure(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    errors: list[Exception] = []

    async def boom(ctx: tv.TaskContext) -> None:
        err = ValueError(f"boom {ctx.attempt}")
        errors.append(err)
        raise err

    outcome = await run_one(
        make_supervisor(), tv.TaskSpec.restartable("t", boom, backoff=FAST, max_retries=2)
    )
    assert (outcome.kind, outcome.attempts) == (O.FAILED, 3)
    assert outcome.error is errors[-1]
    assert outcome.reason == "ValueError: boom 3"
    assert outcome.exit_code is None
    reasons = [e.reason for e in recorder.of(K.ATTEMPT_FAILED, "t")]
    assert reasons == ["ValueError: boom 1", "ValueError: boom 2", "ValueError: boom 3"]


async def test_every_attempt_calls_the_body_afresh(make_supervisor: SupervisorFactory) -> None:
    contexts: list[tv.TaskContext] = []

    async def body(ctx: tv.TaskContext) -> None:
        contexts.append(ctx)
        if ctx.attempt < 3:
            raise tv.Fail("again")

    outcome = await run_one(make_supervisor(), tv.TaskSpec.restartable("t", body, backoff=FAST))
    assert outcome.attempts == 3
    assert [c.attempt for c in contexts] == [1, 2, 3]
    assert len({id(c) for c in contexts}) == 3


# --------------------------------------------------------------------------- backoff


async def test_exponential_backoff_delays_and_reset_after_success(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    log: list[float] = []
    backoff = tv.BackoffPolicy.exponential(
        0.001, factor=2.0, max=0.004, jitter=tv.JitterPolicy.NONE
    )
    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec(
            "t",
            scripted("FFFFSFFFFF", log),
            restart=tv.RestartPolicy.always(interval=0.001),
            backoff=backoff,
            max_retries=4,
        ),
    )
    assert (outcome.kind, outcome.attempts) == (O.FAILED, 10)
    waits = recorder.of(K.BACKOFF_SCHEDULED, "t")
    assert [e.delay for e in waits] == [
        0.001,
        0.002,
        0.004,
        0.004,
        0.001,
        0.001,
        0.002,
        0.004,
        0.004,
    ]
    # ...where the fifth wait is the success's interval.
    sources = [e.backoff_source for e in waits]
    assert (
        sources
        == [tv.BackoffSource.FAILURE] * 4
        + [tv.BackoffSource.SUCCESS]
        + [tv.BackoffSource.FAILURE] * 4
    )
    # Each wait really lasts its delay.
    starts, ends = log[0::2], log[1::2]
    for k, e in enumerate(waits):
        assert e.delay is not None
        assert starts[k + 1] - ends[k] >= e.delay - 1e-6


async def test_decorrelated_jitter_remembers_each_tasks_own_previous_delay(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    first, cap = 0.001, 0.01
    backoff = tv.BackoffPolicy(first=first, max=cap, jitter=tv.JitterPolicy.DECORRELATED)
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        async with sup:
            grow = sup.add(
                tv.TaskSpec(
                    "grow",
                    scripted("F" * 16 + "S" + "FFF"),
                    restart=tv.RestartPolicy.always(interval=0.001),
                    backoff=backoff,
                )
            )
            await recorder.wait_for(K.BACKOFF_SCHEDULED, task="grow", count=10)
            # A second task starting now has its own recurrence, starting from `first`.
            fresh = await sup.add(tv.TaskSpec.restartable("fresh", scripted("F"), backoff=backoff))
            await recorder.wait_for(K.BACKOFF_SCHEDULED, task="grow", count=20)
            await grow.cancel()
    assert fresh.kind is O.COMPLETED
    fresh_delay = recorder.of(K.BACKOFF_SCHEDULED, "fresh")[0].delay
    assert fresh_delay is not None
    assert first <= fresh_delay <= 3 * first
    waits = recorder.of(K.BACKOFF_SCHEDULED, "grow")[:20]
    delays = [e.delay for e in waits]
    assert all(d is not None for d in delays)
    failures = [d for d, e in zip(delays, waits, strict=True) if e.backoff_source == "failure"]
    assert len(failures) == 19
    previous = first
    for k, d in enumerate(failures):
        assert d is not None
        if k == 16:
            previous = first  # the success reset the recurrence
        assert first <= d <= min(cap, 3 * previous) + 1e-12
        previous = d
    # Sixteen steps of the real recurrence grow past the first step's range.
    assert max(d for d in failures[:16] if d is not None) > 3 * first


async def test_last_error_is_visible_while_backing_off(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        sup.add(
            tv.TaskSpec.restartable(
                "t", scripted("FF"), backoff=tv.BackoffPolicy.constant(GUARD * 3)
            )
        )
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="t")
        info = sup.get("t")
        assert info is not None
        assert (info.state, info.attempt, info.restarts, info.last_error) == (
            tv.TaskState.BACKOFF,
            1,
            0,
            "failure 1",
        )


# --------------------------------------------------------------------------- stop during waits


async def test_stop_ends_a_backoff_wait_at_once(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        handle = sup.add(
            tv.TaskSpec.restartable(
                "t", scripted("F"), backoff=tv.BackoffPolicy.constant(GUARD * 3)
            )
        )
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="t")
        async with asyncio.timeout(GUARD):
            assert await sup.cancel("t")
    outcome = handle.outcome
    assert outcome is not None
    assert (outcome.kind, outcome.attempts, outcome.error) == (O.CANCELED, 1, None)
    kinds = recorder.kinds("t")
    assert kinds[-5:] == [
        K.ATTEMPT_FAILED,
        K.BACKOFF_SCHEDULED,
        K.TASK_REMOVE_REQUESTED,
        K.TASK_FINISHED,
        K.TASK_REMOVED,
    ]


async def test_stop_ends_an_interval_wait_at_once(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor()
    async with sup:
        handle = sup.add(tv.TaskSpec.periodic("p", scripted(""), GUARD * 3))
        await recorder.wait_for(K.BACKOFF_SCHEDULED, task="p")
        async with asyncio.timeout(GUARD):
            assert sup.remove("p")
            outcome = await handle
    assert (outcome.kind, outcome.attempts) == (O.CANCELED, 1)
    assert recorder.of(K.ATTEMPT_CANCELED) == []


async def test_shutdown_ends_backoff_waits_within_grace(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    sup = make_supervisor(grace=GUARD * 3)
    async with sup:
        handles = [
            sup.add(
                tv.TaskSpec.restartable(
                    f"t{i}", scripted("F"), backoff=tv.BackoffPolicy.constant(GUARD * 3)
                )
            )
            for i in range(5)
        ]
        handles.append(sup.add(tv.TaskSpec("running", forever)))
        for i in range(5):
            await recorder.wait_for(K.BACKOFF_SCHEDULED, task=f"t{i}")
        async with asyncio.timeout(GUARD):
            report = await sup.shutdown()
    assert not report.grace_exceeded
    assert {h.outcome.kind for h in handles if h.outcome is not None} == {O.CANCELED}


# --------------------------------------------------------------------------- never swallowed

_EXIT_CHILD = """
import asyncio, sys
import taskvisor as tv

async def body() -> None:
    print("attempt", flush=True)
    raise KeyboardInterrupt if sys.argv[1] == "ki" else SystemExit(3)

sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False))
asyncio.run(sup.run([tv.TaskSpec.restartable("k", body, max_retries=None)]))
print("run returned", flush=True)
"""


@pytest.mark.parametrize(("which", "code"), [("ki", -signal.SIGINT), ("exit", 3)])
async def test_keyboard_interrupt_and_system_exit_are_never_swallowed(
    which: str, code: int
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _EXIT_CHILD,
        which,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(GUARD * 2):
        out, _ = await proc.communicate()
    assert proc.returncode == code
    assert out.decode().split() == ["attempt"]  # not retried, and run() did not return


# --------------------------------------------------------------------------- reset_after (§13)

RESET = 0.05
"""``reset_after`` in these tests; a "long" attempt runs 1.5 × that, a quick one raises at once."""


def timed(script: str) -> Callable[[tv.TaskContext], Awaitable[None]]:
    """Attempt n follows ``script[n-1]``: ``f`` fails at once, ``L`` fails after running
    longer than ``RESET``, ``S`` succeeds; after the script it succeeds."""

    async def body(ctx: tv.TaskContext) -> None:
        step = script[ctx.attempt - 1] if ctx.attempt <= len(script) else "S"
        if step == "L":
            await asyncio.sleep(RESET * 1.5)
        if step in "fL":
            raise tv.Fail(f"{step}{ctx.attempt}")

    return body


@pytest.mark.parametrize(
    ("reset_after", "attempts", "reason"),
    [
        # f L f: with reset_after the long attempt starts a new streak (it is its first
        # failure), so the budget of one retry is spent only at attempt 3.
        (RESET, 3, "f3"),
        # Without it, the long attempt is the second failure in a row: the end.
        (None, 2, "L2"),
    ],
)
async def test_a_failure_after_enough_uptime_starts_a_new_streak(
    make_supervisor: SupervisorFactory, reset_after: float | None, attempts: int, reason: str
) -> None:
    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec.restartable(
            "t", timed("fLfff"), backoff=FAST, max_retries=1, reset_after=reset_after
        ),
    )
    assert (outcome.kind, outcome.attempts, outcome.reason) == (O.FAILED, attempts, reason)


async def test_the_retry_after_a_long_attempt_waits_as_a_first_retry(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    backoff = tv.BackoffPolicy.exponential(0.001, factor=2.0, max=1.0, jitter=tv.JitterPolicy.NONE)
    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec.restartable("t", timed("ffLff"), backoff=backoff, reset_after=RESET),
    )
    assert (outcome.kind, outcome.attempts) == (O.COMPLETED, 6)
    delays = [e.delay for e in recorder.of(K.BACKOFF_SCHEDULED, "t")]
    # Retry 0 and 1 of the first streak; the long attempt 3 begins a new one: 0, 1, 2.
    assert delays == [0.001, 0.002, 0.001, 0.002, 0.004]


async def test_reset_after_is_inherited_and_can_be_overridden(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor(defaults=tv.TaskDefaults(reset_after=RESET, backoff=FAST))
    async with asyncio.timeout(GUARD), sup:
        inherited = sup.add(tv.TaskSpec.restartable("inherited", timed("fLff"), max_retries=1))
        overridden = sup.add(
            tv.TaskSpec.restartable("overridden", timed("fLff"), max_retries=1, reset_after=None)
        )
        assert ((await inherited).attempts, (await overridden).attempts) == (3, 2)


async def test_a_timed_out_attempt_that_ran_long_enough_starts_a_new_streak(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    # Each attempt times out after 1.5 × reset_after: every failure is the first of its
    # streak, so max_retries=1 never ends the task (without reset_after: 2 attempts).
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        handle = sup.add(
            tv.TaskSpec.restartable(
                "t", forever, timeout=RESET * 1.5, reset_after=RESET, max_retries=1, backoff=FAST
            )
        )
        await recorder.wait_for(K.ATTEMPT_TIMED_OUT, task="t", count=3)
        assert not handle.done()
        await handle.cancel()
    outcome = handle.outcome
    assert outcome is not None
    assert outcome.kind is O.CANCELED
    assert outcome.attempts >= 3


async def test_a_long_failure_is_still_bound_by_a_budget_of_zero_retries(
    make_supervisor: SupervisorFactory,
) -> None:
    # 13.1.1: the long attempt is the *first* failure of its new streak, and max_retries=0
    # allows no retry after a first failure.
    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec.restartable("t", timed("L"), backoff=FAST, max_retries=0, reset_after=RESET),
    )
    assert (outcome.kind, outcome.attempts) == (O.FAILED, 1)


# --------------------------------------------------------------------------- retry_on (§13)


def raising(*errors: BaseException) -> Callable[[tv.TaskContext], Awaitable[str]]:
    """Attempt n raises ``errors[n-1]``; after them it returns ``"done"``."""

    async def body(ctx: tv.TaskContext) -> str:
        if ctx.attempt <= len(errors):
            raise errors[ctx.attempt - 1]
        return "done"

    return body


async def test_retry_on_retries_the_chosen_types_and_their_subclasses(
    make_supervisor: SupervisorFactory,
) -> None:
    spec = tv.TaskSpec.restartable(
        "t",
        raising(ConnectionError("reset"), ConnectionRefusedError("refused"), TimeoutError("slow")),
        backoff=FAST,
        retry_on=(ConnectionError, TimeoutError),
    )
    outcome = await run_one(make_supervisor(), spec)
    assert (outcome.kind, outcome.attempts, outcome.result) == (O.COMPLETED, 4, "done")


async def test_an_exception_outside_retry_on_ends_the_task_as_fatal_would(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    bug = KeyError("missing")
    spec = tv.TaskSpec.restartable(
        "t",
        raising(ConnectionError("reset"), bug),
        backoff=FAST,
        retry_on=(ConnectionError,),
        max_retries=None,
    )
    outcome = await run_one(make_supervisor(), spec)
    assert (outcome.kind, outcome.attempts, outcome.reason) == (O.FATAL, 2, "KeyError: 'missing'")
    assert outcome.error is bug
    assert [e.reason for e in recorder.of(K.BACKOFF_SCHEDULED, "t")] == [
        "ConnectionError: reset"
    ]  # no backoff after the fatal one


@pytest.mark.parametrize("retry_on", [(), (ValueError,)])
async def test_fail_is_always_retryable(
    make_supervisor: SupervisorFactory, retry_on: tuple[type[BaseException], ...]
) -> None:
    spec = tv.TaskSpec.restartable(
        "t", raising(tv.Fail("a"), tv.Fail("b")), backoff=FAST, retry_on=retry_on
    )
    outcome = await run_one(make_supervisor(), spec)
    assert (outcome.kind, outcome.attempts) == (O.COMPLETED, 3)


@pytest.mark.parametrize("retry_on", [None, (Exception,), (tv.Fatal,), (tv.TaskError,)])
async def test_fatal_is_never_retried_whatever_retry_on_says(
    make_supervisor: SupervisorFactory, retry_on: tuple[type[BaseException], ...] | None
) -> None:
    spec = tv.TaskSpec.restartable(
        "t", raising(tv.Fatal("no")), backoff=FAST, retry_on=retry_on, max_retries=None
    )
    outcome = await run_one(make_supervisor(), spec)
    assert (outcome.kind, outcome.attempts) == (O.FATAL, 1)


async def test_empty_retry_on_retries_nothing_but_fail(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD), sup:
        fail = sup.add(tv.TaskSpec.restartable("fail", raising(tv.Fail("x")), retry_on=()))
        other = sup.add(
            tv.TaskSpec.restartable("other", raising(RuntimeError("x")), retry_on=(), backoff=FAST)
        )
        # A body's own TimeoutError is a raised exception, not an attempt timeout.
        own = sup.add(
            tv.TaskSpec.restartable("own", raising(TimeoutError("mine")), retry_on=(), backoff=FAST)
        )
        outcomes = [await fail, await other, await own]
    assert [(o.kind, o.attempts) for o in outcomes] == [
        (O.COMPLETED, 2),
        (O.FATAL, 1),
        (O.FATAL, 1),
    ]


async def test_timeouts_stay_retryable_whatever_retry_on_says(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    async def slow_once(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 1:
            await asyncio.Event().wait()

    outcome = await run_one(
        make_supervisor(),
        tv.TaskSpec.restartable("t", slow_once, timeout=0.02, retry_on=(), backoff=FAST),
    )
    assert (outcome.kind, outcome.attempts) == (O.COMPLETED, 2)
    assert recorder.of(K.ATTEMPT_TIMED_OUT, "t")[0].attempt == 1


async def test_retry_on_is_inherited_and_none_means_every_exception(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor(defaults=tv.TaskDefaults(retry_on=(ConnectionError,), backoff=FAST))
    async with asyncio.timeout(GUARD), sup:
        inherited = sup.add(tv.TaskSpec.restartable("inherited", raising(ValueError("v"))))
        everything = sup.add(
            tv.TaskSpec.restartable("everything", raising(ValueError("v")), retry_on=None)
        )
        assert ((await inherited).kind, (await everything).kind) == (O.FATAL, O.COMPLETED)


async def test_retry_on_applies_under_every_restart_policy(
    make_supervisor: SupervisorFactory,
) -> None:
    spec = tv.TaskSpec.periodic(
        "p", raising(OSError("disk")), 0.001, retry_on=(ConnectionError,), backoff=FAST
    )
    outcome = await run_one(make_supervisor(), spec)
    assert (outcome.kind, outcome.attempts) == (O.FATAL, 1)
