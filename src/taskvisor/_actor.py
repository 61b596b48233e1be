"""The loop around attempts of one task: concurrency slot, restart policy, backoff, budget.

``drive`` is the task's runner coroutine. It decides the outcome and hands it to the
supervisor's cleanup (``_supervisor.py``), which publishes ``TASK_FINISHED``/``TASK_REMOVED``,
releases the name and resolves the handle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from . import _attempt as attempt
from . import _testhooks
from ._attempt import AttemptEnd, describe
from ._events import BackoffSource, EventKind
from ._fanout import Bus
from ._outcome import OutcomeKind, TaskOutcome
from ._policies import RestartMode
from ._registry import TaskRecord, TaskState
from ._spec import TaskDefaults, policies

_ALWAYS = RestartMode.ALWAYS
_WAITING = TaskState.WAITING
_BACKOFF = TaskState.BACKOFF

_MIN_RESTART_SPACING = 0.001
"""Under ``always()`` without interval, attempts start at least this far apart."""


def stopped_outcome(rec: TaskRecord) -> TaskOutcome:
    """The outcome of a task ended by a stop request (forced or not)."""
    if rec.forced:
        return TaskOutcome(
            OutcomeKind.FORCE_ABORTED,
            "force-stopped after the grace period",
            attempts=rec.attempt,
        )
    # A CancelledError nobody requested (the body's own, or the loop's) is a cooperative stop.
    reason = "stopped on request" if rec.requested else "cancelled without a stop request"
    return TaskOutcome(OutcomeKind.CANCELED, reason, attempts=rec.attempt)


_COMPLETED = [TaskOutcome(OutcomeKind.COMPLETED, attempts=n) for n in range(64)]


def _completed(attempts: int) -> TaskOutcome:
    # Outcomes are immutable: the common ones are shared instead of built per task.
    if attempts < len(_COMPLETED):
        return _COMPLETED[attempts]
    return TaskOutcome(OutcomeKind.COMPLETED, attempts=attempts)


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
    spec = policies(rec.spec, defaults)
    restart = spec.restart
    always = restart.mode is _ALWAYS
    backoff = spec.backoff
    max_retries = spec.max_retries
    timeout = spec.timeout
    streak = 0
    previous_delay: float | None = None
    outcome: TaskOutcome
    try:
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
            started = time.monotonic() if always else 0.0
            deadline: asyncio.Timeout | None = None
            try:
                try:
                    body = attempt.begin(rec, bus)
                    if timeout is None:
                        await body
                    else:
                        async with asyncio.timeout(timeout) as deadline:
                            await body
                finally:
                    if slots is not None:
                        slots.release(rec)
            except asyncio.CancelledError:
                attempt.canceled(rec, bus)
                outcome = stopped_outcome(rec)
                break
            except Exception as exc:
                result = attempt.failed(rec, bus, exc, deadline, timeout)
            except BaseException as exc:
                # KeyboardInterrupt, SystemExit, another BaseException: one terminal event,
                # then it propagates (never swallowed, never retried). GeneratorExit is the
                # coroutine being closed, not an end of the body.
                if not isinstance(exc, GeneratorExit):
                    attempt.failed(rec, bus, exc, None, timeout)
                raise
            else:
                attempt.succeeded(rec, bus)
                if not always and not rec.requested:
                    outcome = _completed(rec.attempt)
                    break
                if rec.requested:
                    outcome = stopped_outcome(rec)
                    break
                streak = 0
                previous_delay = None
                if restart.interval is not None:
                    delay = restart.interval
                else:
                    delay = max(0.0, started + _MIN_RESTART_SPACING - time.monotonic())
                _backoff(rec, bus, delay, BackoffSource.SUCCESS, None)
                await asyncio.sleep(delay)
                continue
            # a failed attempt (not a stop): the restart policy and the budget decide
            if rec.requested:
                outcome = stopped_outcome(rec)
                break
            rec.last_error = result.reason
            if result.end is AttemptEnd.FATAL:
                outcome = TaskOutcome(
                    OutcomeKind.FATAL,
                    result.reason,
                    result.exit_code,
                    result.error,
                    attempts=rec.attempt,
                )
                break
            streak += 1
            if restart.mode is RestartMode.NEVER or (
                max_retries is not None and streak > max_retries
            ):
                outcome = TaskOutcome(
                    OutcomeKind.FAILED,
                    result.reason,
                    result.exit_code,
                    result.error,
                    attempts=rec.attempt,
                )
                break
            delay = backoff.delay(streak - 1, previous_delay)
            previous_delay = delay
            if _testhooks.zero_backoff:  # taskvisor.testing.no_backoff()
                delay = 0.0
            _backoff(rec, bus, delay, BackoffSource.FAILURE, result.reason)
            await asyncio.sleep(delay)
    except asyncio.CancelledError:
        # A stop request ended a slot or backoff wait.
        outcome = stopped_outcome(rec)
    except BaseException as exc:
        # Resolve the outcome first. KeyboardInterrupt/SystemExit (or a bug of ours) then
        # propagate, as Python does; any other BaseException the body raised is kept in the
        # outcome's ``error``: re-raising it would leave it in this runner task, unretrieved.
        finish(rec, TaskOutcome(OutcomeKind.FAILED, describe(exc), None, exc, attempts=rec.attempt))
        if isinstance(exc, KeyboardInterrupt | SystemExit | Exception):
            raise
        return
    finish(rec, outcome)


def _backoff(
    rec: TaskRecord, bus: Bus, delay: float, source: BackoffSource, reason: str | None
) -> None:
    rec.state = _BACKOFF
    if bus.listening:
        bus.publish(
            EventKind.BACKOFF_SCHEDULED,
            rec.name,
            rec.id,
            rec.attempt,
            delay=delay,
            backoff_source=source,
            reason=reason,
        )
