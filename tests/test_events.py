"""Typed events and the package's public surface (SPEC §5, §6, and "all public classes are
importable from the top level package")."""

from __future__ import annotations

import dataclasses
import enum
import itertools
import threading
import time
import types
import typing

import pytest

import taskvisor
from conftest import SPEC_OPTIONAL_FIELDS
from taskvisor import (
    BackoffSource,
    Event,
    EventKind,
    OutcomeKind,
    RejectionKind,
    TaskId,
)
from taskvisor._events import new_event

# The kinds of SPEC §6, in its order; the value of each is its lower-case name.
SPEC_KINDS = [
    "TASK_ADD_REQUESTED",
    "TASK_ADDED",
    "TASK_ADD_FAILED",
    "ATTEMPT_STARTING",
    "ATTEMPT_SUCCEEDED",
    "ATTEMPT_FAILED",
    "ATTEMPT_TIMED_OUT",
    "ATTEMPT_CANCELED",
    "BACKOFF_SCHEDULED",
    "TASK_FINISHED",
    "TASK_REMOVE_REQUESTED",
    "TASK_REMOVED",
    "SHUTDOWN_REQUESTED",
    "ALL_STOPPED_WITHIN_GRACE",
    "GRACE_EXCEEDED",
    "SUBSCRIBER_PANICKED",
    "SUBSCRIBER_OVERFLOW",
    "CONTROLLER_SUBMITTED",
    "CONTROLLER_REJECTED",
    "CONTROLLER_SLOT_TRANSITION",
]


# Every public name the SPEC mentions.
SPEC_NAMES = {
    "AlreadyRunning",
    "BackoffPolicy",
    "BackoffSource",
    "ControllerConfig",
    "ControllerNotConfigured",
    "ControllerSnapshot",
    "ControllerSpec",
    "Event",
    "EventKind",
    "Fail",
    "Fatal",
    "JitterPolicy",
    "OutcomeKind",
    "RejectionKind",
    "RestartPolicy",
    "ShutdownReport",
    "SlotState",
    "SlotView",
    "Subscriber",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorConfig",
    "TaskAlreadyExists",
    "TaskContext",
    "TaskDefaults",
    "TaskError",
    "TaskHandle",
    "TaskId",
    "TaskInfo",
    "TaskOutcome",
    "TaskSpec",
    "TaskState",
    "TaskTerminationTimeout",
    "TaskvisorError",
}


# ---------------------------------------------------------------- Event


