"""One attempt of one task: call the body afresh, classify how it ended, report it.

This module owns the attempt's events: ``ATTEMPT_STARTING`` and exactly one terminal event
(``ATTEMPT_SUCCEEDED`` / ``_FAILED`` / ``_TIMED_OUT`` / ``_CANCELED``). Its functions are
synchronous on purpose: the actor (``_actor.drive``) is the one coroutine per task that
awaits the body under its timeout, so an attempt costs no extra coroutine frame.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._context import TaskContext
from ._errors import Fatal, TaskError
from ._events import EventKind, new_event
from ._fanout import Bus
from ._registry import TaskRecord, TaskState

# Enum members as module constants: ``EventKind.X`` costs ~75 ns on CPython 3.11 (the enum
# metaclass's attribute hook), a module global ~5 ns; these are read on every task's path.
_STARTING = EventKind.ATTEMPT_STARTING
_SUCCEEDED = EventKind.ATTEMPT_SUCCEEDED
_CANCELED = EventKind.ATTEMPT_CANCELED
_RUNNING = TaskState.RUNNING


class AttemptEnd(enum.Enum):
    """How an attempt that raised ended (success and cancellation need no result)."""

    FAILED = enum.auto()
    FATAL = enum.auto()
    TIMED_OUT = enum.auto()


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


def describe(exc: BaseException) -> str:
    """The reason text of an exception: a ``TaskError``'s reason, else ``Type: message``."""
    if isinstance(exc, TaskError):
        return exc.reason
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def begin(rec: TaskRecord, bus: Bus) -> Awaitable[Any]:
    """Start attempt ``rec.attempt + 1``: publish ``ATTEMPT_STARTING``, call the body afresh.

    Returns what the body returned, for the actor to await (under the attempt timeout). A
    body that raises at the call is classified like one that raises when awaited.
    """
    rec.attempt += 1
    attempt = rec.attempt
    rec.state = _RUNNING
    started = rec.attempt_started = time.perf_counter()  # cleared by the terminal event
    if bus.listening:
        bus.emit(_STARTING, rec.name, rec.id, attempt, None, None, started)  # now=started
    spec = rec.spec
    fn: Callable[..., Awaitable[Any]] = spec.fn
    if spec._takes_context:
        return fn(TaskContext(rec.id, rec.name, attempt, rec))
    return fn()


def end(rec: TaskRecord, now: float | None = None) -> float:
    """Close the attempt without publishing its terminal event; return its duration.

    The duration runs until ``now``, a ``time.perf_counter()`` reading (by default read
    here). The caller publishes the event (the supervisor's cleanup: a one-shot task's success goes
    out with its closing events).
    """
    started = rec.attempt_started
    rec.attempt_started = None
    if started is None:
        return 0.0
    return (time.perf_counter() if now is None else now) - started


def succeeded(rec: TaskRecord, bus: Bus) -> None:
    """The body returned: publish ``ATTEMPT_SUCCEEDED``."""
    _close(rec, bus, _SUCCEEDED)


def canceled(rec: TaskRecord, bus: Bus) -> None:
    """The attempt ended by cancellation: publish ``ATTEMPT_CANCELED`` (once per attempt)."""
    if rec.attempt_started is not None:  # else already closed (abandoned by the supervisor)
        _close(rec, bus, _CANCELED)


def _close(rec: TaskRecord, bus: Bus, kind: EventKind) -> None:
    duration = end(rec)
    if bus.listening and not rec.finalized:
        bus.emit(kind, rec.name, rec.id, rec.attempt, duration)


def failed(
    rec: TaskRecord,
    bus: Bus,
    exc: BaseException,
    deadline: asyncio.Timeout | None,
    timeout: float | None,
) -> AttemptResult:
    """The body raised: publish ``ATTEMPT_TIMED_OUT`` or ``ATTEMPT_FAILED``.

    ``ATTEMPT_TIMED_OUT`` only if the attempt timeout fired: a body's own ``TimeoutError``
    is an ordinary failure.
    """
    duration = end(rec)
    if deadline is not None and isinstance(exc, TimeoutError) and deadline.expired():
        if bus.listening and not rec.finalized:
            bus.publish(
                new_event(
                    EventKind.ATTEMPT_TIMED_OUT,
                    rec.name,
                    rec.id,
                    attempt=rec.attempt,
                    duration=duration,
                    timeout=timeout,
                )
            )
        return AttemptResult(AttemptEnd.TIMED_OUT, f"attempt timed out after {timeout}s", None, exc)
    reason = describe(exc)
    exit_code = exc.exit_code if isinstance(exc, TaskError) else None
    if bus.listening and not rec.finalized:
        bus.publish(
            new_event(
                EventKind.ATTEMPT_FAILED,
                rec.name,
                rec.id,
                attempt=rec.attempt,
                duration=duration,
                reason=reason,
                exit_code=exit_code,
            )
        )
    how = AttemptEnd.FATAL if isinstance(exc, Fatal) else AttemptEnd.FAILED
    return AttemptResult(how, reason, exit_code, exc)
