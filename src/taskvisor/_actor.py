"""The loop around attempts of one task: concurrency slot, restart policy, backoff, budget.

It returns the task's outcome; the supervisor's cleanup (``_supervisor.py``) publishes
``TASK_FINISHED``/``TASK_REMOVED``, releases the name and resolves the handle.
"""

from __future__ import annotations

import asyncio
import time

from . import _testhooks
from ._attempt import AttemptEnd, run_attempt
from ._events import BackoffSource, EventKind, new_event
from ._fanout import Bus
from ._outcome import OutcomeKind, TaskOutcome
from ._policies import RestartMode
from ._registry import TaskRecord, TaskState

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
    reason = "stopped on request" if rec.stop.requested else "cancelled without a stop request"
    return TaskOutcome(OutcomeKind.CANCELED, reason, attempts=rec.attempt)


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


async def drive(rec: TaskRecord, bus: Bus, slots: SlotPool | None) -> TaskOutcome:
    """Run ``rec``'s attempts until its policy, its budget or a stop request ends it."""
    spec = rec.spec
    restart = spec.restart
    backoff = spec.backoff
    max_retries = spec.max_retries
    streak = 0
    previous_delay: float | None = None
    try:
        while True:
            if rec.stop.requested:
                return stopped_outcome(rec)
            if slots is not None:
                rec.state = TaskState.WAITING
                await slots.acquire(rec)
                if rec.stop.requested:
                    slots.release(rec)
                    return stopped_outcome(rec)
            started = time.monotonic()
            try:
                result = await run_attempt(rec, bus)
            finally:
                if slots is not None:
                    slots.release(rec)
            end = result.end
            if end is AttemptEnd.CANCELED or rec.stop.requested:
                return stopped_outcome(rec)
            if end is AttemptEnd.SUCCEEDED:
                streak = 0
                previous_delay = None
                if restart.mode is not RestartMode.ALWAYS:
                    return TaskOutcome(OutcomeKind.COMPLETED, attempts=rec.attempt)
                if restart.interval is not None:
                    delay = restart.interval
                else:
                    delay = max(0.0, started + _MIN_RESTART_SPACING - time.monotonic())
                source = BackoffSource.SUCCESS
                reason = None
            else:
                rec.last_error = result.reason
                if end is AttemptEnd.FATAL:
                    return TaskOutcome(
                        OutcomeKind.FATAL,
                        result.reason,
                        result.exit_code,
                        result.error,
                        attempts=rec.attempt,
                    )
                streak += 1
                if restart.mode is RestartMode.NEVER or (
                    max_retries is not None and streak > max_retries
                ):
                    return TaskOutcome(
                        OutcomeKind.FAILED,
                        result.reason,
                        result.exit_code,
                        result.error,
                        attempts=rec.attempt,
                    )
                delay = backoff.delay(streak - 1, previous_delay)
                previous_delay = delay
                if _testhooks.zero_backoff:  # taskvisor.testing.no_backoff()
                    delay = 0.0
                source = BackoffSource.FAILURE
                reason = result.reason
            rec.state = TaskState.BACKOFF
            if bus.listening:
                bus.publish(
                    new_event(
                        EventKind.BACKOFF_SCHEDULED,
                        rec.name,
                        rec.id,
                        attempt=rec.attempt,
                        delay=delay,
                        backoff_source=source,
                        reason=reason,
                    )
                )
            await asyncio.sleep(delay)
    except asyncio.CancelledError:
        # A stop request ended a slot or backoff wait (or the body, via run_attempt).
        return stopped_outcome(rec)
