"""``taskvisor.subscribers.JsonLinesSubscriber``: one JSON object per event, per line."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest

import taskvisor as tv
from conftest import make_event
from taskvisor.subscribers import JsonLinesSubscriber
from taskvisor.testing import EventRecorder

E = tv.EventKind
ROOT = Path(__file__).resolve().parent.parent
FIELD_ORDER = [
    "traceback" if f.name == "error" else f.name for f in dataclasses.fields(tv.Event)
]  # the exception is written as its formatted traceback


def quiet() -> tv.SupervisorConfig:
    return tv.SupervisorConfig(handle_signals=False)


async def fail_twice_then_succeed(ctx: tv.TaskContext) -> None:
    if ctx.attempt <= 2:
        raise tv.Fail(f"db down ({ctx.attempt})", exit_code=3)


def read_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def test_a_known_scenario_parses_back_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    rec = EventRecorder()
    with JsonLinesSubscriber(path) as sink:
        assert sink.path == str(path)
        assert sink.blocking is True
        async with asyncio.timeout(10):
            await tv.Supervisor(quiet(), subscribers=[sink, rec]).run(
                [
                    tv.TaskSpec.restartable(
                        "db", fail_twice_then_succeed, backoff=tv.BackoffPolicy.constant(0.001)
                    )
                ]
            )
    assert sink.closed
    lines = read_lines(path)
    assert [d["seq"] for d in lines] == [e.seq for e in rec.events]
    for d, e in zip(lines, rec.events, strict=True):
        assert list(d) == [k for k in FIELD_ORDER if k in d]  # declaration order
        expected = {k: v for k, v in _as_json(e).items() if v is not None}
        assert d == expected  # None fields are left out; enums are their labels
    failed = [d for d in lines if d["kind"] == "attempt_failed"]
    assert failed[0] == {
        "seq": failed[0]["seq"],
        "at": failed[0]["at"],
        "kind": "attempt_failed",
        "task": "db",
        "task_id": failed[0]["task_id"],
        "attempt": 1,
        "reason": "db down (1)",
        "exit_code": 3,
        "duration": failed[0]["duration"],
        "traceback": failed[0]["traceback"],
    }
    assert failed[0]["traceback"].startswith("Traceback (most recent call last):")
    assert failed[0]["traceback"].rstrip().endswith("Fail: db down (1)")
    assert isinstance(failed[0]["at"], float)
    assert isinstance(failed[0]["duration"], float)
    backoff = next(d for d in lines if d["kind"] == "backoff_scheduled")
    assert backoff["backoff_source"] == "failure"
    assert backoff["delay"] == 0.001
    finished = next(d for d in lines if d["kind"] == "task_finished")
    assert finished["outcome"] == "completed"
    assert "reason" not in finished
    assert lines[-1] == {
        "seq": lines[-1]["seq"],
        "at": lines[-1]["at"],
        "kind": "all_stopped_within_grace",
    }


def _as_json(e: tv.Event) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for f in dataclasses.fields(e):
        v = getattr(e, f.name)
        if isinstance(v, str):  # StrEnum labels
            v = str(v)
        if f.name == "error":  # written as its formatted traceback
            d["traceback"] = None if v is None else "".join(traceback.format_exception(v))
        else:
            d[f.name] = v
    if e.task_id is not None:
        d["task_id"] = int(e.task_id)
    return d


def test_every_kind_round_trips() -> None:
    stream = io.StringIO()
    sink = JsonLinesSubscriber(stream)
    events = [
        make_event(
            E.TASK_ADD_FAILED,
            "t",
            rejection=tv.RejectionKind.BATCH_REJECTED,
            outcome=tv.OutcomeKind.REJECTED,
        ),
        make_event(E.ATTEMPT_TIMED_OUT, "t", tv.TaskId(3), attempt=2, duration=1.0, timeout=1.0),
        make_event(E.CONTROLLER_SLOT_TRANSITION, slot="s", reason="idle→admitting"),
        make_event(E.TASK_ADDED, "naïve ✓", tv.TaskId(4)),
    ]
    for e in events:
        sink.on_event(e)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["rejection"] == "batch_rejected"
    assert lines[0]["outcome"] == "rejected"
    assert lines[1]["timeout"] == 1.0
    assert "delay" not in lines[1]
    assert lines[2]["reason"] == "idle→admitting"
    assert lines[2]["slot"] == "s"
    assert lines[3]["task"] == "naïve ✓"
    assert stream.getvalue().isascii()  # \u escapes: safe in any stream encoding
    sink.close()
    assert not stream.closed  # a stream passed in stays the caller's


def test_binary_stream_gets_utf8_lines() -> None:
    stream = io.BytesIO()
    sink = JsonLinesSubscriber(stream)
    sink.on_event(make_event(E.ALL_STOPPED_WITHIN_GRACE))
    data = stream.getvalue()
    assert data.endswith(b"\n")
    assert json.loads(data)["kind"] == "all_stopped_within_grace"


def open_descriptors_of(path: Path) -> list[str]:
    """This process's open file descriptors that refer to ``path`` (Linux's /proc)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd here to see open files")
    found = []
    for fd in os.listdir(fds):
        try:
            target = os.readlink(fds / fd)
        except OSError:  # the descriptor listdir itself used, already gone
            continue
        if target == str(path.resolve()):
            found.append(fd)
    return found


def test_path_is_appended_to_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"seq": 0}\n', encoding="utf-8")
    sink = JsonLinesSubscriber(str(path))
    sink.on_event(make_event(E.SHUTDOWN_REQUESTED, reason="test"))
    assert len(open_descriptors_of(path)) == 1  # it holds the file open
    # Flushed per line: readable before close.
    assert [d.get("kind") for d in read_lines(path)] == [None, "shutdown_requested"]
    sink.close()
    sink.close()  # idempotent
    assert not open_descriptors_of(path)  # the file it opened is closed
    sink.on_event(make_event(E.ALL_STOPPED_WITHIN_GRACE))  # after close: dropped, no error
    assert len(read_lines(path)) == 2


async def test_writes_run_off_the_event_loop_thread() -> None:
    class ThreadSpy(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[int] = set()

        def write(self, s: str) -> int:
            self.threads.add(threading.get_ident())
            return super().write(s)

    spy = ThreadSpy()

    async def work() -> None:
        return None

    async with asyncio.timeout(10):
        await tv.Supervisor(quiet(), subscribers=[JsonLinesSubscriber(spy)]).run(
            [tv.TaskSpec.once("w", work)]
        )
    assert spy.threads
    assert threading.get_ident() not in spy.threads
    assert len(spy.getvalue().splitlines()) == 8


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="stream_or_path"):
        JsonLinesSubscriber(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stream_or_path"):
        JsonLinesSubscriber("")
    with pytest.raises(FileNotFoundError):
        JsonLinesSubscriber("/nonexistent-dir/x/events.jsonl")


def test_example_jsonl_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.events_jsonl", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "attempts per task: {'import-orders': 2}" in out.stdout
    assert '"kind":"task_finished"' in out.stdout
