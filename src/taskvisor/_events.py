"""The typed events the supervisor narrates: ``Event``, ``EventKind``, ``BackoffSource``.

Events are best-effort narration for people and metrics; nothing reliable depends on them
(outcomes travel on their own path, ``_outcome.py``). Publishing them is the fan-out's job
(``_fanout/``); this module only says what an event is and how one is built.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, fields
from typing import Any

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


_SEQUENCE = itertools.count(1)
next_seq = _SEQUENCE.__next__
"""The process-wide event sequence: each call returns the next ``seq``."""


def sequence() -> itertools.count[int]:
    """The process-wide event sequence itself.

    ``islice`` of it takes consecutive values in one C call: no other thread's event can fall
    between them.
    """
    return _SEQUENCE


class _EventSlots:
    """The storage of ``Event`` and ``EventDraft``: every field's slot, declared once for both.

    Two classes with the same solid base can swap ``__class__`` (see ``build``). In field
    order, which is the dataclass's.
    """

    __slots__ = (  # noqa: RUF023
        "seq",
        "at",
        "kind",
        "task",
        "task_id",
        "attempt",
        "reason",
        "exit_code",
        "delay",
        "timeout",
        "duration",
        "backoff_source",
        "outcome",
        "rejection",
        "slot",
        "error",
        "fence",
        "node",
        "dropped",
    )


@dataclass(frozen=True, slots=True)
class Event(_EventSlots):
    """One lifecycle step; fields not relevant to ``kind`` are ``None``.

    ``error`` is the exception of an ``ATTEMPT_FAILED`` (with its traceback); ``fence`` and
    ``node`` come from a cluster coordinator; ``dropped`` counts the events an overflow
    episode lost (``SUBSCRIBER_OVERFLOW`` with reason ``recovered``).
    """

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
    error: BaseException | None = None
    fence: int | None = None
    node: str | None = None
    dropped: int | None = None

    @property
    def is_diagnostic(self) -> bool:
        """Whether this event reports on the fan-out itself (panic or overflow)."""
        return self.kind in DIAGNOSTIC_KINDS


FIELDS = _EventSlots.__slots__
assert tuple(f.name for f in fields(Event)) == FIELDS
# The slots live in the base; named here as well for whoever introspects a "dataclass with
# slots".
Event.__slots__ = FIELDS


class EventDraft(_EventSlots):
    """A mutable twin of ``Event`` (internal), filled by plain stores.

    ``draft.__class__ = Event`` then turns it into the event (same storage): several times
    cheaper than the frozen dataclass ``__init__``.
    """

    __slots__ = ()


def build(
    seq: int,
    at: float,
    kind: EventKind,
    task: str | None = None,
    task_id: TaskId | None = None,
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
    error: BaseException | None = None,
    fence: int | None = None,
    node: str | None = None,
    dropped: int | None = None,
) -> Event:
    """An ``Event`` of these fields, built without the frozen dataclass ``__init__``.

    The result is an ordinary ``Event``: equality, hashing, ``repr`` and pickling see the
    same values as for one built by its constructor (``docs/performance.md`` says why).
    """
    ev: Any = EventDraft()
    ev.seq = seq
    ev.at = at
    ev.kind = kind
    ev.task = task
    ev.task_id = task_id
    ev.attempt = attempt
    ev.reason = reason
    ev.exit_code = exit_code
    ev.delay = delay
    ev.timeout = timeout
    ev.duration = duration
    ev.backoff_source = backoff_source
    ev.outcome = outcome
    ev.rejection = rejection
    ev.slot = slot
    ev.error = error
    ev.fence = fence
    ev.node = node
    ev.dropped = dropped
    ev.__class__ = Event
    return ev  # type: ignore[no-any-return]
