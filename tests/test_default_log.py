"""Heard by default: with no ``LogSubscriber``, a supervisor still reports what someone must
hear about through the stdlib logger ``taskvisor``, at WARNING and above (SPEC §13, 13.1.3)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

import pytest

import taskvisor as tv
from conftest import FAST, GUARD
from taskvisor.testing import EventRecorder

O = tv.OutcomeKind  # noqa: E741


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    """Everything logged on ``taskvisor`` (captured from DEBUG on: nothing is filtered)."""
    caplog.set_level(logging.DEBUG, logger="taskvisor")
    return lambda: [r for r in caplog.records if r.name == "taskvisor"]


def config(**kw: object) -> tv.SupervisorConfig:
    kw.setdefault("handle_signals", False)
    return tv.SupervisorConfig(**kw)  # type: ignore[arg-type]


def failing(*errors: BaseException) -> Callable[[tv.TaskContext], Awaitable[None]]:
    """Attempt n raises ``errors[n-1]`` (the last one for every later attempt)."""

    async def body(ctx: tv.TaskContext) -> None:
        raise errors[min(ctx.attempt, len(errors)) - 1]

    return body


async def run(sup: tv.Supervisor, *specs: tv.TaskSpec) -> tv.ShutdownReport:
    async with asyncio.timeout(GUARD):
        return await sup.run(specs)


async def test_an_unexpected_exception_is_heard_with_its_traceback(
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    bug = ZeroDivisionError("division by zero")
    report = await run(
        tv.Supervisor(config()),  # no subscriber at all
        tv.TaskSpec.restartable("calc", failing(bug), backoff=FAST, max_retries=1),
    )
    assert report.outcomes["calc"].kind is O.FAILED
    got = records()
    assert [(r.levelno, r.getMessage()) for r in got] == [
        (logging.WARNING, "task 'calc' attempt 1 failed: ZeroDivisionError: division by zero"),
        (logging.WARNING, "task 'calc' attempt 2 failed: ZeroDivisionError: division by zero"),
        (logging.ERROR, "task 'calc' failed after 2 attempts: ZeroDivisionError: division by zero"),
    ]
    for attempt in got[:2]:
        assert attempt.exc_info is not None
        assert attempt.exc_info[1] is bug
        assert attempt.exc_info[2] is not None  # the traceback travels with it


async def test_a_fail_is_heard_without_a_traceback(
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    await run(
        tv.Supervisor(config()),
        tv.TaskSpec.once("db", failing(tv.Fail("db down", exit_code=3))),
        tv.TaskSpec.once("cfg", failing(tv.Fatal("bad config"))),
    )
    got = {r.getMessage(): r for r in records()}
    assert set(got) == {
        "task 'db' attempt 1 failed: db down",
        "task 'db' failed after 1 attempt: db down",
        "task 'cfg' attempt 1 failed: bad config",
        "task 'cfg' failed fatally after 1 attempt: bad config",
    }
    assert all(r.exc_info is None for r in got.values())  # 13.1.3: TaskError: no exc_info
    assert got["task 'cfg' failed fatally after 1 attempt: bad config"].levelno == logging.ERROR


async def test_a_timed_out_attempt_is_heard(
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    async def slow(ctx: tv.TaskContext) -> None:
        if ctx.attempt == 1:
            await asyncio.Event().wait()

    report = await run(
        tv.Supervisor(config()), tv.TaskSpec.restartable("slow", slow, timeout=0.01, backoff=FAST)
    )
    assert report.outcomes["slow"].ok
    got = records()
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in got] == [
        (logging.WARNING, "task 'slow' attempt 1 timed out after 0.01s", None)
    ]  # the success that followed is not heard


async def test_an_exceeded_grace_period_is_heard(
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow_cleanup() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()

    sup = tv.Supervisor(config(grace=0.01))
    try:
        async with asyncio.timeout(GUARD):
            await sup.start()
            sup.add(tv.TaskSpec("slow", slow_cleanup))
            await started.wait()
            report = await sup.shutdown()
    finally:
        release.set()
    assert report.grace_exceeded
    assert report.outcomes["slow"].kind is O.FORCE_ABORTED
    got = records()
    assert [(r.levelno, r.getMessage()) for r in got] == [
        (logging.WARNING, "shutdown: still running after the 0.01s grace period: slow")
    ]  # a FORCE_ABORTED outcome is no FAILED/FATAL: not heard a second time


async def test_a_subscriber_panic_is_heard(
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    class Clumsy(tv.Subscriber):
        def on_event(self, event: tv.Event) -> None:
            if event.kind is tv.EventKind.TASK_ADDED:
                raise RuntimeError("cannot count")

    async def ok() -> None:
        pass

    report = await run(tv.Supervisor(config(), subscribers=[Clumsy()]), tv.TaskSpec.once("a", ok))
    assert report.outcomes["a"].ok
    assert [(r.levelno, r.getMessage()) for r in records()] == [
        (logging.ERROR, "subscriber 'Clumsy' raised: RuntimeError: cannot count")
    ]


async def test_stops_and_successes_are_not_heard(
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    async def ok(ctx: tv.TaskContext) -> int:
        return ctx.attempt

    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    sup = tv.Supervisor(config())
    async with asyncio.timeout(GUARD):
        report = await sup.run([tv.TaskSpec.once(f"job-{i}", ok) for i in range(200)])
        assert [o.result for o in report.outcomes.values()] == [1] * 200
        async with tv.Supervisor(config()) as other:
            handle = other.add(tv.TaskSpec("f", forever))
            await started.wait()
            assert await other.restart("f")  # a restart is no failure either
            assert (await handle.cancel()) is True
    assert handle.outcome is not None
    assert handle.outcome.kind is O.CANCELED
    assert records() == []


async def test_log_false_silences_it(records: Callable[[], list[logging.LogRecord]]) -> None:
    report = await run(
        tv.Supervisor(config(log=False)),
        tv.TaskSpec.once("bad", failing(ValueError("x"))),
        tv.TaskSpec.once("worse", failing(tv.Fatal("y"))),
    )
    assert report.outcomes["bad"].kind is O.FAILED
    assert records() == []


async def test_a_log_subscriber_on_the_same_logger_means_no_duplicates(
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    recorder = EventRecorder()
    await run(
        tv.Supervisor(config(), subscribers=[tv.LogSubscriber(), recorder]),
        tv.TaskSpec.once("bad", failing(ValueError("x"))),
    )
    got = records()
    # One record per event, all of them the LogSubscriber's (its records carry the event).
    assert [r.taskvisor_seq for r in got] == [e.seq for e in recorder.events]  # type: ignore[attr-defined]
    failed = [r for r in got if r.taskvisor_kind == "attempt_failed"]  # type: ignore[attr-defined]
    assert len(failed) == 1
    assert failed[0].exc_info is not None  # Event.error travels to the LogSubscriber


class AppLogSubscriber(tv.LogSubscriber):
    """An application's own flavour: still a LogSubscriber."""


