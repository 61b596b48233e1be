"""Typed events and the package's public surface (SPEC §5, §6, and "all public classes are
importable from the top level package")."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import pickle
import threading
import time
import types
import typing

import pytest

import taskvisor
from conftest import GUARD, SPEC_OPTIONAL_FIELDS, make_event
from taskvisor import (
    BackoffSource,
    Event,
    EventKind,
    OutcomeKind,
    RejectionKind,
    TaskId,
)
from taskvisor.testing import EventRecorder

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


def spec_event(**fields: object) -> Event:
    """An event built by its public constructor, every optional field given."""
    values: dict[str, object] = {
        "task": "job",
        "task_id": TaskId(7),
        "attempt": 2,
        "reason": "boom",
        "exit_code": 3,
        "delay": 0.5,
        "timeout": 1.5,
        "duration": 0.25,
        "backoff_source": BackoffSource.FAILURE,
        "outcome": OutcomeKind.FAILED,
        "rejection": RejectionKind.SLOT_BUSY,
        "slot": "s",
    }
    values.update(fields)
    return Event(12, 1700000000.5, EventKind.BACKOFF_SCHEDULED, **values)  # type: ignore[arg-type]


def test_event_is_a_frozen_slotted_dataclass() -> None:
    ev = make_event(EventKind.TASK_ADDED, "t", TaskId(1))
    assert dataclasses.is_dataclass(ev)
    assert hasattr(Event, "__slots__")
    assert not hasattr(ev, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.task = "u"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        ev.extra = 1  # type: ignore[attr-defined]


def test_event_fields_match_the_spec() -> None:
    names = [f.name for f in dataclasses.fields(Event)]
    assert names == ["seq", "at", "kind", *SPEC_OPTIONAL_FIELDS]


def test_absent_fields_are_none() -> None:
    ev = Event(1, 2.0, EventKind.ALL_STOPPED_WITHIN_GRACE)
    assert ev.kind is EventKind.ALL_STOPPED_WITHIN_GRACE
    assert all(getattr(ev, name) is None for name in SPEC_OPTIONAL_FIELDS)


def test_the_constructor_keeps_what_it_is_given() -> None:
    ev = spec_event()
    assert (ev.seq, ev.at, ev.kind) == (12, 1700000000.5, EventKind.BACKOFF_SCHEDULED)
    assert (ev.task, ev.task_id, ev.attempt, ev.delay) == ("job", 7, 2, 0.5)
    assert (ev.backoff_source, ev.reason, ev.exit_code) == (BackoffSource.FAILURE, "boom", 3)
    assert (ev.timeout, ev.duration, ev.outcome) == (1.5, 0.25, OutcomeKind.FAILED)
    assert (ev.rejection, ev.slot) == (RejectionKind.SLOT_BUSY, "s")
    name = "".join(["not-", "interned"])
    assert make_event(EventKind.TASK_ADDED, name).task is name  # the very value, not a copy


def test_events_compare_hash_repr_and_pickle_by_value() -> None:
    ev = spec_event()
    same = spec_event()
    assert ev == same
    assert hash(ev) == hash(same) == hash(dataclasses.replace(ev))
    assert ev != spec_event(attempt=3)
    assert ev != spec_event(slot=None)
    assert len({ev, same, spec_event(attempt=3)}) == 2
    assert pickle.loads(pickle.dumps(ev)) == ev
    assert type(pickle.loads(pickle.dumps(ev))) is Event
    assert repr(ev).startswith(
        "Event(seq=12, at=1700000000.5, kind=<EventKind.BACKOFF_SCHEDULED: 'backoff_scheduled'>,"
        " task='job', task_id=TaskId(7), attempt=2,"
    )
    bare = Event(1, 2.0, EventKind.TASK_ADDED)
    assert "slot=None" in repr(bare)
    assert pickle.loads(pickle.dumps(bare)) == bare


async def published_events(n: int) -> list[Event]:
    """Every event a supervisor publishes while running ``n`` instant tasks, as received."""
    recorder = EventRecorder()
    sup = taskvisor.Supervisor(
        taskvisor.SupervisorConfig(handle_signals=False), subscribers=[recorder]
    )
    async with asyncio.timeout(GUARD):
        await sup.run([taskvisor.TaskSpec.once(f"t{i}", _noop) for i in range(n)])
    return recorder.events


async def _noop() -> None:
    pass


async def test_at_is_the_wall_clock() -> None:
    before = time.time()
    events = await published_events(3)
    after = time.time()
    assert events
    assert all(before <= e.at <= after for e in events)
    stamps = [e.at for e in events]
    assert stamps == sorted(stamps)


async def test_seq_is_strictly_increasing_under_many_quick_events() -> None:
    events = await published_events(2_000)
    assert len(events) == 2_000 * 6 + 2  # six per task, then shutdown requested, all stopped
    assert all(a.seq < b.seq for a, b in itertools.pairwise(events))


def test_seq_is_unique_across_threads() -> None:
    # Four supervisors, each on its own loop in its own thread, at the same time: the
    # sequence is process-wide, so no two of their events share a seq.
    per_thread: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(len(per_thread))

    def run(out: list[int]) -> None:
        start.wait(GUARD)
        out.extend(e.seq for e in asyncio.run(published_events(300)))

    threads = [threading.Thread(target=run, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    everything = [s for out in per_thread for s in out]
    assert len(everything) == 4 * (300 * 6 + 2)
    assert len(set(everything)) == len(everything)
    for out in per_thread:
        assert out == sorted(out)


def test_is_diagnostic_only_for_panic_and_overflow() -> None:
    diagnostic = {k for k in EventKind if Event(1, 2.0, k).is_diagnostic}
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
