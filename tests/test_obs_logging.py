"""``taskvisor.subscribers.LogSubscriber``: one stdlib logging record per event."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import taskvisor as tv
from conftest import SPEC_EVENT_FIELDS, make_event
from taskvisor.subscribers import LogSubscriber
from taskvisor.testing import EventRecorder

E = tv.EventKind
O = tv.OutcomeKind  # noqa: E741
ROOT = Path(__file__).resolve().parent.parent
FAST = tv.BackoffPolicy.constant(0.001)
LR = logging.getLevelName


def quiet(**kw: float) -> tv.SupervisorConfig:
    return tv.SupervisorConfig(handle_signals=False, **kw)  # type: ignore[arg-type]


def tvx(record: logging.LogRecord, field: str) -> Any:
    """An event field from a record's ``extra`` (``record.taskvisor_<field>``)."""
    return getattr(record, "taskvisor_" + field)


def tv_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "taskvisor"]


def by_kind(records: list[logging.LogRecord], kind: tv.EventKind) -> list[logging.LogRecord]:
    return [r for r in records if tvx(r, "kind") == kind.value]


async def fail_twice_then_succeed(ctx: tv.TaskContext) -> None:
    if ctx.attempt <= 2:
        raise tv.Fail(f"db down ({ctx.attempt})", exit_code=3)