@pytest.mark.parametrize(
    "subscriber",
    [
        pytest.param(lambda: tv.LogSubscriber("app.tasks"), id="by-name"),
        pytest.param(lambda: tv.LogSubscriber(logging.getLogger("app")), id="by-logger"),
        pytest.param(lambda: AppLogSubscriber("app"), id="subclass"),
    ],
)
async def test_any_log_subscriber_on_any_logger_turns_it_off(
    caplog: pytest.LogCaptureFixture,
    records: Callable[[], list[logging.LogRecord]],
    subscriber: Callable[[], tv.LogSubscriber],
) -> None:
    caplog.set_level(logging.DEBUG, logger="app")
    await run(
        tv.Supervisor(config(), subscribers=[subscriber()]),
        tv.TaskSpec.once("bad", failing(ValueError("x"))),
    )
    assert records() == []  # nothing from the default log
    assert any(r.name.startswith("app") and r.levelno >= logging.WARNING for r in caplog.records)


_CHILD = """
import asyncio, sys
import taskvisor as tv

async def bad() -> None:
    raise LookupError("no such row")

async def good() -> None:
    pass

body = bad if sys.argv[1] == "bad" else good
sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False))
asyncio.run(sup.run([tv.TaskSpec.once("job", body)]))
"""


@pytest.mark.parametrize("which", ["bad", "good"])
async def test_an_application_without_logging_set_up_hears_it_on_stderr(which: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        which,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(GUARD * 2):
        out, err = await proc.communicate()
    assert proc.returncode == 0
    assert out == b""
    text = err.decode()
    if which == "good":
        assert text == ""
        return
    # Python's last-resort handler: the message, the traceback, then the outcome.
    lines = text.splitlines()
    assert lines[0] == "task 'job' attempt 1 failed: LookupError: no such row"
    assert lines[1] == "Traceback (most recent call last):"
    assert "LookupError: no such row" in lines[-2]
    assert lines[-1] == "task 'job' failed after 1 attempt: LookupError: no such row"


async def test_a_cut_short_grace_period_is_never_called_expired(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A run() cancelled twice forces the stop, as a second signal does: every word about it
    # (the event, the outcome, the default log and a LogSubscriber) says so.
    caplog.set_level(logging.DEBUG)
    stopping = asyncio.Event()
    release = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopping.set()
            await release.wait()

    results: dict[str, list[str]] = {}
    for name, subscribers in (("voice", []), ("log", [tv.LogSubscriber("app")])):
        caplog.clear()
        recorder = EventRecorder()
        sup = tv.Supervisor(config(grace=30.0), subscribers=[recorder, *subscribers])
        stopping.clear()
        try:
            async with asyncio.timeout(GUARD):
                running = asyncio.create_task(sup.run([tv.TaskSpec("slow", slow_cleanup)]))
                await recorder.wait_for(tv.EventKind.ATTEMPT_STARTING)
                running.cancel()
                await stopping.wait()
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
                report = await sup.wait()
        finally:
            release.set()
        assert report.grace_exceeded
        [exceeded] = recorder.select(tv.EventKind.GRACE_EXCEEDED)
        assert exceeded.reason == "run cancelled again: forcing the stop now; still running: slow"
        outcome = report.outcomes["slow"]
        assert outcome.kind is O.FORCE_ABORTED
        assert outcome.reason == "force-stopped: run cancelled again"
        results[name] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        release.clear()
    assert results["voice"] == [
        "shutdown: run cancelled again: forcing the stop now; still running: slow"
    ]
    assert any("forcing the stop now" in m for m in results["log"]), results["log"]
    for messages in results.values():
        assert not any("grace" in m for m in messages), messages
