"""The ``taskvisor`` command line, run for real in a subprocess.

``check`` on good and bad files (every message must name the file, the task or table, the
field and what was expected, and never show a traceback), and ``run`` end to end: outcomes,
exit status, subscribers, ``stop_after``, and SIGINT/SIGTERM (then a second SIGINT) — each
signal sent only once the child has said, in its output, that it is ready for it.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import GUARD, POLITE, STUBBORN, group_gone

PY = sys.executable
SCRIPT = Path(sys.executable).parent / "taskvisor"


class Child:
    """A ``taskvisor`` process whose output lines can be awaited (no sleeping)."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._open = 2
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_line(self, match: Callable[[str], bool]) -> str:
        """The first line (already seen or still to come) that ``match`` accepts."""
        for line in self.seen:
            if match(line):
                return line
        deadline = time.monotonic() + GUARD
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("line not seen; output so far:\n" + self.text)
            try:
                item = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                self._open -= 1
                if self._open == 0:
                    raise AssertionError("the process ended first; output:\n" + self.text)
                continue
            self.seen.append(item)
            if match(item):
                return item

    def finish(self) -> int:
        """Wait for the exit (under the guard) and collect every line."""
        try:
            code = self.proc.wait(GUARD)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("taskvisor did not exit; output:\n" + self.text) from None
        self.close()
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return code

    def close(self) -> None:
        """Let the readers reach the end of the output, then close the pipes."""
        for reader in self._readers:
            reader.join(GUARD)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    @property
    def text(self) -> str:
        return "\n".join(self.seen)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()
        child.close()


