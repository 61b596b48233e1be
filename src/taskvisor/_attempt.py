"""One attempt of one task: call the body afresh, classify how it ended, report it.

This module owns the attempt's events: ``ATTEMPT_STARTING`` and exactly one terminal event
(``ATTEMPT_SUCCEEDED`` / ``_FAILED`` / ``_TIMED_OUT`` / ``_CANCELED``), each published here.
Its functions are synchronous: the actor (``_actor.drive``) is the one coroutine per task
that awaits the body under its timeout, so an attempt costs no coroutine frame of its own.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._context import TaskContext
from ._errors import Fail, Fatal, TaskError
from ._events import EventKind
from ._fanout import Bus
from ._registry import TaskRecord, TaskState

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

    __slots__ = ("duration", "end", "error", "exit_code", "reason")

    def __init__(
        self,
        end: AttemptEnd,
        reason: str,
        exit_code: int | None,
        error: BaseException | None,
        duration: float,
    ) -> None:
        self.end = end
        self.reason = reason
        self.exit_code = exit_code
        self.error = error
        self.duration = duration  # seconds the attempt ran


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
    rec.attempt_started = time.perf_counter()  # cleared when the attempt ends
    rec.started_at = time.time()
    rec.next_attempt_at = None
    if bus.listening:
        bus.publish(_STARTING, rec.name, rec.id, attempt)
    restarted = rec.restarted
    if restarted is not None:  # ``Supervisor.restart`` returns once this attempt began
        rec.restarted = None
        if not restarted.done():
            restarted.set_result(True)
    spec = rec.spec
    fn: Callable[..., Awaitable[Any]] = spec.fn
    if spec.takes_context:
        return fn(TaskContext(rec.id, rec.name, attempt, rec))
    return fn()


def _end(rec: TaskRecord) -> float | None:
    """Close the attempt in flight; its duration, or ``None`` if it was closed already."""
    started = rec.attempt_started
    rec.attempt_started = None
    if started is None:
        return None
    return time.perf_counter() - started


def succeeded(rec: TaskRecord, bus: Bus, value: object) -> None:
    """The body returned ``value``: publish ``ATTEMPT_SUCCEEDED``, keep the result."""
    rec.result = value
    rec.last_success_at = time.time()
    _close(rec, bus, _SUCCEEDED)


def canceled(rec: TaskRecord, bus: Bus) -> None:
    """The attempt ended by cancellation: publish ``ATTEMPT_CANCELED`` (once per attempt).

    Also how the supervisor closes an attempt it abandons (a body that swallows
    cancellation): whichever comes first publishes the one terminal event.
    """
    _close(rec, bus, _CANCELED)


def _close(rec: TaskRecord, bus: Bus, kind: EventKind) -> None:
    duration = _end(rec)
    if duration is not None and bus.listening:
        bus.publish(kind, rec.name, rec.id, rec.attempt, duration)


def failed(
    rec: TaskRecord,
    bus: Bus,
    exc: BaseException,
    deadline: asyncio.Timeout | None,
    timeout: float | None,
    retry_on: tuple[type[BaseException], ...] | None,
) -> AttemptResult:
    """The body raised: publish ``ATTEMPT_TIMED_OUT`` or ``ATTEMPT_FAILED``; classify it.

    ``ATTEMPT_TIMED_OUT`` only if the attempt timeout fired: a body's own ``TimeoutError``
    is an ordinary failure. ``Fatal`` ends the task; so does any exception but ``Fail`` that
    is none of ``retry_on`` (when given).
    """
    duration = _end(rec)
    closed = duration is not None
    if duration is None:  # closed already (abandoned by the supervisor)
        duration = 0.0
    voice = bus.voice
    if deadline is not None and isinstance(exc, TimeoutError) and deadline.expired():
        if closed and bus.listening:
            bus.publish(
                EventKind.ATTEMPT_TIMED_OUT, rec.name, rec.id, rec.attempt, duration,
                timeout=timeout,
            )  # fmt: skip
        if closed and voice is not None:
            voice.attempt_timed_out(rec.name, rec.attempt, timeout)
        return AttemptResult(
            AttemptEnd.TIMED_OUT, f"attempt timed out after {timeout}s", None, exc, duration
        )
    reason = describe(exc)
    exit_code = exc.exit_code if isinstance(exc, TaskError) else None
    if closed and voice is not None:
        voice.attempt_failed(rec.name, rec.attempt, reason, exc)
    if closed and bus.listening:
        bus.publish(
            EventKind.ATTEMPT_FAILED,
            rec.name,
            rec.id,
            rec.attempt,
            duration,
            reason=reason,
            exit_code=exit_code,
            error=exc,
        )
    fatal = isinstance(exc, Fatal) or (
        retry_on is not None and not isinstance(exc, Fail) and not isinstance(exc, retry_on)
    )
    return AttemptResult(
        AttemptEnd.FATAL if fatal else AttemptEnd.FAILED, reason, exit_code, exc, duration
    )
