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

    @property
    def is_diagnostic(self) -> bool:
        """Whether this event reports on the fan-out itself (panic or overflow)."""
        return self.kind in DIAGNOSTIC_KINDS


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
    """Build an event stamped with the next process-wide ``seq`` and the wall clock."""
    return Event(
        _next_seq(),
        time.time(),
        kind,
        task,
        task_id,
        attempt,
        reason,
        exit_code,
        delay,
        timeout,
        duration,
        backoff_source,
        outcome,
        rejection,
        slot,
    )
