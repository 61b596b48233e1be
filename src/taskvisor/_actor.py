"""The loop around attempts of one task: concurrency slot, restart policy, backoff, budget.

``drive`` is the task's runner coroutine. It decides the outcome and hands it to the
supervisor's cleanup (``_supervisor.py``), which publishes ``TASK_FINISHED``/``TASK_REMOVED``,
releases the name and resolves the handle.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from . import _attempt as attempt
from . import _testhooks
from ._attempt import AttemptEnd, AttemptResult, describe
from ._events import BackoffSource, EventKind
from ._fanout import Bus
from ._outcome import OutcomeKind, TaskOutcome
from ._policies import RestartMode
from ._registry import TaskRecord, TaskState
from ._spec import TaskDefaults, policies

_ALWAYS = RestartMode.ALWAYS
_WAITING = TaskState.WAITING
_BACKOFF = TaskState.BACKOFF
_SCHEDULED = TaskState.SCHEDULED
_rng = random.Random()  # jitter of periodic schedules

_MIN_RESTART_SPACING = 0.001
"""Under ``always()`` without interval, attempts start at least this far apart."""


def stopped_outcome(rec: TaskRecord) -> TaskOutcome:
    """The outcome of a task ended by a stop request (forced or not)."""
    if rec.forced:
        return TaskOutcome(
            OutcomeKind.FORCE_ABORTED,
            _with_last_error(rec.forced, rec),
            attempts=rec.attempt,
            result=rec.result,
        )
    # A CancelledError nobody requested (the body's own, or the loop's) is a cooperative stop.
    reason = "stopped on request" if rec.requested else "cancelled without a stop request"
    return TaskOutcome(
        OutcomeKind.CANCELED, _with_last_error(reason, rec), attempts=rec.attempt, result=rec.result
    )


def _with_last_error(reason: str, rec: TaskRecord) -> str:
    """A task that never succeeded ends with its last error in every summary (SPEC §13)."""
    if rec.last_success_at is None and rec.last_error is not None:
        return f"{reason}; last error: {rec.last_error}"
    return reason


_COMPLETED = [TaskOutcome(OutcomeKind.COMPLETED, attempts=n) for n in range(64)]


def _completed(attempts: int, result: object) -> TaskOutcome:
    # Outcomes are immutable: the common ones are shared instead of built per task.
    if result is None and attempts < len(_COMPLETED):
        return _COMPLETED[attempts]
    return TaskOutcome(OutcomeKind.COMPLETED, attempts=attempts, result=result)


class SlotPool:
    """The global ``max_concurrent`` limit; a slot is held only while an attempt runs."""

    __slots__ = ("_sem",)

    def __init__(self, limit: int) -> None:
        self._sem = asyncio.Semaphore(limit)

    async def acquire(self, rec: TaskRecord) -> None:
        await self._sem.acquire()
        rec.holds_slot = True

    def release(self, rec: TaskRecord) -> None:
        # Idempotent per record: an abandoned task's slot is given back once, whoever is first.
        if rec.holds_slot:
            rec.holds_slot = False
            self._sem.release()


Finish = Callable[[TaskRecord, TaskOutcome], None]
"""The supervisor's cleanup of a task, given its outcome."""


