"""Packed events built in C (``_cevents``) and in Python (``unpack_python``): the same events.

The fan-out keeps events bound for sync subscribers as packed runs and builds each ``Event``
when it is delivered (``_events.unpack``). The optional C accelerator must build exactly what
the Python reference builds, keep every reference count right, and refuse what is malformed.
"""

from __future__ import annotations

import dataclasses
import gc
import operator
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskvisor import Event, EventKind, OutcomeKind, TaskId, _events
from taskvisor._events import (
    _FIELDS,
    RECORD,
    SLOTTED,
    _EventSlots,
    new_event,
    packed,
    unpack_python,
)

try:
    from taskvisor._cevents import Unpacker
except ImportError:  # not built here: the tests of the C side are skipped, with the reason
    Unpacker = None  # type: ignore[assignment, misc]

needs_c = pytest.mark.skipif(Unpacker is None, reason="the C accelerator is not built")

_SLOTS = tuple(_EventSlots.__dict__[name] for name in _FIELDS)


def _c_unpack(log: list[Any]) -> list[Event]:
    assert Unpacker is not None
    return list(Unpacker(Event, _SLOTS, SLOTTED)(log))


def _compiler_available() -> bool:
    cc = (sysconfig.get_config_var("CC") or "").split()
    include = sysconfig.get_paths()["include"]
    return bool(cc) and shutil.which(cc[0]) is not None and Path(include, "Python.h").exists()


# ------------------------------------------------------------------------ which one runs


@pytest.mark.skipif(
    not _compiler_available() or sys.implementation.name != "cpython",
    reason="no C compiler or Python headers here: taskvisor installs without the accelerator",
)
def test_the_accelerator_is_built_where_a_compiler_is() -> None:
    # A broken build would otherwise go unnoticed: the install skips an extension that fails.
    assert Unpacker is not None
    if os.environ.get("TASKVISOR_NO_EXTENSIONS"):
        assert not _events.ACCELERATED
    else:
        assert _events.ACCELERATED
        assert _events.unpack is not unpack_python


def test_no_extensions_turns_the_accelerator_off() -> None:
    code = "import taskvisor._events as e; print(e.ACCELERATED, e.unpack is e.unpack_python)"
    env = {**os.environ, "TASKVISOR_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "True"]


@needs_c
def test_a_mismatched_accelerator_falls_back_to_python_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An extension built from another version (say, one field less): import still works.
    monkeypatch.delenv("TASKVISOR_NO_EXTENSIONS", raising=False)  # the second pass sets it
    monkeypatch.setattr(_events, "_FIELDS", _FIELDS[:-1])
    with pytest.warns(RuntimeWarning, match="does not match this taskvisor"):
        assert _events._c_unpacker() is None
    monkeypatch.undo()
    monkeypatch.delenv("TASKVISOR_NO_EXTENSIONS", raising=False)
    monkeypatch.setattr(_events, "RECORD", RECORD + 1)  # runs of another length
    with pytest.warns(RuntimeWarning, match="its runs have 8 values, here 9"):
        assert _events._c_unpacker() is None
    monkeypatch.undo()


# ------------------------------------------------------------------------ same events

_KINDS = list(EventKind)
_values = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(list(OutcomeKind)),
    st.builds(TaskId, st.integers(min_value=1, max_value=10**6)),
)


@st.composite
def _logs(draw: st.DrawFn) -> list[Any]:
    log: list[Any] = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        if draw(st.booleans()) and draw(st.booleans()):  # an event stored whole
            event = new_event(
                draw(st.sampled_from(_KINDS)),
                draw(st.one_of(st.none(), st.text(max_size=5))),
                reason=draw(st.one_of(st.none(), st.text(max_size=5))),
                exit_code=draw(st.one_of(st.none(), st.integers())),
            )
            log += packed(event)
        else:
            log += (draw(st.sampled_from(_KINDS)), *(draw(_values) for _ in range(RECORD - 1)))
    return log


@needs_c
@settings(max_examples=300, deadline=None)
@given(_logs())
def test_c_builds_the_events_python_builds(log: list[Any]) -> None:
    built_c = _c_unpack(log)
    built_py = list(unpack_python(log))
    assert len(built_c) == len(built_py) == len(log) // RECORD
    for c_event, py_event in zip(built_c, built_py, strict=True):
        assert type(c_event) is Event
        assert c_event == py_event
        for name in _FIELDS:  # identity, not only equality: the very values of the log
            assert getattr(c_event, name) is getattr(py_event, name), name


