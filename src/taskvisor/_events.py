"""The typed events the supervisor narrates: ``Event``, ``EventKind``, ``BackoffSource``."""

from __future__ import annotations

import enum
import itertools
import os
import time
import warnings
from collections.abc import Callable, Iterator
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


def next_seqs(n: int) -> list[int]:
    """The next ``n`` values of the sequence, consecutive.

    Taken in one C call: no other thread's event can fall between them.
    """
    return list(itertools.islice(_SEQUENCE, n))


_FIELDS = (
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
)


class _EventSlots:
    """The storage of ``Event`` and ``EventDraft`` (internal): every field's slot.

    Declared once, here, for both: two classes with the same solid base swap ``__class__``
    with a pointer comparison, instead of the slot-by-slot layout check of two classes that
    each declare the slots (about 30 ns saved per event).
    """

    __slots__ = _FIELDS


@dataclass(frozen=True, slots=True)
class Event(_EventSlots):
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


assert tuple(f.name for f in fields(Event)) == _FIELDS
# The slots live in the base (see there); the dataclass then declares none of its own.
# Named here as well, for whoever introspects a "dataclass with slots".
Event.__slots__ = _FIELDS


class EventDraft(_EventSlots):
    """A mutable twin of ``Event`` (internal), filled by plain attribute stores.

    Assigning ``__class__ = Event`` then turns it into the event (same storage, so the same
    layout): about 4x cheaper than the frozen ``__init__`` or the slot descriptors' ``__set__``.
    """

    __slots__ = ()


wall_clock = time.time


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
    at: float | None = None,
) -> Event:
    """Build an event stamped with the next process-wide ``seq`` and the wall clock (or ``at``).

    The hot path of every publication, so it skips the frozen dataclass ``__init__`` (which
    costs ~1.8 µs for 15 fields): every field is stored into an ``EventDraft`` which then
    becomes the ``Event``. Equality, hashing, ``repr`` and pickling see the same values as for
    an ``Event`` built by its constructor.
    """
    ev: Any = EventDraft()
    ev.seq = next_seq()
    ev.at = wall_clock() if at is None else at
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
    ev.__class__ = Event
    return ev  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- packed events
#
# The fan-out keeps the events bound only for sync subscribers as flat runs of
# ``RECORD`` plain values in one list, and builds each ``Event`` when it is delivered: an event
# then lives only while it is handed out, instead of for a whole loop iteration (allocated and
# freed at once, it costs the garbage collector nothing). The run of a plain lifecycle event is
# ``kind, seq, at, task, task_id, attempt, duration, outcome``. The controller's submissions
# and slot transitions use the last two places for ``slot`` and ``reason`` instead (the kinds
# in ``SLOTTED``): no kind needs both pairs. Any other event is stored whole, as
# ``None, event`` followed by ``RECORD - 2`` ``None``.

RECORD = 8
"""Values per packed event."""

SLOTTED = frozenset({EventKind.CONTROLLER_SUBMITTED, EventKind.CONTROLLER_SLOT_TRANSITION})
"""Kinds whose packed run holds ``slot`` and ``reason`` where the others hold ``duration``
and ``outcome``."""


def packed(event: Event) -> tuple[object, ...]:
    """The run of an already built event."""
    return (None, event, None, None, None, None, None, None)


Run = tuple[Any, Any, Any, Any, Any, Any, Any, Any]


def runs(log: list[Any]) -> Iterator[Run]:
    """The runs of a packed log, in order, as tuples of ``RECORD`` values.

    A C-level iterator (no Python frame per run): ``kind, seq, at, task, task_id, attempt,
    duration, outcome``, or ``None, event, …`` for an event stored whole.
    """
    it = iter(log)
    return zip(it, it, it, it, it, it, it, it, strict=True)


def unpack_python(log: list[Any]) -> Iterator[Event]:
    """The events of a packed log, in order, each built as it is reached (in Python).

    The reference for the C accelerator, ``_cevents.Unpacker``: ``unpack`` is one of the two.
    """
    for kind, seq, at, task, task_id, attempt, duration, outcome in runs(log):
        if kind is None:
            yield seq
            continue
        ev: Any = EventDraft()
        ev.seq = seq
        ev.at = at
        ev.kind = kind
        ev.task = task
        ev.task_id = task_id
        ev.attempt = attempt
        ev.exit_code = ev.delay = ev.timeout = ev.backoff_source = ev.rejection = None
        if kind in SLOTTED:
            ev.slot = duration
            ev.reason = outcome
            ev.duration = ev.outcome = None
        else:
            ev.duration = duration
            ev.outcome = outcome
            ev.slot = ev.reason = None
        ev.__class__ = Event
        yield ev


def _c_unpacker() -> Callable[[list[Any]], Iterator[Event]] | None:
    """The C accelerator's unpacker, or ``None`` where it is not built or is turned off."""
    if os.environ.get("TASKVISOR_NO_EXTENSIONS"):
        return None
    try:
        from . import _cevents
    except ImportError:
        return None
    try:
        if _cevents.RECORD != RECORD:
            raise ValueError(f"its runs have {_cevents.RECORD} values, here {RECORD}")
        slots = tuple(_EventSlots.__dict__[name] for name in _FIELDS)
        return _cevents.Unpacker(Event, slots, SLOTTED)
    except (TypeError, ValueError) as exc:  # built from another version of this module
        warnings.warn(
            f"taskvisor._cevents does not match this taskvisor ({exc}); events are built in "
            "Python. Reinstall taskvisor to rebuild it.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


unpack: Callable[[list[Any]], Iterator[Event]] = _c_unpacker() or unpack_python
"""The events of a packed log, in order, each built as it is reached.

In C (``_cevents.c``, about 50 ns an event instead of about 250) where the extension was
built and ``TASKVISOR_NO_EXTENSIONS`` is not set; else ``unpack_python``. Same events either
way. The iterator's ``__length_hint__`` counts the events not reached yet (in C only).
"""

ACCELERATED = unpack is not unpack_python
"""Whether events are built by the C accelerator (``_cevents``)."""