async def drive(
    rec: TaskRecord, defaults: TaskDefaults, bus: Bus, slots: SlotPool | None, finish: Finish
) -> None:
    """The runner of one task: attempts until its policy, budget or a stop ends it.

    The one coroutine per task (attempts are awaited inline, see ``_attempt``); it hands the
    outcome to ``finish`` (the supervisor's cleanup).
    """
    rec.started = True
    p = policies(rec.spec, defaults)
    restart = p.restart
    always = restart.mode is _ALWAYS
    schedule = rec.spec.schedule
    timeout = p.timeout
    streak = 0  # failed attempts in a row (the retry budget, the backoff's exponent)
    previous_delay: float | None = None
    after_failure = False  # the next attempt is a restart (SPEC §10.3, TaskInfo.restarts)
    grid_start: float | None = None  # fixed rate: when the first attempt started
    outcome: TaskOutcome
    try:
        # A first delay, or cron (unless restart() came first: the wait is over already).
        if rec.next_attempt_at is not None and not rec.requested and rec.restarted is None:
            await _wait(rec, max(0.0, rec.next_attempt_at - time.time()), _SCHEDULED)
        while True:
            if rec.requested:
                outcome = stopped_outcome(rec)
                break
            if slots is not None:
                rec.state = _WAITING
                await slots.acquire(rec)
                if rec.requested:
                    slots.release(rec)
                    outcome = stopped_outcome(rec)
                    break
            if after_failure:
                rec.restarts += 1
            started = time.monotonic()
            if grid_start is None:
                grid_start = started
            deadline: asyncio.Timeout | None = None
            try:
                try:
                    body = attempt.begin(rec, bus)
                    if timeout is None:
                        value = await body
                    else:
                        async with asyncio.timeout(timeout) as deadline:
                            value = await body
                finally:
                    if slots is not None:
                        slots.release(rec)
            except asyncio.CancelledError:
                attempt.canceled(rec, bus)
                if _restarting(rec):
                    after_failure = False
                    continue
                outcome = stopped_outcome(rec)
                break
            except Exception as exc:
                result = attempt.failed(rec, bus, exc, deadline, timeout, p.retry_on)
            except BaseException as exc:
                # KeyboardInterrupt, SystemExit, another BaseException: one terminal event,
                # then it propagates (never swallowed, never retried). GeneratorExit is the
                # coroutine being closed, not an end of the body.
                if not isinstance(exc, GeneratorExit):
                    attempt.failed(rec, bus, exc, None, timeout, None)
                raise
            else:
                attempt.succeeded(rec, bus, value)
                after_failure = False
                if _restarting(rec):
                    continue  # the body swallowed a restart's cancellation: restart all the same
                if not always and not rec.requested:
                    outcome = _completed(rec.attempt, value)
                    break
                if rec.requested:
                    outcome = stopped_outcome(rec)
                    break
                streak = 0
                previous_delay = None
                now = time.monotonic()
                if schedule is not None and (schedule.cron or restart.interval is not None):
                    delay = schedule.wait_after_success(
                        restart.interval, grid_start, now, time.time(), _rng
                    )
                elif restart.interval is not None:
                    delay = restart.interval
                else:
                    delay = max(0.0, started + _MIN_RESTART_SPACING - now)
                await _wait(rec, delay, _SCHEDULED, bus, BackoffSource.SUCCESS)
                continue
            # a failed attempt: its reason is the last error, even when a stop ended it
            rec.last_error = result.reason
            if rec.requested:
                outcome = stopped_outcome(rec)
                break
            # not a stop: the restart policy and the budget decide
            if _restarting(rec):  # a restart's cancellation ended as a failure
                after_failure = False
                continue
            if result.end is AttemptEnd.FATAL:
                outcome = _ended(OutcomeKind.FATAL, rec, result)
                break
            if p.reset_after is not None and result.duration >= p.reset_after:
                streak = 0  # it ran long enough: a new failure streak begins with it
                previous_delay = None
            streak += 1
            if restart.mode is RestartMode.NEVER or (
                p.max_retries is not None and streak > p.max_retries
            ):
                outcome = _ended(OutcomeKind.FAILED, rec, result)
                break
            delay = p.backoff.delay(streak - 1, previous_delay)
            previous_delay = delay
            if _testhooks.zero_backoff:  # taskvisor.testing.no_backoff()
                delay = 0.0
            after_failure = True
            await _wait(rec, delay, _BACKOFF, bus, BackoffSource.FAILURE, result.reason)
    except asyncio.CancelledError:
        # A stop request ended a slot or backoff wait.
        outcome = stopped_outcome(rec)
    except BaseException as exc:
        # Resolve the outcome first. KeyboardInterrupt/SystemExit (or a bug of ours) then
        # propagate, as Python does; any other BaseException the body raised is kept in the
        # outcome's ``error``: re-raising it would leave it in this runner task, unretrieved.
        finish(
            rec,
            TaskOutcome(
                OutcomeKind.FAILED,
                describe(exc),
                None,
                exc,
                attempts=rec.attempt,
                result=rec.result,
            ),
        )
        if isinstance(exc, KeyboardInterrupt | SystemExit | Exception):
            raise
        return
    finish(rec, outcome)


def _ended(kind: OutcomeKind, rec: TaskRecord, result: AttemptResult) -> TaskOutcome:
    return TaskOutcome(
        kind,
        result.reason,
        result.exit_code,
        result.error,
        attempts=rec.attempt,
        result=rec.result,
    )


def _restarting(rec: TaskRecord) -> bool:
    """Whether the cancellation just caught was ``Supervisor.restart``'s (not a stop).

    If so, the runner's own cancellation count is taken back (the restart's, and a force's
    after the grace period), so that the next attempt's timeout works as if they never
    happened.
    """
    if rec.restarted is None or rec.requested:
        return False
    task = asyncio.current_task()
    if task is not None:
        while task.uncancel():
            pass
    return True


async def _wait(
    rec: TaskRecord,
    delay: float,
    state: TaskState,
    bus: Bus | None = None,
    source: BackoffSource | None = None,
    reason: str | None = None,
) -> None:
    """Wait ``delay`` seconds before the next attempt, in ``state`` (BACKOFF or SCHEDULED).

    Publishes ``BACKOFF_SCHEDULED`` when given the ``bus`` (not before a first attempt: a
    task's events begin with its first ``ATTEMPT_STARTING``). A stop ends the wait by
    cancellation; ``Supervisor.restart`` ends it early.
    """
    rec.state = state
    rec.next_attempt_at = time.time() + delay
    if bus is not None and bus.listening:
        bus.publish(
            EventKind.BACKOFF_SCHEDULED,
            rec.name,
            rec.id,
            rec.attempt,
            delay=delay,
            backoff_source=source,
            reason=reason,
        )
    try:
        await asyncio.sleep(delay)
    except asyncio.CancelledError:
        if not _restarting(rec):
            raise