def write(directory: Path, text: str, name: str = "tasks.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def taskvisor(children: list[Child], tmp_path: Path, *args: str, script: bool = False) -> Child:
    argv = [str(SCRIPT)] if script else [PY, "-m", "taskvisor"]
    child = Child([*argv, *args], tmp_path)
    children.append(child)
    return child


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = write(tmp_path, text)
    return subprocess.run(
        [PY, "-m", "taskvisor", "check", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )


def toml_str(text: str) -> str:
    return json.dumps(text)


GOOD = f"""
    [supervisor]
    grace = 10.0
    subscriber_shutdown_timeout = 2.0
    max_concurrent = 4

    [run]
    stop_after = 30.0

    [defaults]
    restart = "on_failure"
    backoff = {{ first = 0.01, max = 0.1, factor = 2.0, jitter = "equal" }}
    timeout = 20
    max_retries = 3

    [[task]]
    name = "web"
    command = [{toml_str(PY)}, "-m", "http.server", "0"]
    restart = "always"
    interval = 5.0
    cwd = "."
    env = {{ PORT = "8000" }}
    stop_signal = "SIGINT"
    stop_timeout = 2.0
    fatal_exit_codes = [78]
    success_exit_codes = [0, 3]

    [[task]]
    name = "job"
    call = "os:getcwd"
    backoff = {{ max = 1.0 }}
    max_retries = "unlimited"
    timeout = 0

    [[subscriber]]
    type = "log"
    logger = "my.events"
    level_map = {{ attempt_failed = "WARNING", fatal = "CRITICAL" }}

    [[subscriber]]
    type = "jsonl"
    path = "events.jsonl"

    [[subscriber]]
    type = "prometheus"
    task_label = false

    [status]
    listen = "127.0.0.1:8765"
"""


# --------------------------------------------------------------------------- check


def test_check_accepts_a_complete_file_and_runs_nothing(tmp_path: Path) -> None:
    result = check(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "2 tasks (web, job)" in result.stdout
    assert "status page on 127.0.0.1:8765" in result.stdout
    assert not (tmp_path / "events.jsonl").exists()  # no subscriber was built


def test_the_console_script_is_installed(tmp_path: Path, children: list[Child]) -> None:
    path = write(tmp_path, GOOD)
    child = taskvisor(children, tmp_path, "check", str(path), script=True)
    assert child.finish() == 0
    assert "OK" in child.text


def test_help_and_usage_errors(tmp_path: Path) -> None:
    ok = subprocess.run(
        [PY, "-m", "taskvisor", "--help"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0
    assert "run" in ok.stdout
    assert "check" in ok.stdout
    bad = subprocess.run([PY, "-m", "taskvisor"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


TASK_HEAD = """
    [[task]]
    name = "web"
"""
CMD = 'command = ["true"]\n'


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(
            '[[task]\nname = "web"\n',
            ["not valid TOML", "line 1"],
            id="syntax-error",
        ),
        pytest.param(
            TASK_HEAD + CMD + 'restrat = "always"\n',
            ['task "web" (#1)', "restrat: unknown key", 'did you mean "restart"'],
            id="unknown-task-key",
        ),
        pytest.param(
            "[tasks]\n" + TASK_HEAD + CMD,
            ["tasks: unknown key", 'did you mean "task"'],
            id="unknown-top-key",
        ),
        pytest.param(
            "[supervisor]\ngrace = 1\nstop_after = 3\n" + TASK_HEAD + CMD,
            ["[supervisor]: stop_after: unknown key", "it belongs in [run]"],
            id="misplaced-key",
        ),
        pytest.param(
            TASK_HEAD + CMD + 'timeout = "10s"\n',
            ['task "web" (#1): timeout: expected a number of seconds >= 0, got "10s"'],
            id="wrong-type",
        ),
        pytest.param(
            TASK_HEAD + CMD + 'restart = "sometimes"\n',
            ['task "web" (#1): restart: expected "never", "on_failure" or "always"'],
            id="bad-restart",
        ),
        pytest.param(
            TASK_HEAD + CMD + "max_retries = -1\n",
            ['task "web" (#1): max_retries: expected an integer >= 0 or "unlimited"'],
            id="bad-max-retries",
        ),
        pytest.param(
            TASK_HEAD + 'call = "no_such_module_xyz:main"\n',
            ['task "web" (#1): call: cannot import module "no_such_module_xyz"'],
            id="call-module-missing",
        ),
        pytest.param(
            TASK_HEAD + 'call = "os.path.join"\n',
            ['task "web" (#1): call: expected "package.module:function"'],
            id="call-without-colon",
        ),
        pytest.param(
            TASK_HEAD + 'call = "os:no_such_function"\n',
            ['task "web" (#1): call: "os" has no attribute "no_such_function"'],
            id="call-attribute-missing",
        ),
        pytest.param(
            TASK_HEAD + 'call = "os:sep"\n',
            ['task "web" (#1): call: "os:sep" is not callable', "expected a function"],
            id="call-not-callable",
        ),
        pytest.param(
            TASK_HEAD + 'call = "shutil:copyfile"\n',
            ['task "web" (#1): call:', "expected a function taking (ctx) or nothing"],
            id="call-wrong-signature",
        ),
        pytest.param(
            '[[task]]\ncommand = ["true"]\n',
            ["task #1: name: required; expected a non-empty string"],
            id="missing-name",
        ),
        pytest.param(
            TASK_HEAD + CMD + TASK_HEAD + CMD,
            ['task "web" (#2): name: expected a unique name, but task #1 is also "web"'],
            id="duplicate-names",
        ),
        pytest.param(
            TASK_HEAD + CMD + "backoff = { first = 5.0, max = 1.0 }\n",
            ['task "web" (#1): backoff: first (5.0) must be <= max (1.0)'],
            id="backoff-first-above-max",
        ),
        pytest.param(
            TASK_HEAD + CMD + 'backoff = { jitter = "lots" }\n',
            ['task "web" (#1): backoff: jitter: expected "none", "full", "equal" or'],
            id="backoff-bad-jitter",
        ),
        pytest.param(
            TASK_HEAD + CMD + "backoff = { firts = 1.0 }\n",
            ['task "web" (#1): backoff: firts: unknown key', 'did you mean "first"'],
            id="backoff-unknown-key",
        ),
        pytest.param(
            TASK_HEAD + CMD + "backoff = { factor = 0.5 }\n",
            ['task "web" (#1): backoff: factor: expected a number >= 1, got 0.5'],
            id="backoff-bad-factor",
        ),
        pytest.param(
            TASK_HEAD + "backoff = 2.0\n" + CMD,
            ['task "web" (#1): backoff: expected a table'],
            id="backoff-not-a-table",
        ),
        pytest.param(
            TASK_HEAD + 'command = "python3 -m http.server"\n',
            ['task "web" (#1): command: expected a non-empty array of strings', "no shell"],
            id="command-as-string",
        ),
        pytest.param(
            TASK_HEAD + "command = []\n",
            [
                'task "web" (#1): command: expected a non-empty array of strings',
                "got an empty array",
            ],
            id="command-empty",
        ),
        pytest.param(
            TASK_HEAD + CMD + 'call = "os:getcwd"\n',
            ['task "web" (#1): command: expected exactly one of command', "got both"],
            id="command-and-call",
        ),
        pytest.param(
            TASK_HEAD,
            ['task "web" (#1): command: expected exactly one of command', "got neither"],
            id="neither-command-nor-call",
        ),
        pytest.param(
            TASK_HEAD + CMD + "interval = 2.0\n",
            ['task "web" (#1): interval: only valid with restart = "always"'],
            id="interval-without-always",
        ),
        pytest.param(
            TASK_HEAD + 'call = "os:getcwd"\nstop_timeout = 1.0\n',
            ['task "web" (#1): stop_timeout: only valid for a command task'],
            id="command-key-on-call-task",
        ),
        pytest.param(
            TASK_HEAD + CMD + 'stop_signal = "SIGFOO"\n',
            ['task "web" (#1): stop_signal: expected a signal name like "SIGTERM"'],
            id="bad-stop-signal",
        ),
        pytest.param(
            TASK_HEAD + CMD + "env = { PORT = 8000 }\n",
            ['task "web" (#1): env.PORT: expected a string (quote it: PORT = "8000")'],
            id="env-not-string",
        ),
        pytest.param(
            TASK_HEAD + CMD + "fatal_exit_codes = [0, 2]\n",
            ['task "web" (#1): fatal_exit_codes: expected codes that are not also success'],
            id="fatal-and-success-overlap",
        ),
        pytest.param(
            TASK_HEAD + CMD + 'fatal_exit_codes = ["1"]\n',
            ['task "web" (#1): fatal_exit_codes: expected an array of integers'],
            id="bad-exit-codes",
        ),
        pytest.param(
            "[supervisor]\ngrace = -1\nmax_concurrent = 0\n" + TASK_HEAD + CMD,
            [
                "[supervisor]: grace: expected a number of seconds >= 0, got -1",
                "[supervisor]: max_concurrent: expected an integer >= 1, got 0",
            ],
            id="bad-supervisor",
        ),
        pytest.param(
            "[run]\nstop_after = 0\n" + TASK_HEAD + CMD,
            ["[run]: stop_after: expected a number of seconds > 0, got 0"],
            id="bad-stop-after",
        ),
        pytest.param(
            TASK_HEAD + CMD + '[[subscriber]]\ntype = "syslog"\n',
            ['subscriber #1 (syslog): type: expected "log", "jsonl" or "prometheus"'],
            id="unknown-subscriber",
        ),
        pytest.param(
            TASK_HEAD + CMD + '[[subscriber]]\ntype = "jsonl"\n',
            ["subscriber #1 (jsonl): path: required"],
            id="jsonl-without-path",
        ),
        pytest.param(
            TASK_HEAD + CMD + '[[subscriber]]\ntype = "log"\nlevel_map = { attempt_faild = "X" }\n',
            ["subscriber #1 (log): level_map: attempt_faild:", 'did you mean "attempt_failed"'],
            id="bad-level-map",
        ),
        pytest.param(
            TASK_HEAD + CMD + '[status]\nlisten = "localhost"\n',
            ["[status]: listen: expected HOST:PORT", 'got "localhost"'],
            id="bad-listen",
        ),
        pytest.param(
            '[task]\nname = "web"\ncommand = ["true"]\n',
            ["task: expected an array of tables, written [[task]], got a table"],
            id="task-not-an-array",
        ),
        pytest.param(
            "[supervisor]\ngrace = 1.0\n",
            ["task: expected at least one [[task]]"],
            id="no-tasks",
        ),
    ],
)
def test_check_names_file_task_field_and_expectation(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    result = check(tmp_path, text)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    path = str(tmp_path / "tasks.toml")
    for line in result.stderr.splitlines():
        assert line.startswith(f"taskvisor: error: {path}: "), line
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = TASK_HEAD + CMD + 'restart = "x"\ntimeout = -2\n[[task]]\ncommand = ["true"]\n'
    result = check(tmp_path, text)
    assert result.returncode == 2
    errors = result.stderr.splitlines()
    assert len(errors) == 3, result.stderr
    assert any("restart:" in e for e in errors)
    assert any("timeout:" in e for e in errors)
    assert any("task #2: name: required" in e for e in errors)


def test_check_warns_about_a_missing_cwd(tmp_path: Path) -> None:
    result = check(tmp_path, TASK_HEAD + CMD + 'cwd = "not-yet"\n')
    assert result.returncode == 0
    assert f'task "web" (#1): cwd: {tmp_path / "not-yet"} is not a directory' in result.stderr


def test_a_missing_file_is_reported_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    result = subprocess.run(
        [PY, "-m", "taskvisor", "check", str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert f"{missing}: cannot read it: No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_failing_import_is_reported_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken_mod.py").write_text("raise ZeroDivisionError('at import')\n")
    result = check(tmp_path, TASK_HEAD + 'call = "broken_mod:main"\n')
    assert result.returncode == 2
    assert 'call: importing "broken_mod" failed: ZeroDivisionError: at import' in result.stderr
    assert "Traceback" not in result.stderr


def test_run_reports_a_bad_file_like_check(tmp_path: Path, children: list[Child]) -> None:
    path = write(tmp_path, TASK_HEAD + CMD + 'restart = "x"\n')
    child = taskvisor(children, tmp_path, "run", str(path))
    assert child.finish() == 2
    assert f'{path}: task "web" (#1): restart: expected' in child.text
    assert "Traceback" not in child.text


# --------------------------------------------------------------------------- run


MODULE = """
import logging
import time

log = logging.getLogger("mytasks")

async def hello(ctx):
    log.info("hello from attempt %d", ctx.attempt)

def blocking(ctx):
    log.info("blocking work in a thread")
"""


def test_run_supervises_commands_and_callables_to_completion(
    tmp_path: Path, children: list[Child]
) -> None:
    (tmp_path / "mytasks.py").write_text(MODULE)
    sub = tmp_path / "sub"
    sub.mkdir()
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "echo"
        command = [{toml_str(PY)}, "-c", "import os; print('echo in', os.getcwd())"]
        restart = "never"

        [[task]]
        name = "where"
        command = [{toml_str(PY)}, "-c", "import os; print('where in', os.getcwd())"]
        cwd = "sub"
        restart = "never"

        [[task]]
        name = "hello"
        call = "mytasks:hello"
        restart = "never"

        [[task]]
        name = "blocking"
        call = "mytasks:blocking"
        restart = "never"

        [[subscriber]]
        type = "jsonl"
        path = "out/events.jsonl"

        [[subscriber]]
        type = "log"
        logger = "my.events"
        """,
    )
    (tmp_path / "out").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    child = Child([PY, "-m", "taskvisor", "run", str(path)], elsewhere)
    children.append(child)
    assert child.finish() == 0, child.text
    text = child.text
    assert f"echo in {tmp_path}" in text  # a command runs in the file's directory
    assert f"where in {sub}" in text  # a relative cwd is resolved against it
    assert "hello from attempt 1" in text
    assert "blocking work in a thread" in text
    for name in ("echo", "where", "hello", "blocking"):
        assert f"task '{name}' completed after 1 attempt" in text
    assert "my.events: task 'echo'" in text  # the declared log subscriber, on its logger
    assert " taskvisor: task 'echo'" not in text  # and no default one beside it
    events = [json.loads(line) for line in (tmp_path / "out/events.jsonl").read_text().splitlines()]
    finished = {e["task"]: e["outcome"] for e in events if e["kind"] == "task_finished"}
    assert finished == dict.fromkeys(("echo", "where", "hello", "blocking"), "completed")


def test_run_applies_policies_and_exits_1_when_a_task_failed(
    tmp_path: Path, children: list[Child]
) -> None:
    path = write(
        tmp_path,
        f"""
        [defaults]
        backoff = {{ first = 0.001, max = 0.001 }}
        max_retries = 2

        [[task]]
        name = "crash"
        command = [{toml_str(PY)}, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]

        [[task]]
        name = "fatal"
        command = [{toml_str(PY)}, "-c", "raise SystemExit(78)"]
        fatal_exit_codes = [78]
        """,
    )
    child = taskvisor(children, tmp_path, "run", str(path))
    assert child.finish() == 1
    assert "task 'crash' failed after 3 attempts" in child.text
    assert "exited with code 3: boom" in child.text
    assert "task 'fatal' fatal after 1 attempt" in child.text
    assert "Traceback" not in child.text


def test_stop_after_shuts_down_gracefully(tmp_path: Path, children: list[Child]) -> None:
    path = write(
        tmp_path,
        f"""
        [run]
        stop_after = 0.2

        [[task]]
        name = "forever"
        command = [{toml_str(PY)}, "-c", "import time; time.sleep(60)"]
        """,
    )
    child = taskvisor(children, tmp_path, "run", str(path))
    assert child.finish() == 0
    assert "stop_after (0.2s) reached" in child.text
    assert "task 'forever' canceled after 1 attempt" in child.text


def serve_file(tmp_path: Path, program: str, grace: float = 60.0) -> Path:
    return write(
        tmp_path,
        f"""
        [supervisor]
        grace = {grace}

        [[task]]
        name = "server"
        command = [{toml_str(PY)}, "-c", {toml_str(program)}]
        stop_timeout = 60.0
        """,
    )


def ready(child: Child) -> int:
    """Wait until the CLI handles signals and the program runs; return the program's pid."""
    child.wait_line(lambda line: "supervising 1 task from" in line)
    line = child.wait_line(lambda line: "taskvisor.process.server: ready" in line)
    return int(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_every_task_gracefully(
    tmp_path: Path, children: list[Child], sig: signal.Signals
) -> None:
    child = taskvisor(children, tmp_path, "run", str(serve_file(tmp_path, POLITE)))
    pgid = ready(child)
    child.signal(sig)
    assert child.finish() == 0
    assert f"signal {sig.name}: stopping every task" in child.text
    assert "taskvisor.process.server: bye" in child.text
    assert "task 'server' canceled after 1 attempt" in child.text
    assert "Traceback" not in child.text
    assert group_gone(pgid)


def test_a_second_sigint_forces(tmp_path: Path, children: list[Child]) -> None:
    # The program ignores SIGTERM, and both grace and stop_timeout are a minute long:
    # only the second Ctrl+C can end this quickly.
    child = taskvisor(children, tmp_path, "run", str(serve_file(tmp_path, STUBBORN)))
    pgid = ready(child)
    child.signal(signal.SIGINT)
    child.wait_line(lambda line: "press Ctrl+C again to force" in line)
    child.signal(signal.SIGINT)
    assert child.finish() == 1  # a forced task is not a clean run
    assert "task 'server' force_aborted after 1 attempt" in child.text
    assert "Traceback" not in child.text
    assert group_gone(pgid)


def test_status_page_on_an_os_assigned_port(tmp_path: Path, children: list[Child]) -> None:
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "server"
        command = [{toml_str(PY)}, "-c", {toml_str(POLITE)}]

        [[subscriber]]
        type = "prometheus"

        [status]
        listen = "127.0.0.1:0"
        """,
    )
    child = taskvisor(children, tmp_path, "run", str(path))
    line = child.wait_line(lambda line: "status page at http://127.0.0.1:" in line)
    url = line.rsplit(" ", 1)[1]
    ready(child)
    with urllib.request.urlopen(url + "tasks", timeout=GUARD) as resp:
        tasks = json.load(resp)
    assert [(t["name"], t["state"], t["attempt"]) for t in tasks["tasks"]] == [
        ("server", "running", 1)
    ]
    with urllib.request.urlopen(url + "metrics", timeout=GUARD) as resp:
        metrics = resp.read().decode()
    assert "taskvisor_attempts_total" in metrics
    assert 'taskvisor_tasks{state="running"} 1.0' in metrics
    with urllib.request.urlopen(url, timeout=GUARD) as resp:
        assert "<title>taskvisor status</title>" in resp.read().decode()
    child.signal(signal.SIGTERM)
    assert child.finish() == 0


def test_a_taken_status_port_is_an_error_without_traceback(
    tmp_path: Path, children: list[Child]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(
            tmp_path,
            f"""
            [[task]]
            name = "server"
            command = [{toml_str(PY)}, "-c", {toml_str(POLITE)}]

            [status]
            listen = "127.0.0.1:{port}"
            """,
        )
        child = taskvisor(children, tmp_path, "run", str(path))
        assert child.finish() == 1
    assert f"cannot serve the status page on 127.0.0.1:{port}" in child.text
    assert "Traceback" not in child.text


def test_an_unopenable_jsonl_path_is_a_file_error(tmp_path: Path, children: list[Child]) -> None:
    path = write(
        tmp_path,
        TASK_HEAD + CMD + '[[subscriber]]\ntype = "jsonl"\npath = "missing-dir/events.jsonl"\n',
    )
    child = taskvisor(children, tmp_path, "run", str(path))
    assert child.finish() == 2
    assert f"{path}: subscriber #1 (jsonl): path: cannot set it up: No such file" in child.text
    assert "Traceback" not in child.text


def test_missing_extras_are_reported_by_check(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TASK_HEAD + CMD + '[[subscriber]]\ntype = "prometheus"\n[status]\nlisten = "127.0.0.1:0"\n',
    )
    # Run check with aiohttp and prometheus_client made unimportable.
    code = (
        "import sys; sys.modules['aiohttp'] = None; sys.modules['prometheus_client'] = None; "
        "from taskvisor._cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [PY, "-c", code, "check", str(path)],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "subscriber #1 (prometheus): type: prometheus needs an optional dependency" in (
        result.stderr
    )
    assert "taskvisor[prometheus]" in result.stderr
    assert "[status]: listen: the status page needs aiohttp" in result.stderr
    assert "taskvisor[status]" in result.stderr


# --------------------------------------------------------------------------- issue 15


def test_a_non_utf8_or_unreadable_file_is_one_line_and_exit_2(
    tmp_path: Path, children: list[Child]
) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[[task]]\nname = "caf\xe9"\ncommand = ["true"]\n')
    for command in ("check", "run"):
        child = taskvisor(children, tmp_path, command, str(path))
        assert child.finish() == 2
        assert child.seen == [
            f"taskvisor: error: {path}: not UTF-8 text: byte 0xe9 on line 2 cannot be decoded; "
            "TOML files must be saved as UTF-8"
        ]
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    child = taskvisor(children, tmp_path, "check", str(directory))
    assert child.finish() == 2
    assert child.seen == [f"taskvisor: error: {directory}: cannot read it: Is a directory"]


def test_a_missing_cwd_is_blamed_on_the_cwd(tmp_path: Path, children: list[Child]) -> None:
    path = write(tmp_path, '[[task]]\nname = "lost"\ncommand = ["true"]\ncwd = "nowhere"\n')
    child = taskvisor(children, tmp_path, "run", str(path))
    assert child.finish() == 1
    assert f"cannot start 'true': working directory {tmp_path / 'nowhere'} does not exist" in (
        child.text
    )
    assert "No such file or directory" not in child.text


def test_check_warns_about_a_program_not_on_path(tmp_path: Path) -> None:
    result = check(tmp_path, '[[task]]\nname = "x"\ncommand = ["no-such-program-here", "-v"]\n')
    assert result.returncode == 0
    assert (
        'task "x" (#1): command: "no-such-program-here" is not found on PATH; the task will '
        "fail to start unless it is installed first"
    ) in result.stderr
    result = check(tmp_path, '[[task]]\nname = "x"\ncommand = ["sh", "-c", "true"]\n')
    assert result.returncode == 0
    assert result.stderr == ""
    assert "OK" in result.stdout
    result = check(tmp_path, '[[task]]\nname = "x"\ncommand = ["./run.sh"]\n')
    assert 'command: "./run.sh" is not found (relative to cwd)' in result.stderr


CRASHER = """
import sys
print("starting")
def inner():
    raise ValueError("boom")
try:
    inner()
except ValueError as exc:
    raise RuntimeError("wrapped") from exc
"""


def test_retries_at_info_a_traceback_in_one_record_the_exit_code_once(
    tmp_path: Path, children: list[Child]
) -> None:
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "crash"
        command = [{toml_str(PY)}, "-c", {toml_str(CRASHER)}]
        max_retries = 1
        backoff = {{ first = 0.2, jitter = "none" }}
        """,
    )
    child = taskvisor(children, tmp_path, "run", str(path))
    assert child.finish() == 1
    lines = child.seen
    assert any("INFO    taskvisor: task 'crash' retrying in 0.2 s" in line for line in lines), (
        child.text
    )
    # The chained traceback is one record: its first line carries the record's prefix, the
    # others follow it unprefixed, and the next record starts after the last one.
    starts = [
        i
        for i, line in enumerate(lines)
        if line.endswith("taskvisor.process.crash: Traceback (most recent call last):")
    ]
    assert len(starts) == 2  # one per attempt
    record = lines[starts[0] : starts[0] + 12]
    assert "The above exception was the direct cause of the following exception:" in record
    assert "RuntimeError: wrapped" in record
    assert not any("taskvisor.process.crash:   File" in line for line in lines)
    # The live records say the exit code once per failed attempt.
    live = [line for line in lines if "taskvisor.cli: task 'crash' failed after" not in line]
    assert sum("code 1" in line for line in live) == 2
    assert not any("(exit code 1)" in line for line in lines)
    assert "task 'crash' failed after 2 attempts: " in child.text  # the summary


def test_help_points_to_the_docs(tmp_path: Path) -> None:
    for args in ([], ["run"], ["check"], ["ctl"]):
        result = subprocess.run(
            [PY, "-m", "taskvisor", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=GUARD,
            check=True,
        )
        assert "docs/cli.md" in result.stdout


# --------------------------------------------------------------------------- §10/§13 keys


def test_the_keys_of_later_spec_keywords_are_checked_and_applied_or_said_not_applied(
    tmp_path: Path,
) -> None:
    good = """
        [supervisor]
        intensity = { max_restarts = 3, within = 5.0 }

        [defaults]
        reset_after = 60
        retry_on = ["ConnectionError", "json.JSONDecodeError"]

        [[task]]
        name = "tick"
        command = ["true"]
        restart = "always"
        interval = 5.0
        fixed_rate = true
        jitter = 0.5
        first_delay = 1.0
        ready_timeout = 10
        heartbeat = 0

        [[task]]
        name = "nightly"
        command = ["true"]
        cron = "0 3 * * *"
        tz = "UTC"

        [[group]]
        name = "pair"
        children = ["tick", "nightly"]
        strategy = "one_for_all"
        auto_shutdown = "any_done"
        intensity = { max_restarts = 1, within = 1.0 }
    """
    result = check(tmp_path, good)
    assert result.returncode == 0, result.stderr
    # SPEC §13's keys are applied; §10's are checked and said not applied yet.
    assert (
        'task "tick" (#1): heartbeat, ready_timeout: checked, but not applied by this version '
        "of taskvisor"
    ) in result.stderr
    assert 'task "nightly"' not in result.stderr
    assert "[supervisor]: intensity: checked, but not applied yet" in result.stderr
    assert "[[group]] tables are checked, but not applied yet" in result.stderr

    bad = """
        [supervisor]
        intensity = { max_restarts = -1 }

        [[task]]
        name = "a"
        command = ["true"]
        reset_after = 0
        retry_on = ["NoSuchError", "os.getcwd"]
        fixed_rate = true
        cron = "* * * *"
        tz = "Mars/Olympus"
        heartbeat = "often"

        [[group]]
        name = "g"
        children = ["a", "zz"]
        strategy = "one_for_some"
    """
    result = check(tmp_path, bad)
    assert result.returncode == 2
    err = result.stderr
    assert "[supervisor]: intensity: within: required" in err
    assert "[supervisor]: intensity: max_restarts: expected an integer >= 0, got -1" in err
    assert 'task "a" (#1): reset_after: expected a number of seconds > 0, got 0' in err
    assert 'retry_on: expected exception names: "NoSuchError" is not a built-in exception' in err
    assert 'retry_on: expected exception names: "os.getcwd" is not an exception class' in err
    assert 'fixed_rate: only valid with restart = "always" and an interval' in err
    assert 'cron: expected five fields "minute hour day-of-month month day-of-week"' in err
    assert 'tz: expected a time zone name, like "Europe/Paris", got "Mars/Olympus"' in err
    assert 'heartbeat: expected a number of seconds >= 0, got "often"' in err
    assert 'group "g" (#1): children: expected names of tasks in this file, got unknown "zz"' in err
    assert (
        'group "g" (#1): strategy: expected "one_for_one", "one_for_all" or "rest_for_one"' in err
    )
    assert "Traceback" not in err
