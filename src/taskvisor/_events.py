"""The typed events the supervisor narrates: ``Event``, ``EventKind``, ``BackoffSource``."""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass

from ._context import TaskId
from ._outcome import OutcomeKind, RejectionKind


class EventKind(enum.StrEnum):
    """What happened; the values are stable lower-case labels for metrics and logs."""

    TASK_ADD_REQUESTED = "task_add_requested"
    TASK_ADDED = "task_added"
    TASK_ADD_FAILED = "task_add_failed"
    ATTEMPT_STARTING = "attempt_starting"
    ATTEMPT_SUCCEEDED = "attempt_succeeded"
    ATTEMPT_FAILED = "attempt_failed"
    ATTEMPT_TIMED_OUT = "attempt_timed_out"
    ATTEMPT_CANCELED = "attempt_canceled"
    BACKOFF_SCHEDULED = "backoff_scheduled"
    TASK_FINISHED = "task_finished"
    TASK_REMOVE_REQUESTED = "task_remove_requested"
    TASK_REMOVED = "task_removed"
    SHUTDOWN_REQUESTED = "shutdown_requested"
    ALL_STOPPED_WITHIN_GRACE = "all_stopped_within_grace"
    GRACE_EXCEEDED = "grace_exceeded"
    SUBSCRIBER_PANICKED = "subscriber_panicked"
    SUBSCRIBER_OVERFLOW = "subscriber_overflow"
    CONTROLLER_SUBMITTED = "controller_submitted"
    CONTROLLER_REJECTED = "controller_rejected"
    CONTROLLER_SLOT_TRANSITION = "controller_slot_transition"


DIAGNOSTIC_KINDS = frozenset({EventKind.SUBSCRIBER_PANICKED, EventKind.SUBSCRIBER_OVERFLOW})
"""Events about the fan-out itself: they never cause further diagnostic events."""


class BackoffSource(enum.StrEnum):
    """Why a wait before the next attempt was scheduled."""

    SUCCESS = "success"
    FAILURE = "failure"


_next_seq = itertools.count(1).__next__


@dataclass(frozen=True, slots=True)
class Event:
    """One lifecycle step; fields not relevant to ``kind`` are ``None``."""

    seq: int
    at: float
    kind: EventKind
    task: str | None = None
    task_id: TaskId | None = None
    attempt: int | None = None
    reason: str | None = None
    exit_code: int | None = None
    delay: float | None = None
    timeout: float | None = None
    duration: float | None = None
    backoff_source: BackoffSource | None = None
    outcome: OutcomeKind | None = None
    rejection: RejectionKind | None = None
    slot: str | None = None

    def __getattr__(self, name: str) -> None:
        # Only reached for a field ``new_event`` left unset (see there): it reads as None.
        if name in _OPTIONAL_FIELDS:
            return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def is_diagnostic(self) -> bool:
        """Whether this event reports on the fan-out itself (panic or overflow)."""
        return self.kind in DIAGNOSTIC_KINDS


_OPTIONAL_FIELDS = frozenset(Event.__slots__) - {"seq", "at", "kind"}
_slot_setter = {name: Event.__dict__[name].__set__ for name in Event.__slots__}
(
    _set_seq, _set_at, _set_kind, _set_task, _set_task_id, _set_attempt, _set_reason,
    _set_exit_code, _set_delay, _set_timeout, _set_duration, _set_backoff_source,
    _set_outcome, _set_rejection, _set_slot,
) = (_slot_setter[name] for name in Event.__slots__)  # fmt: skip
_new = object.__new__
_time = time.time


def new_event(
    kind: EventKind,
    task: str | None = None,
    task_id: TaskId | None = None,
    *,
    attempt: int | None = None,
    reason: str | None = None,
    exit_code: int | None = None,
    delay: float | None = None,
    timeout: float | None = None,
    duration: float | None = None,
    backoff_source: BackoffSource | None = None,
    outcome: OutcomeKind | None = None,
    rejection: RejectionKind | None = None,
    slot: str | None = None,
) -> Event:
    """Build an event stamped with the next process-wide ``seq`` and the wall clock.

    The hot path of every publication, so it skips the frozen dataclass ``__init__`` (which
    costs ~1.8 µs for 15 fields) and stores only the fields given: an unset field reads as
    ``None`` through ``Event.__getattr__``. Equality, hashing, ``repr`` and pickling see the
    same values as for an ``Event`` built by its constructor.
    """
    ev = _new(Event)
    _set_seq(ev, _next_seq())
    _set_at(ev, _time())
    _set_kind(ev, kind)
    if task is not None:
        _set_task(ev, task)
    if task_id is not None:
        _set_task_id(ev, task_id)
    if attempt is not None:
        _set_attempt(ev, attempt)
    if reason is not None:
        _set_reason(ev, reason)
    if exit_code is not None:
        _set_exit_code(ev, exit_code)
    if delay is not None:
        _set_delay(ev, delay)
    if timeout is not None:
        _set_timeout(ev, timeout)
    if duration is not None:
        _set_duration(ev, duration)
    if backoff_source is not None:
        _set_backoff_source(ev, backoff_source)
    if outcome is not None:
        _set_outcome(ev, outcome)
    if rejection is not None:
        _set_rejection(ev, rejection)
    if slot is not None:
        _set_slot(ev, slot)
    return ev