def test_event_is_a_frozen_slotted_dataclass() -> None:
    ev = new_event(EventKind.TASK_ADDED, "t", TaskId(1))
    assert dataclasses.is_dataclass(ev)
    assert hasattr(Event, "__slots__")
    assert not hasattr(ev, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.task = "u"  # type: ignore[misc]


def test_event_fields_match_the_spec() -> None:
    names = [f.name for f in dataclasses.fields(Event)]
    assert names == ["seq", "at", "kind", *SPEC_OPTIONAL_FIELDS]


def test_absent_fields_are_none() -> None:
    ev = new_event(EventKind.ALL_STOPPED_WITHIN_GRACE)
    assert ev.kind is EventKind.ALL_STOPPED_WITHIN_GRACE
    assert all(getattr(ev, name) is None for name in SPEC_OPTIONAL_FIELDS)


def test_new_event_fills_what_it_is_given() -> None:
    ev = new_event(
        EventKind.BACKOFF_SCHEDULED,
        "t",
        TaskId(4),
        attempt=2,
        delay=0.5,
        backoff_source=BackoffSource.FAILURE,
        reason="boom",
    )
    assert (ev.task, ev.task_id, ev.attempt, ev.delay) == ("t", 4, 2, 0.5)
    assert (ev.backoff_source, ev.reason) == (BackoffSource.FAILURE, "boom")
    assert (ev.exit_code, ev.outcome, ev.slot) == (None, None, None)


def test_at_is_the_wall_clock() -> None:
    before = time.time()
    ev = new_event(EventKind.TASK_ADDED)
    after = time.time()
    assert before <= ev.at <= after


def test_seq_is_strictly_increasing_under_many_quick_creations() -> None:
    events = [new_event(EventKind.TASK_ADDED) for _ in range(20_000)]
    seqs = [e.seq for e in events]
    assert all(a < b for a, b in itertools.pairwise(seqs))


def test_seq_is_unique_across_threads() -> None:
    per_thread: list[list[int]] = [[] for _ in range(4)]

    def make(out: list[int]) -> None:
        out.extend(new_event(EventKind.TASK_ADDED).seq for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    everything = [s for out in per_thread for s in out]
    assert len(everything) == 20_000
    assert len(set(everything)) == 20_000
    for out in per_thread:
        assert out == sorted(out)


def test_is_diagnostic_only_for_panic_and_overflow() -> None:
    diagnostic = {k for k in EventKind if new_event(k).is_diagnostic}
    assert diagnostic == {EventKind.SUBSCRIBER_PANICKED, EventKind.SUBSCRIBER_OVERFLOW}


# ---------------------------------------------------------------- enums


def test_event_kind_is_a_str_enum_with_every_spec_kind() -> None:
    assert issubclass(EventKind, enum.StrEnum)
    assert [k.name for k in EventKind] == SPEC_KINDS


@pytest.mark.parametrize("name", SPEC_KINDS)
def test_event_kind_value_is_its_lower_case_name(name: str) -> None:
    kind = EventKind[name]
    assert kind.value == name.lower()
    assert kind == name.lower()
    assert str(kind) == name.lower()
    assert f"{kind}" == name.lower()
    assert EventKind(name.lower()) is kind


def test_backoff_source_values() -> None:
    assert issubclass(BackoffSource, enum.StrEnum)
    assert {k.name: k.value for k in BackoffSource} == {"SUCCESS": "success", "FAILURE": "failure"}


def test_outcome_kind_values() -> None:
    assert issubclass(OutcomeKind, enum.StrEnum)
    assert {k.name: k.value for k in OutcomeKind} == {
        "COMPLETED": "completed",
        "FAILED": "failed",
        "FATAL": "fatal",
        "CANCELED": "canceled",
        "FORCE_ABORTED": "force_aborted",
        "REJECTED": "rejected",
    }


def test_rejection_kind_values() -> None:
    assert issubclass(RejectionKind, enum.StrEnum)
    assert {k.name: k.value for k in RejectionKind} == {
        "ALREADY_EXISTS": "already_exists",
        "BATCH_REJECTED": "batch_rejected",
        "SLOT_BUSY": "slot_busy",
        "QUEUE_FULL": "queue_full",
        "SUPERSEDED": "superseded",
        "REMOVED_FROM_QUEUE": "removed_from_queue",
        "SHUTTING_DOWN": "shutting_down",
    }


# ---------------------------------------------------------------- the public surface


def _public_names() -> set[str]:
    return {
        name
        for name, value in vars(taskvisor).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_equals_the_public_names() -> None:
    assert len(taskvisor.__all__) == len(set(taskvisor.__all__))
    assert set(taskvisor.__all__) == _public_names()


def test_every_spec_name_is_exported() -> None:
    assert set(taskvisor.__all__) >= SPEC_NAMES


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from taskvisor import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(taskvisor.__all__)


@pytest.mark.parametrize("name", sorted(taskvisor.__all__))
def test_exported_classes_read_taskvisor(name: str) -> None:
    obj = getattr(taskvisor, name)
    if isinstance(obj, type):
        assert obj.__module__ == "taskvisor"
        assert obj.__qualname__ == name


@pytest.mark.parametrize("name", sorted(taskvisor.__all__))
def test_exported_classes_stay_introspectable(name: str) -> None:
    # Rewriting __module__ must not break annotation lookup (dataclass tooling, validators).
    obj = getattr(taskvisor, name)
    if isinstance(obj, type):
        typing.get_type_hints(obj)


@pytest.mark.parametrize("name", sorted(taskvisor.__all__))
def test_exported_names_have_docstrings(name: str) -> None:
    assert (getattr(taskvisor, name).__doc__ or "").strip()
