"""One attempt of one task: call the body afresh, bound it by the timeout, classify the end.

The attempt runner owns exactly one terminal attempt event per attempt
(``ATTEMPT_SUCCEEDED`` / ``_FAILED`` / ``_TIMED_OUT`` / ``_CANCELED``).
"""

from __future__ import annotations

import asyncio
import enum
import time

from ._context import TaskContext
from ._errors import Fatal, TaskError
from ._events import EventKind, new_event
from ._fanout import Bus
from ._registry import TaskRecord, TaskState


class AttemptEnd(enum.Enum):
    """How one attempt ended."""

    SUCCEEDED = enum.auto()
    FAILED = enum.auto()
    FATAL = enum.auto()
    TIMED_OUT = enum.auto()
    CANCELED = enum.auto()


class AttemptResult:
    """What the actor needs to know about a finished attempt."""

    __slots__ = ("end", "error", "exit_code", "reason")

    def __init__(
        self,
        end: AttemptEnd,
        reason: str | None = None,
        exit_code: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.end = end
        self.reason = reason
        self.exit_code = exit_code
        self.error = error


SUCCEEDED = AttemptResult(AttemptEnd.SUCCEEDED)
CANCELED = AttemptResult(AttemptEnd.CANCELED)


def describe(exc: BaseException) -> str:
    """The reason text of an exception: a ``TaskError``'s reason, else ``Type: message``."""
    if isinstance(exc, TaskError):
        return exc.reason
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_attempt(rec: TaskRecord, bus: Bus) -> AttemptResult:
    """Run attempt ``rec.attempt + 1`` of ``rec`` and publish its start and terminal events."""
    rec.attempt += 1
    attempt = rec.attempt
    rec.state = TaskState.RUNNING
    spec = rec.spec
    if bus.listening:
        bus.publish(new_event(EventKind.ATTEMPT_STARTING, rec.name, rec.id, attempt=attempt))
    started = time.perf_counter()
    rec.attempt_started = started  # cleared below once the attempt is over
    try:
        timeout = spec.timeout
        deadline: asyncio.Timeout | None = None
        try:
            if spec.takes_context:
                awaitable = spec.fn(TaskContext(rec.id, rec.name, attempt, rec.stop))
            else:
                awaitable = spec.fn()
            if timeout is None:
                await awaitable
            else:
                async with asyncio.timeout(timeout) as deadline:
                    await awaitable
        except asyncio.CancelledError:
            result = CANCELED
            if bus.listening and not rec.finalized:
                bus.publish(
                    new_event(
                        EventKind.ATTEMPT_CANCELED,
                        rec.name,
                        rec.id,
                        attempt=attempt,
                        duration=time.perf_counter() - started,
                    )
                )
            return result
        except TimeoutError as exc:
            duration = time.perf_counter() - started
            if deadline is not None and deadline.expired():
                reason = f"attempt timed out after {timeout}s"
                if bus.listening and not rec.finalized:
                    bus.publish(
                        new_event(
                            EventKind.ATTEMPT_TIMED_OUT,
                            rec.name,
                            rec.id,
                            attempt=attempt,
                            duration=duration,
                            timeout=timeout,
                        )
                    )
                return AttemptResult(AttemptEnd.TIMED_OUT, reason, None, exc)
            return _failed(rec, bus, attempt, duration, exc)
        except Exception as exc:
            return _failed(rec, bus, attempt, time.perf_counter() - started, exc)
        if bus.listening and not rec.finalized:
            bus.publish(
                new_event(
                    EventKind.ATTEMPT_SUCCEEDED,
                    rec.name,
                    rec.id,
                    attempt=attempt,
                    duration=time.perf_counter() - started,
                )
            )
        return SUCCEEDED
    except BaseException as exc:
        # KeyboardInterrupt, SystemExit or another BaseException subclass: report the attempt
        # (exactly one terminal event), never swallow. GeneratorExit is the coroutine being
        # closed, not an end of the body.
        if not isinstance(exc, GeneratorExit):
            _failed(rec, bus, attempt, time.perf_counter() - started, exc)
        raise
    finally:
        rec.attempt_started = None


def _failed(
    rec: TaskRecord, bus: Bus, attempt: int, duration: float, exc: BaseException
) -> AttemptResult:
    reason = describe(exc)
    exit_code = exc.exit_code if isinstance(exc, TaskError) else None
    if bus.listening and not rec.finalized:
        bus.publish(
            new_event(
                EventKind.ATTEMPT_FAILED,
                rec.name,
                rec.id,
                attempt=attempt,
                duration=duration,
                reason=reason,
                exit_code=exit_code,
            )
        )
    end = AttemptEnd.FATAL if isinstance(exc, Fatal) else AttemptEnd.FAILED
    return AttemptResult(end, reason, exit_code, exc)