async def test_one_record_per_event_with_every_field_in_extra(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskvisor")
    rec = EventRecorder()
    async with asyncio.timeout(10):
        await tv.Supervisor(quiet(), subscribers=[LogSubscriber(), rec]).run(
            [tv.TaskSpec.restartable("db", fail_twice_then_succeed, backoff=FAST)]
        )
    records = tv_records(caplog)
    assert [tvx(r, "seq") for r in records] == [e.seq for e in rec.events]
    for r, e in zip(records, rec.events, strict=True):
        # always present, None when absent: format strings never fail
        for field in SPEC_EVENT_FIELDS:
            assert hasattr(r, "taskvisor_" + field), field
        assert tvx(r, "kind") == e.kind.value
        assert type(tvx(r, "kind")) is str
        assert tvx(r, "task") == e.task
        assert tvx(r, "at") == e.at
    failed = by_kind(records, E.ATTEMPT_FAILED)
    assert [tvx(r, "attempt") for r in failed] == [1, 2]
    first = failed[0]
    assert first.levelno == logging.ERROR
    assert tvx(first, "exit_code") == 3
    assert tvx(first, "reason") == "db down (1)"
    assert type(tvx(first, "task_id")) is int
    assert tvx(first, "duration") >= 0
    assert first.getMessage().startswith("task 'db' attempt 1 failed after ")
    assert first.getMessage().endswith(": db down (1) (exit code 3)")
    assert failed[0].msg == failed[1].msg  # one constant template per kind: log tools group
    backoff = by_kind(records, E.BACKOFF_SCHEDULED)[0]
    assert backoff.levelno == logging.DEBUG
    assert tvx(backoff, "backoff_source") == "failure"
    assert tvx(backoff, "delay") == 0.001
    assert "retrying in 0.001s after attempt 1 failed: db down (1)" in backoff.getMessage()
    finished = by_kind(records, E.TASK_FINISHED)[0]
    assert finished.levelno == logging.INFO
    assert tvx(finished, "outcome") == "completed"
    assert finished.getMessage() == "task 'db' finished: completed"
    levels = {tvx(r, "kind"): LR(r.levelno) for r in records}
    assert levels == {
        "task_add_requested": "DEBUG",
        "task_added": "INFO",
        "attempt_starting": "DEBUG",
        "attempt_failed": "ERROR",
        "backoff_scheduled": "DEBUG",
        "attempt_succeeded": "INFO",
        "task_finished": "INFO",
        "task_removed": "INFO",
        "shutdown_requested": "INFO",
        "all_stopped_within_grace": "INFO",
    }


def _events_of_every_kind() -> list[tv.Event]:
    tid = tv.TaskId(7)
    return [
        make_event(E.TASK_ADD_REQUESTED, "t"),
        make_event(E.TASK_ADDED, "t", tid),
        make_event(
            E.TASK_ADD_FAILED,
            "t",
            rejection=tv.RejectionKind.ALREADY_EXISTS,
            outcome=O.REJECTED,
        ),
        make_event(E.ATTEMPT_STARTING, "t", tid, attempt=1),
        make_event(E.ATTEMPT_SUCCEEDED, "t", tid, attempt=1, duration=0.5),
        make_event(E.ATTEMPT_FAILED, "t", tid, attempt=1, duration=0.5, reason="ValueError: x"),
        make_event(E.ATTEMPT_TIMED_OUT, "t", tid, attempt=1, duration=2.0, timeout=2.0),
        make_event(E.ATTEMPT_CANCELED, "t", tid, attempt=1, duration=0.1),
        make_event(
            E.BACKOFF_SCHEDULED,
            "t",
            tid,
            attempt=1,
            delay=5.0,
            backoff_source=tv.BackoffSource.SUCCESS,
        ),
        make_event(E.TASK_FINISHED, "t", tid, outcome=O.FATAL, reason="bad config", exit_code=2),
        make_event(E.TASK_REMOVE_REQUESTED, "t", tid),
        make_event(E.TASK_REMOVED, "t", tid),
        make_event(E.SHUTDOWN_REQUESTED, reason="signal SIGTERM"),
        make_event(E.ALL_STOPPED_WITHIN_GRACE),
        make_event(E.GRACE_EXCEEDED, reason="still running after 1.0s: t"),
        make_event(E.SUBSCRIBER_PANICKED, "Sink", reason="OSError: disk full"),
        make_event(E.SUBSCRIBER_OVERFLOW, "Sink", reason="full"),
        make_event(E.CONTROLLER_SUBMITTED, "t", tid, slot="s"),
        make_event(
            E.CONTROLLER_REJECTED,
            "t",
            tid,
            slot="s",
            rejection=tv.RejectionKind.QUEUE_FULL,
            outcome=O.REJECTED,
        ),
        make_event(E.CONTROLLER_SLOT_TRANSITION, slot="s", reason="running→terminating"),
    ]


def test_every_kind_has_a_readable_message_and_its_default_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskvisor")
    sub = LogSubscriber()
    events = _events_of_every_kind()
    assert {e.kind for e in events} == set(E)
    for e in events:
        sub.on_event(e)
    got = {tvx(r, "kind"): (LR(r.levelno), r.getMessage()) for r in tv_records(caplog)}
    assert got == {
        "task_add_requested": ("DEBUG", "task 't' add requested"),
        "task_added": ("INFO", "task 't' added (id 7)"),
        "task_add_failed": ("WARNING", "task 't' rejected: already_exists"),
        "attempt_starting": ("DEBUG", "task 't' attempt 1 starting"),
        "attempt_succeeded": ("INFO", "task 't' attempt 1 succeeded in 0.500s"),
        "attempt_failed": ("ERROR", "task 't' attempt 1 failed after 0.500s: ValueError: x"),
        "attempt_timed_out": ("WARNING", "task 't' attempt 1 timed out after 2.000s"),
        "attempt_canceled": ("INFO", "task 't' attempt 1 canceled after 0.100s"),
        "backoff_scheduled": ("DEBUG", "task 't' running again in 5.000s after attempt 1"),
        "task_finished": ("ERROR", "task 't' finished: fatal (bad config, exit code 2)"),
        "task_remove_requested": ("DEBUG", "task 't' stop requested"),
        "task_removed": ("INFO", "task 't' removed"),
        "shutdown_requested": ("INFO", "shutdown requested: signal SIGTERM"),
        "all_stopped_within_grace": ("INFO", "all tasks stopped within the grace period"),
        "grace_exceeded": ("WARNING", "shutdown: still running after 1.0s: t"),
        "subscriber_panicked": ("ERROR", "subscriber 'Sink' raised: OSError: disk full"),
        "subscriber_overflow": ("WARNING", "subscriber 'Sink' dropped an event (queue full)"),
        "controller_submitted": ("INFO", "task 't' submitted to slot 's'"),
        "controller_rejected": ("WARNING", "task 't' rejected by slot 's': queue_full"),
        "controller_slot_transition": ("DEBUG", "slot 's': running→terminating"),
    }


@pytest.mark.parametrize(
    ("outcome", "level"),
    [
        (O.COMPLETED, "INFO"),
        (O.CANCELED, "INFO"),
        (O.FAILED, "WARNING"),
        (O.FORCE_ABORTED, "WARNING"),
        (O.REJECTED, "WARNING"),
        (O.FATAL, "ERROR"),
    ],
)
def test_task_finished_level_follows_the_outcome(outcome: tv.OutcomeKind, level: str) -> None:
    event = make_event(E.TASK_FINISHED, "t", tv.TaskId(1), outcome=outcome)
    assert LR(LogSubscriber().level_for(event)) == level


async def test_levels_of_a_real_unhappy_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="taskvisor")
    release = asyncio.Event()

    async def fatal() -> None:
        raise tv.Fatal("bad config", exit_code=2)

    async def slow() -> None:
        await asyncio.Event().wait()

    class Boom(tv.Subscriber):
        def on_event(self, event: tv.Event) -> None:
            raise RuntimeError("broken sink")

    class Slow(tv.Subscriber):
        queue_capacity = 1

        async def on_event(self, event: tv.Event) -> None:
            await release.wait()

    rec = EventRecorder()
    sup = tv.Supervisor(
        quiet(subscriber_shutdown_timeout=0.5),
        subscribers=[LogSubscriber(), rec, Boom(), Slow()],
    )
    async with asyncio.timeout(10):
        async with sup:
            sup.add(tv.TaskSpec.once("fatal", fatal))
            sup.add(tv.TaskSpec.once("slow", slow, timeout=0.01))
            sup.add(tv.TaskSpec.once("blocked", slow))
            with pytest.raises(tv.TaskAlreadyExists):
                sup.add(tv.TaskSpec.once("blocked", slow))
            await rec.wait_for(E.TASK_FINISHED, task="fatal")
            await rec.wait_for(E.TASK_FINISHED, task="slow")
            await rec.wait_for(E.ATTEMPT_STARTING, task="blocked")
        release.set()
    records = tv_records(caplog)

    def level(kind: tv.EventKind, task: str | None = None) -> str:
        matching = [r for r in by_kind(records, kind) if task is None or tvx(r, "task") == task]
        assert matching, (kind, task)
        return str(LR(matching[0].levelno))

    assert level(E.ATTEMPT_FAILED, "fatal") == "ERROR"
    assert level(E.TASK_FINISHED, "fatal") == "ERROR"
    assert level(E.ATTEMPT_TIMED_OUT, "slow") == "WARNING"
    assert level(E.TASK_FINISHED, "slow") == "WARNING"  # FAILED
    assert level(E.TASK_ADD_FAILED, "blocked") == "WARNING"
    assert level(E.TASK_REMOVE_REQUESTED, "blocked") == "DEBUG"
    assert level(E.ATTEMPT_CANCELED, "blocked") == "INFO"
    assert level(E.TASK_FINISHED, "blocked") == "INFO"  # CANCELED
    assert level(E.SUBSCRIBER_PANICKED, "Boom") == "ERROR"
    assert level(E.SUBSCRIBER_OVERFLOW, "Slow") == "WARNING"


