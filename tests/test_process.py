"""Supervised commands (``taskvisor.process.command``) with real subprocesses.

Each test runs a short ``python -c`` program through ``sys.executable``. Readiness is always
learned from the program's own output (a log record), never from sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, POLITE, STUBBORN, SupervisorFactory, group_gone
from taskvisor import OutcomeKind as O
from taskvisor.process import Watch, command


def py(code: str) -> list[str]:
    """argv running ``code`` in this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` from ``/proc`` (``"Z"`` for a zombie), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[0]


def pid_gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (gone, or a zombie waiting to be collected)."""
    return proc_state(pid) in (None, "Z", "X")


class Lines(logging.Handler):
    """Every output line of every command, with a way to wait for one (no polling)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        # Output is read on the event loop, so this runs on the loop's thread.
        self.records.append(record)
        self._changed.set()

    def texts(self, task: str) -> list[str]:
        name = f"taskvisor.process.{task}"
        return [r.getMessage() for r in self.records if r.name == name]

    async def wait_for(self, task: str, match: Callable[[str], bool]) -> str:
        async with asyncio.timeout(GUARD):
            while True:
                for text in self.texts(task):
                    if match(text):
                        return text
                self._changed.clear()
                await self._changed.wait()

    async def pid_line(self, task: str, prefix: str) -> int:
        """Wait for a line ``"<prefix> <pid>"`` and return the pid."""
        text = await self.wait_for(task, lambda t: t.startswith(prefix + " "))
        return int(text.split()[1])


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("taskvisor.process")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# --------------------------------------------------------------------------- exit codes


async def test_exit_zero_completes_and_output_is_logged(
    make_supervisor: SupervisorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskvisor.process")
    sup = make_supervisor()
    code = """
        import sys
        print("hello from stdout")
        print("and from stderr", file=sys.stderr)
    """
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("echo", command(py(code))))
    assert outcome.kind is O.COMPLETED
    records = [r for r in caplog.records if r.name == "taskvisor.process.echo"]
    by_text = {r.getMessage(): r for r in records}
    assert by_text["hello from stdout"].levelno == logging.INFO
    assert by_text["hello from stdout"].taskvisor_stream == "stdout"  # type: ignore[attr-defined]
    assert by_text["and from stderr"].levelno == logging.WARNING
    assert by_text["and from stderr"].taskvisor_stream == "stderr"  # type: ignore[attr-defined]


async def test_nonzero_exit_fails_with_the_exit_code_and_last_stderr_line(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()
    code = """
        import sys
        print("cannot open config.toml", file=sys.stderr)
        sys.exit(3)
    """
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("bad", command(py(code))))
    assert outcome.kind is O.FAILED
    assert outcome.exit_code == 3
    assert isinstance(outcome.error, tv.Fail)
    assert outcome.error.exit_code == 3
    assert outcome.reason is not None
    assert "exited with code 3" in outcome.reason
    assert "cannot open config.toml" in outcome.reason


async def test_fatal_exit_code_is_never_retried(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    body = command(py("raise SystemExit(4)"), fatal_exit_codes=[4])
    spec = tv.TaskSpec.restartable("fatal", body, backoff=FAST)
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(spec)
    assert outcome.kind is O.FATAL
    assert outcome.exit_code == 4
    assert isinstance(outcome.error, tv.Fatal)
    assert outcome.attempts == 1


async def test_success_exit_codes_are_configurable(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    body = command(py("raise SystemExit(5)"), success_exit_codes=(0, 5))
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("five", body))
    assert outcome.kind is O.COMPLETED


async def test_zero_is_a_failure_when_not_listed(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    body = command(py("pass"), success_exit_codes=[7])
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("zero", body))
    assert outcome.kind is O.FAILED
    assert outcome.exit_code == 0


async def test_killed_by_a_signal_reports_minus_signum(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("killed", command(py(code))))
    assert outcome.kind is O.FAILED
    assert outcome.exit_code == -signal.SIGKILL
    assert outcome.reason is not None
    assert "SIGKILL" in outcome.reason


async def test_failures_are_retried_by_policy(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor()
    # Fails on attempts 1 and 2 (it reads its attempt number), succeeds on the third.
    code = "import os, sys; sys.exit(0 if int(os.environ['TASKVISOR_ATTEMPT']) >= 3 else 1)"
    spec = tv.TaskSpec.restartable("flaky", command(py(code)), backoff=FAST)
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(spec)
    assert outcome.kind is O.COMPLETED
    assert outcome.attempts == 3


async def test_a_program_that_cannot_start_is_fatal(
    make_supervisor: SupervisorFactory, tmp_path: os.PathLike[str]
) -> None:
    sup = make_supervisor()
    missing = os.path.join(os.fspath(tmp_path), "no-such-program")
    nowhere = os.path.join(os.fspath(tmp_path), "no-such-dir")
    async with asyncio.timeout(GUARD):
        not_found = await sup.add(tv.TaskSpec.restartable("nf", command([missing]), backoff=FAST))
        no_cwd = await sup.add(
            tv.TaskSpec.restartable("nd", command(py("pass"), cwd=nowhere), backoff=FAST)
        )
    for outcome in (not_found, no_cwd):
        assert outcome.kind is O.FATAL
        assert outcome.attempts == 1
        assert outcome.reason is not None
        assert outcome.reason.startswith("cannot start")


# --------------------------------------------------------------------------- environment


async def test_cwd_env_and_task_identity_reach_the_program(
    make_supervisor: SupervisorFactory, lines: Lines, tmp_path: os.PathLike[str]
) -> None:
    sup = make_supervisor()
    code = """
        import os
        print("cwd", os.getcwd())
        print("greeting", os.environ["GREETING"])
        print("path-kept", "PATH" in os.environ)
        print("task", os.environ["TASKVISOR_TASK"], os.environ["TASKVISOR_ATTEMPT"])
    """
    body = command(py(code), cwd=tmp_path, env={"GREETING": "hi there"})
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("env", body))
    assert outcome.kind is O.COMPLETED
    texts = lines.texts("env")
    assert f"cwd {os.fspath(tmp_path)}" in texts  # pytest resolves tmp_path
    assert "greeting hi there" in texts
    assert "path-kept True" in texts  # env adds to the environment, it does not replace it
    assert "task env 1" in texts


async def test_partial_long_and_undecodable_lines_are_logged(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    sup = make_supervisor()
    code = """
        import sys
        out = sys.stdout.buffer
        out.write(b"x" * 150000 + b"\\n")
        out.write(b"bad \\xff byte\\r\\n")
        out.write(b"no newline at the end")
    """
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("odd", command(py(code))))
    assert outcome.kind is O.COMPLETED
    texts = lines.texts("odd")
    assert "".join(t for t in texts if set(t) == {"x"}) == "x" * 150000
    assert max(len(t) for t in texts) <= 65536  # a long line is logged in pieces
    assert "bad \ufffd byte" in texts  # undecodable bytes are replaced, \r\n stripped
    assert texts[-1] == "no newline at the end"


async def test_output_is_logged_while_the_program_runs(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    sup = make_supervisor()
    handle = sup.add(tv.TaskSpec.once("live", command(py(POLITE))))
    pid = await lines.pid_line("live", "ready")  # read before the program ended
    assert not handle.done()
    assert not group_gone(pid)
    async with asyncio.timeout(GUARD):
        assert await sup.cancel("live") is True
    assert (await handle).kind is O.CANCELED


# --------------------------------------------------------------------------- stopping


async def test_stop_sends_the_stop_signal_to_the_group(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    sup = make_supervisor()
    handle = sup.add(tv.TaskSpec.once("polite", command(py(POLITE))))
    pgid = await lines.pid_line("polite", "ready")
    async with asyncio.timeout(GUARD):
        await sup.cancel("polite")
        outcome = await handle
    assert outcome.kind is O.CANCELED
    assert "bye" in lines.texts("polite")  # it got SIGTERM and could clean up
    assert group_gone(pgid)


async def test_custom_stop_signal(make_supervisor: SupervisorFactory, lines: Lines) -> None:
    sup = make_supervisor()
    code = """
        import os, signal, sys, time
        def bye(signum, frame):
            print("got", signal.Signals(signum).name, flush=True)
            sys.exit(0)
        signal.signal(signal.SIGINT, bye)
        print("ready", os.getpid(), flush=True)
        while True:
            time.sleep(1)
    """
    body = command(py(code), stop_signal=signal.SIGINT)
    handle = sup.add(tv.TaskSpec.once("int", body))
    pgid = await lines.pid_line("int", "ready")
    async with asyncio.timeout(GUARD):
        await sup.cancel("int")
        await handle
    assert "got SIGINT" in lines.texts("int")
    assert group_gone(pgid)


async def test_a_program_ignoring_sigterm_is_killed_after_stop_timeout(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    sup = make_supervisor(grace=GUARD)
    handle = sup.add(tv.TaskSpec.once("stubborn", command(py(STUBBORN), stop_timeout=0.05)))
    pgid = await lines.pid_line("stubborn", "ready")
    async with asyncio.timeout(GUARD):
        assert await sup.cancel("stubborn") is True
        outcome = await handle
    assert outcome.kind is O.CANCELED  # stopped within grace: SIGKILL was ours, not a force
    assert group_gone(pgid)
    escalations = [
        r
        for r in lines.records
        if r.name == "taskvisor.process.stubborn" and "sending SIGKILL" in r.getMessage()
    ]
    assert len(escalations) == 1
    assert escalations[0].levelno == logging.WARNING


async def test_grandchildren_in_the_group_are_stopped_too(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    sup = make_supervisor(grace=GUARD)
    code = """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('child up', flush=True); time.sleep(60)"])
        print("leader", os.getpid(), flush=True)
        print("child", child.pid, flush=True)
        child.wait()
    """
    handle = sup.add(tv.TaskSpec.once("tree", command(py(code), stop_timeout=0.05)))
    pgid = await lines.pid_line("tree", "leader")
    child = await lines.pid_line("tree", "child")
    await lines.wait_for("tree", lambda t: t == "child up")
    assert os.getpgid(child) == pgid
    async with asyncio.timeout(GUARD):
        await sup.cancel("tree")
        await handle
    assert group_gone(pgid)
    assert pid_gone(child)


async def test_what_the_program_leaves_behind_in_its_group_is_stopped(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    sup = make_supervisor()
    # The leader exits at once, leaving a sleeping child in its group (and on its pipes).
    code = """
        import os, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("leader", os.getpid(), flush=True)
        print("child", child.pid, flush=True)
    """
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("leaver", command(py(code))))
    assert outcome.kind is O.COMPLETED
    pgid = await lines.pid_line("leaver", "leader")
    child = await lines.pid_line("leaver", "child")
    assert group_gone(pgid)
    assert pid_gone(child)


async def test_attempt_timeout_stops_the_group_and_retries(
    make_supervisor: SupervisorFactory, lines: Lines, recorder: object
) -> None:
    sup = make_supervisor()
    spec = tv.TaskSpec.restartable(
        "slow", command(py(POLITE)), timeout=0.2, max_retries=1, backoff=FAST
    )
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(spec)
    assert outcome.kind is O.FAILED
    assert outcome.attempts == 2
    assert outcome.reason is not None
    assert "timed out" in outcome.reason
    pids = [int(t.split()[1]) for t in lines.texts("slow") if t.startswith("ready ")]
    assert len(pids) == 2
    assert lines.texts("slow").count("bye") == 2
    assert all(group_gone(p) for p in pids)


async def test_the_grace_period_cuts_stop_timeout_short(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    # stop_timeout far beyond grace: the supervisor's force-stop must SIGKILL at once.
    sup = make_supervisor(grace=0.05)
    handle = sup.add(tv.TaskSpec.once("stubborn", command(py(STUBBORN), stop_timeout=3600)))
    pgid = await lines.pid_line("stubborn", "ready")
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
        outcome = await handle
    assert report.stuck == ("stubborn",)
    assert outcome.kind is O.FORCE_ABORTED
    assert group_gone(pgid)


async def test_shutdown_stops_every_program(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    sup = make_supervisor()
    handles = [sup.add(tv.TaskSpec.once(f"p{i}", command(py(POLITE)))) for i in range(3)]
    pgids = [await lines.pid_line(f"p{i}", "ready") for i in range(3)]
    async with asyncio.timeout(GUARD):
        report = await sup.shutdown()
    assert not report.grace_exceeded
    assert [h.outcome.kind for h in handles if h.outcome] == [O.CANCELED] * 3
    assert all(group_gone(p) for p in pgids)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"argv": "python3 -V"}, TypeError, "argv must be a list"),
        ({"argv": []}, ValueError, "empty"),
        ({"argv": [""]}, ValueError, "argv[0]"),
        ({"argv": ["ls", 3]}, TypeError, "argv[1]"),
        ({"cwd": 3}, TypeError, "cwd"),
        ({"env": {"A": 1}}, TypeError, "env['A']"),
        ({"env": {"A=B": "x"}}, ValueError, "env"),
        ({"env": ["A"]}, TypeError, "env must be a mapping"),
        ({"stop_signal": 0}, ValueError, "stop_signal"),
        ({"stop_signal": "TERM"}, TypeError, "stop_signal"),
        ({"stop_signal": signal.SIGSTOP}, ValueError, "SIGSTOP"),
        ({"stop_timeout": -1}, ValueError, "stop_timeout"),
        ({"stop_timeout": float("inf")}, ValueError, "stop_timeout"),
        ({"fatal_exit_codes": [True]}, TypeError, "fatal_exit_codes"),
        ({"success_exit_codes": "0"}, TypeError, "success_exit_codes"),
        ({"fatal_exit_codes": [1], "success_exit_codes": [0, 1]}, ValueError, "both"),
    ],
)
def test_bad_arguments_are_refused_at_construction(
    kwargs: dict[str, object], error: type[Exception], text: str
) -> None:
    argv = kwargs.pop("argv", ["true"])
    with pytest.raises(error) as info:
        command(argv, **kwargs)  # type: ignore[arg-type]
    assert text in str(info.value)


def test_the_body_is_an_async_callable_taking_the_context() -> None:
    body = command(["true"])
    spec = tv.TaskSpec.once("t", body)  # accepted as a task body
    assert spec.fn is body
    assert "true" in repr(body)


# --------------------------------------------------------------------------- output records


CHAINED = """
import sys, time
print("before", file=sys.stderr, flush=True)
try:
    try:
        raise KeyError("a")
    except KeyError:
        raise ValueError("b")
except ValueError as exc:
    import traceback
    traceback.print_exc()
sys.stderr.flush()
print("after", file=sys.stderr, flush=True)
time.sleep(0.3)
raise SystemExit("last words")
"""


async def test_a_chained_traceback_is_one_record_between_ordinary_lines(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("tb", command(py(CHAINED))))
    assert outcome.kind is O.FAILED
    texts = [t for t in lines.texts("tb") if not t.startswith("started command")]
    assert texts[0] == "before"
    record = texts[1]
    assert record.startswith("Traceback (most recent call last):")
    assert "During handling of the above exception, another exception occurred:" in record
    assert record.endswith("ValueError: b")
    assert record.count("Traceback (most recent call last):") == 2
    assert texts[2:] == ["after", "last words"]
    assert outcome.reason is not None
    assert outcome.reason.endswith(": last words")


async def test_an_unfinished_traceback_is_emitted_after_a_quiet_moment(
    make_supervisor: SupervisorFactory, lines: Lines
) -> None:
    # The program prints the start of a traceback and then nothing: the record comes out
    # while it still runs (GROUP_QUIET), not at its end.
    code = """
        import sys, time
        sys.stderr.write("Traceback (most recent call last):\\n  File 'x', line 1\\n")
        sys.stderr.flush()
        time.sleep(60)
    """
    sup = make_supervisor()
    handle = sup.add(tv.TaskSpec.once("quiet", command(py(code))))
    text = await lines.wait_for("quiet", lambda t: t.startswith("Traceback"))
    assert text == "Traceback (most recent call last):\n  File 'x', line 1"
    assert not handle.done()
    async with asyncio.timeout(GUARD):
        await sup.cancel("quiet")


async def test_a_watch_sees_the_pid_and_output_and_can_end_the_attempt(
    make_supervisor: SupervisorFactory,
) -> None:
    seen: list[tuple[str, object]] = []

    class Probe(Watch):
        judges = True

        def started(self, pid: int) -> None:
            seen.append(("pid", pid))

        def output(self, stream: str, text: str, pid: int | None) -> None:
            seen.append((stream, text))
            if text == "up":
                self.loop_verdict.set_result(tv.Fail("judged"))

        async def verdict(self) -> BaseException:
            return await self.loop_verdict

        def ended(self) -> None:
            seen.append(("ended", None))

        def __init__(self, ctx: tv.TaskContext) -> None:
            super().__init__(ctx)
            self.loop_verdict: asyncio.Future[BaseException] = (
                asyncio.get_running_loop().create_future()
            )

    code = "import time; print('up', flush=True); time.sleep(60)"
    sup = make_supervisor()
    body = command([sys.executable, "-c", code], watch=Probe)
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("watched", body))
    assert outcome.kind is O.FAILED
    assert outcome.reason == "judged"
    pid = seen[0][1]
    assert isinstance(pid, int)
    assert group_gone(pid)
    assert ("stdout", "up") in seen
    assert seen[-1] == ("ended", None)