@needs_c
def test_a_c_event_is_an_ordinary_frozen_event() -> None:
    tid = TaskId(7)
    log = [EventKind.ATTEMPT_SUCCEEDED, 12, 1700000000.5, "job", tid, 2, 0.25, None]
    (event,) = _c_unpack(log)
    assert event == Event(
        seq=12,
        at=1700000000.5,
        kind=EventKind.ATTEMPT_SUCCEEDED,
        task="job",
        task_id=tid,
        attempt=2,
        duration=0.25,
    )
    assert hash(event) == hash(dataclasses.replace(event))
    assert pickle.loads(pickle.dumps(event)) == event
    assert repr(event).startswith("Event(seq=12, at=1700000000.5, kind=<EventKind.ATTEMPT_SUC")
    assert (event.reason, event.slot, event.exit_code) == (None, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.task = "other"  # type: ignore[misc]


@needs_c
def test_c_maps_slot_and_reason_for_controller_kinds() -> None:
    log = [EventKind.CONTROLLER_SLOT_TRANSITION, 3, 1.0, None, None, None, "s1", "idle→running"]
    log += [EventKind.CONTROLLER_SUBMITTED, 4, 1.0, "t", TaskId(9), None, "s1", None]
    transition, submitted = _c_unpack(log)
    assert (transition.slot, transition.reason, transition.duration) == ("s1", "idle→running", None)
    assert (submitted.slot, submitted.task, submitted.outcome) == ("s1", "t", None)


@needs_c
def test_c_hands_out_an_event_stored_whole_as_it_is() -> None:
    event = new_event(EventKind.GRACE_EXCEEDED, reason="stuck: a")
    (out,) = _c_unpack(list(packed(event)))
    assert out is event


# ------------------------------------------------------------------------ reference counts


@needs_c
def test_c_events_hold_and_release_their_values() -> None:
    name = "".join(["task-", "refcounted"])  # a str of its own, not interned
    tid = TaskId(123456)
    duration = 1234.5678
    log = [EventKind.ATTEMPT_SUCCEEDED, 10**20, 2.0**40, name, tid, 1, duration, None] * 50
    watched = (name, tid, duration, Event)

    def counts() -> list[int]:
        return [sys.getrefcount(value) for value in watched]

    before = counts()
    events = _c_unpack(log)
    assert counts() == [before[0] + 50, before[1] + 50, before[2] + 50, before[3] + 50]
    assert events[0].task is name
    del events
    gc.collect()
    assert counts() == before
    del log  # and the iterator kept no reference to the log once exhausted
    assert counts()[:3] == [before[0] - 50, before[1] - 50, before[2] - 50]


@needs_c
def test_an_abandoned_c_iterator_releases_the_log() -> None:
    log = [EventKind.TASK_ADDED, 1, 1.0, "a", None, None, None, None] * 3
    before = sys.getrefcount(log)
    it = Unpacker(Event, _SLOTS, SLOTTED)(log)
    assert operator.length_hint(it) == 3
    next(it)
    assert operator.length_hint(it) == 2
    assert sys.getrefcount(log) == before + 1
    del it
    assert sys.getrefcount(log) == before


# ------------------------------------------------------------------------ refused


def test_a_truncated_log_is_refused_by_both() -> None:
    log = [EventKind.TASK_ADDED, 1, 1.0, "a", None, None, None, None, EventKind.TASK_ADDED, 2]
    with pytest.raises(ValueError):  # noqa: PT011 - zip(strict=True)'s message, in Python
        list(unpack_python(log))
    if Unpacker is not None:
        with pytest.raises(ValueError, match="multiple of 8"):
            _c_unpack(log)


@needs_c
@pytest.mark.skipif(
    sys.version_info >= (3, 12),
    reason="from CPython 3.12 on, an allocation only schedules a collection, never runs one",
)
def test_a_log_changed_while_unpacked_is_refused() -> None:
    # On 3.11 an allocation may run a garbage collection, hence a finalizer that changes the log.
    log = [EventKind.TASK_ADDED, 1, 1.0, "a", None, None, None, None] * 4

    class Meddler:
        def __init__(self) -> None:
            self.cycle = self

        def __del__(self) -> None:
            log[8:] = [None] * (len(log) - 8)

    it = Unpacker(Event, _SLOTS, SLOTTED)(log)
    next(it)
    threshold = gc.get_threshold()
    gc.collect()
    error: RuntimeError | None = None
    Meddler()  # garbage in a cycle, freed by the next collection...
    gc.set_threshold(1)
    try:
        next(it)  # ...which the allocation of this event starts (nothing allocates before)
    except RuntimeError as exc:
        error = exc
    finally:
        gc.set_threshold(*threshold)
    assert error is not None
    assert str(error) == "a packed log changed while it was unpacked"
    with pytest.raises(StopIteration):
        next(it)


@needs_c
@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("Event", _SLOTS, SLOTTED), TypeError, "type"),
        ((Event, list(_SLOTS), SLOTTED), TypeError, "tuple"),
        ((Event, _SLOTS[:-1], SLOTTED), ValueError, "expected 15"),
        ((Event, (*_SLOTS[:-1], "slot"), SLOTTED), TypeError, r"slots\[14\]"),
        ((dict, _SLOTS, SLOTTED), TypeError, "not a writable object slot of dict"),
        ((Event, _SLOTS, 5), TypeError, "not iterable"),
        ((Event, _SLOTS, list(EventKind)), ValueError, "at most 8"),
    ],
)
def test_the_unpacker_checks_its_arguments(args: tuple[Any, ...], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Unpacker(*args)


@needs_c
def test_the_unpacker_takes_only_a_list() -> None:
    unpacker = Unpacker(Event, _SLOTS, SLOTTED)
    with pytest.raises(TypeError, match="list"):
        unpacker((EventKind.TASK_ADDED, 1, 1.0, "a", None, None, None, None))  # type: ignore[arg-type]