def test_level_map_overrides_by_event_kind_and_by_outcome() -> None:
    sub = LogSubscriber(
        level_map={
            E.ATTEMPT_SUCCEEDED: logging.DEBUG,
            E.TASK_FINISHED: "warning",
            O.COMPLETED: "DEBUG",
        }
    )
    ok = make_event(E.ATTEMPT_SUCCEEDED, "t", tv.TaskId(1), attempt=1, duration=0.1)
    assert sub.level_for(ok) == logging.DEBUG
    done = make_event(E.TASK_FINISHED, "t", tv.TaskId(1), outcome=O.COMPLETED)
    fatal = make_event(E.TASK_FINISHED, "t", tv.TaskId(1), outcome=O.FATAL)
    assert sub.level_for(done) == logging.DEBUG  # the OutcomeKind entry is more specific
    assert sub.level_for(fatal) == logging.WARNING  # the TASK_FINISHED entry covers the rest
    assert sub.level_for(make_event(E.TASK_ADDED, "t", tv.TaskId(1))) == logging.INFO
    assert (
        LogSubscriber(level_map={O.CANCELED: 5}).level_for(
            make_event(E.TASK_FINISHED, "t", tv.TaskId(1), outcome=O.CANCELED)
        )
        == 5
    )


def test_bad_arguments_are_refused_at_construction() -> None:
    with pytest.raises(TypeError, match="level_map keys"):
        LogSubscriber(level_map={"attempt_failed": logging.INFO})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"level_map\[attempt_failed\]"):
        LogSubscriber(level_map={E.ATTEMPT_FAILED: 1.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"level_map\[attempt_failed\]"):
        LogSubscriber(level_map={E.ATTEMPT_FAILED: True})
    with pytest.raises(ValueError, match="unknown logging level name 'LOUD'"):
        LogSubscriber(level_map={E.ATTEMPT_FAILED: "LOUD"})
    with pytest.raises(ValueError, match=">= 0"):
        LogSubscriber(level_map={O.FAILED: -1})
    with pytest.raises(TypeError, match="level_map must be a mapping"):
        LogSubscriber(level_map=[(E.ATTEMPT_FAILED, 10)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="logger"):
        LogSubscriber(logger=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="logger"):
        LogSubscriber(logger="")
    with pytest.raises(TypeError, match="blocking"):
        LogSubscriber(blocking=1)  # type: ignore[arg-type]


def test_logger_by_name_or_object_and_disabled_levels_log_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="myapp.tasks")
    named = LogSubscriber("myapp.tasks")
    assert named.logger is logging.getLogger("myapp.tasks")
    assert LogSubscriber(logging.getLogger("x")).logger.name == "x"
    assert LogSubscriber().logger.name == "taskvisor"
    named.on_event(make_event(E.TASK_ADDED, "t", tv.TaskId(1)))  # INFO: below WARNING
    named.on_event(make_event(E.GRACE_EXCEEDED, reason="t"))
    assert [tvx(r, "kind") for r in caplog.records if r.name == "myapp.tasks"] == ["grace_exceeded"]


def test_extra_fields_feed_format_strings_and_never_clash() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(taskvisor_kind)s task=%(taskvisor_task)s %(message)s")
    )
    logger = logging.getLogger("taskvisor.test.format")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        sub = LogSubscriber(logger)
        for e in _events_of_every_kind():  # makeRecord raises KeyError on a clashing key
            sub.on_event(e)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(E)
    assert lines[0] == "DEBUG task_add_requested task=t task 't' add requested"
    assert "INFO shutdown_requested task=None shutdown requested: signal SIGTERM" in lines


async def test_blocking_mode_logs_from_another_thread(caplog: pytest.LogCaptureFixture) -> None:
    import threading

    caplog.set_level(logging.DEBUG, logger="taskvisor")
    sub = LogSubscriber(blocking=True)
    assert sub.blocking is True

    async def work() -> None:
        return None

    async with asyncio.timeout(10):
        await tv.Supervisor(quiet(), subscribers=[sub]).run([tv.TaskSpec.once("w", work)])
    threads = {r.thread for r in tv_records(caplog)}
    assert threads
    assert threading.get_ident() not in threads


def test_example_logging_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.logging_events", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = out.stderr.splitlines()
    assert any("attempt 1 failed" in line and '"taskvisor_exit_code": 75' in line for line in lines)
    assert any("finished: completed" in line for line in lines)
