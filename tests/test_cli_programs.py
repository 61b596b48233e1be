"""``taskvisor run`` as a process supervisor (SPEC §12), through the real command.

Every test starts ``python -m taskvisor`` in a subprocess on real programs (``sh -c``,
``python -c``) and learns what happened from its log lines, ``taskvisor ctl`` and ``/proc``;
nothing waits by sleeping: each wait polls a condition under a generous guard. Tests that
answer a supervisord or circus issue are named after it.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import group_gone
from test_cli import Child, toml_str, write

PY = sys.executable
GUARD = 60.0
"""Upper bound of any one wait here: a guard against hanging, never a synchronisation."""


class Run(Child):
    """A ``taskvisor run`` child with waits on counts of lines."""

    def wait_count(self, match: Callable[[str], bool], count: int) -> list[str]:
        """Wait until ``count`` lines match; return them."""
        deadline = time.monotonic() + GUARD
        while True:
            found = [line for line in self.seen if match(line)]
            if len(found) >= count:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{count} lines not seen ({len(found)} so far); output:\n" + self.text
                )
            try:
                item = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if item is None:
                self._open -= 1
                if self._open == 0:
                    raise AssertionError("the process ended first; output:\n" + self.text)
                continue
            self.seen.append(item)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.signal(sig)
        return self.finish()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    made: list[Run] = []
    yield made
    for run in made:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        run.close()


def start(runs: list[Run], path: Path, *, tasks: int | None = None) -> Run:
    """Start ``taskvisor run path`` and wait until it handles signals."""
    run = Run([PY, "-m", "taskvisor", "run", str(path)], path.parent)
    runs.append(run)
    run.wait_line(lambda line: "taskvisor.cli: supervising" in line)
    return run


def ctl(path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PY, "-m", "taskvisor", "ctl", "--file", str(path), *args],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def status(path: Path) -> dict[str, dict[str, Any]]:
    """``ctl status --json`` by task name."""
    tasks = json.loads(ctl(path, "status", "--json").stdout)["tasks"]
    return {t["name"]: t for t in tasks}


def poll(condition: Callable[[], Any], what: str) -> Any:
    """Call ``condition`` until it returns something true (under the guard)."""
    deadline = time.monotonic() + GUARD
    pause = 0.02
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {GUARD}s")
        time.sleep(pause)  # polling a condition, not synchronising on time
        pause = min(pause * 2, 0.25)


def running_pids(path: Path, count: int) -> dict[str, int]:
    """Poll ``status`` until ``count`` tasks run with a pid; their pids by name."""

    def ready() -> dict[str, int] | None:
        rows = status(path)
        pids = {n: t["pid"] for n, t in rows.items() if t["state"] == "running" and t["pid"]}
        return pids if len(pids) >= count else None

    result: dict[str, int] = poll(ready, f"{count} running programs")
    return result


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def sh(script: str) -> str:
    return f'["sh", "-c", {toml_str(script)}]'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- after


def chain_file(tmp_path: Path, run: int, chains: int, rng: random.Random) -> tuple[Path, list[str]]:
    """``chains`` independent chains of five programs, in a shuffled file order.

    Program k of a chain checks, when it starts, that program k-1 has made its marker (which
    it makes just before printing the line its log probe waits for), then waits a random
    moment, makes its own marker and prints "up".
    """
    blocks: list[str] = []
    names: list[str] = []
    for c in range(chains):
        for k in range(5):
            name = f"c{c}p{k}"
            names.append(name)
            marker = f"r{run}-{name}.up"
            before = f"r{run}-c{c}p{k - 1}.up"
            check = f"test -e {before} || echo ORDER-VIOLATION; " if k else ""
            delay = rng.choice(["0", "0.01", "0.03", "0.05"])
            script = f"{check}sleep {delay}; touch {marker}; echo up; exec sleep 60"
            after = f'after = ["c{c}p{k - 1}"]\n' if k else ""
            blocks.append(
                f'[[task]]\nname = "{name}"\ncommand = {sh(script)}\n{after}'
                f'ready = {{ log = "^up$", timeout = 30 }}\nstop_timeout = 5\n'
            )
    rng.shuffle(blocks)
    head = "[supervisor]\ngrace = 10\n\n"
    return write(tmp_path, head + "\n".join(blocks), f"chain{run}.toml"), names


def test_supervisor_122_start_order(tmp_path: Path, runs: list[Run]) -> None:
    # 100 randomized runs of a five-program chain: 10 runs of taskvisor, 10 chains each,
    # file order shuffled and start delays drawn at random.
    rng = random.Random(122)
    for r in range(10):
        path, names = chain_file(tmp_path, r, 10, rng)
        run = start(runs, path)
        run.wait_count(lambda line: "is ready (log" in line, len(names))
        assert run.stop() == 0
        assert "ORDER-VIOLATION" not in run.text
        # The supervisor's own account, in order: a program starts after its dependency's
        # probe passed.
        ready_at: dict[str, int] = {}
        started_at: dict[str, int] = {}
        for i, line in enumerate(run.seen):
            m = re.search(r"task '(c\d+p\d)' is ready", line)
            if m:
                ready_at[m.group(1)] = i
            m = re.search(r"task '(c\d+p\d)': sh started as pid", line)
            if m:
                started_at.setdefault(m.group(1), i)
        for name in names:
            c, k = name[1:].split("p")
            if k != "0":
                assert started_at[name] > ready_at[f"c{c}p{int(k) - 1}"], name


def test_circus_237_dependencies(tmp_path: Path, runs: list[Run]) -> None:
    # A once-task is ready when it completed: "web" starts after "migrate" ran to the end;
    # "report" waits for "broken", which fails for good, so "report" never starts.
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "web"
        command = {sh("test -e migrated && echo migrated-before-web; exec sleep 60")}
        after = ["migrate"]

        [[task]]
        name = "migrate"
        command = {sh("sleep 0.1; touch migrated")}
        restart = "never"

        [[task]]
        name = "broken"
        command = {sh("exit 3")}
        restart = "never"

        [[task]]
        name = "report"
        command = {sh("echo report-ran")}
        after = ["broken"]
        """,
    )
    run = start(runs, path)
    run.wait_line(lambda line: "migrated-before-web" in line)
    run.wait_line(lambda line: "task 'report' finished: fatal" in line)
    assert run.stop() == 1  # broken and report did not end well
    assert "report-ran" not in run.text
    assert "'broken', named in after, finished without being ready" in run.text


def check_file(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = write(tmp_path, text)
    return subprocess.run(
        [PY, "-m", "taskvisor", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )


def test_check_rejects_unknown_names_and_prints_a_cycle(tmp_path: Path) -> None:
    tasks = "".join(
        f'[[task]]\nname = "{n}"\ncommand = ["true"]\nafter = {json.dumps(a)}\n'
        for n, a in (("a", ["b"]), ("b", ["c"]), ("c", ["a"]), ("d", []))
    )
    result = check_file(tmp_path, tasks)
    assert result.returncode == 2
    assert "after: a cycle: a -> b -> c -> a" in result.stderr
    assert "Traceback" not in result.stderr
    unknown = '[[task]]\nname = "web"\ncommand = ["true"]\nafter = ["dbb"]\n'
    unknown += '[[task]]\nname = "db"\ncommand = ["true"]\n'
    result = check_file(tmp_path, unknown)
    assert result.returncode == 2
    assert 'task "web" (#1): after: expected names of tasks in this file, got unknown "dbb"' in (
        result.stderr
    )
    assert '(did you mean "db"?)' in result.stderr
    itself = '[[task]]\nname = "web"\ncommand = ["true"]\nafter = ["web"]\n'
    assert "a task cannot wait for itself" in check_file(tmp_path, itself).stderr


# --------------------------------------------------------------------------- probes


def test_each_readiness_probe_kind(tmp_path: Path, runs: list[Run]) -> None:
    tcp_port, http_port = free_port(), free_port()
    listen = (
        "import socket, time; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); time.sleep(0.2); "
        f"s.bind(('127.0.0.1', {tcp_port})); s.listen(); time.sleep(60)"
    )
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "tcp"
        command = [{toml_str(PY)}, "-c", {toml_str(listen)}]
        ready = {{ tcp = "127.0.0.1:{tcp_port}", every = 0.05 }}

        [[task]]
        name = "http"
        command = [{toml_str(PY)}, "-m", "http.server", "--bind", "127.0.0.1", "{http_port}"]
        ready = {{ http = "http://127.0.0.1:{http_port}/", every = 0.05 }}

        [[task]]
        name = "cmd"
        command = {sh("sleep 0.2; touch cmd-flag; exec sleep 60")}
        ready = {{ command = ["test", "-e", "cmd-flag"], every = 0.05 }}

        [[task]]
        name = "log"
        command = {sh("sleep 0.1; echo accepting connections; exec sleep 60")}
        ready = {{ log = "accepting conn", every = 0.05 }}

        [[task]]
        name = "last"
        command = {sh("echo all-four-ready; exec sleep 60")}
        after = ["tcp", "http", "cmd", "log"]
        """,
    )
    run = start(runs, path)
    run.wait_line(lambda line: "all-four-ready" in line)
    for probe in (
        f"tcp 127.0.0.1:{tcp_port}",
        f"http http://127.0.0.1:{http_port}/",
        "command ['test', '-e', 'cmd-flag']",
        "log /accepting conn/",
    ):
        assert f"is ready ({probe})" in run.text
    assert run.stop() == 0


def test_not_ready_in_time_is_a_retried_timeout(tmp_path: Path, runs: list[Run]) -> None:
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "mute"
        command = {sh("exec sleep 60")}
        ready = {{ log = "never printed", timeout = 0.3 }}
        backoff = {{ first = 0.01, max = 0.01 }}
        """,
    )
    run = start(runs, path)
    run.wait_count(lambda line: "timed out: not ready within 0.3 s" in line, 2)
    assert run.stop() == 0
    assert "task 'mute' retrying in" in run.text


def test_supervisor_584_health_check(tmp_path: Path, runs: list[Run]) -> None:
    # Two programs with the same health check on their own flag file; the test removes one
    # flag: after three failed checks in a row exactly that program is restarted.
    blocks = []
    for name in ("sick", "well"):
        script = f"touch {name}.ok; echo pid $$; exec sleep 60"
        blocks.append(
            f'[[task]]\nname = "{name}"\ncommand = {sh(script)}\n'
            f'health = {{ command = ["test", "-e", "{name}.ok"], every = 0.05, timeout = 2,'
            " failures = 3 }\n"
        )
    path = write(tmp_path, "\n".join(blocks))
    run = start(runs, path)
    before = running_pids(path, 2)
    (tmp_path / "sick.ok").unlink()
    run.wait_line(lambda line: "hung: health check command" in line)
    after = running_pids(path, 2)
    assert after["well"] == before["well"]
    assert after["sick"] != before["sick"]
    assert not pid_alive(before["sick"])
    assert "task 'sick': health check command ['test', '-e', 'sick.ok'] failed (3 of 3)" in (
        run.text
    )
    assert "failed (1 of 3)" in run.text
    assert "task 'well': health check" not in run.text
    assert status(path)["sick"]["restarts"] == 1
    assert run.stop() == 0


def test_supervisor_487_retry_forever_capped_backoff(tmp_path: Path, runs: list[Run]) -> None:
    # Never FATAL for a program that keeps failing: retries go on, the wait capped at max.
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "flaky"
        command = {sh("echo no >&2; exit 4")}
        max_retries = "unlimited"
        backoff = {{ first = 0.01, max = 0.04, factor = 2.0, jitter = "none" }}
        """,
    )
    run = start(runs, path)
    delays = run.wait_count(lambda line: "task 'flaky' retrying in" in line, 8)
    assert run.stop() == 0
    waits = [float(re.search(r"retrying in ([\d.]+) s", d).group(1)) for d in delays]  # type: ignore[union-attr]
    assert waits[:3] == [0.01, 0.02, 0.04]
    assert max(waits) == 0.04
    assert "finished: failed" not in run.text


# --------------------------------------------------------------------------- ctl


def test_ctl_against_a_running_instance(tmp_path: Path, runs: list[Run]) -> None:
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "ticker"
        command = {sh("i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done")}

        [[task]]
        name = "idle"
        command = {sh("exec sleep 60")}

        [[task]]
        name = "job"
        call = "os:getcwd"
        restart = "never"
        """,
    )
    run = start(runs, path)
    pids = running_pids(path, 2)
    rows = status(path)
    assert set(rows) == {"ticker", "idle", "job"}
    assert rows["job"]["pid"] is None
    assert rows["job"]["state"] == "completed"
    assert rows["idle"]["uptime"] >= 0
    assert rows["idle"]["restarts"] == 0
    assert set(rows["idle"]) == {"name", "state", "pid", "uptime", "restarts", "last_error"}
    table = ctl(path, "status").stdout
    assert re.search(
        rf"^idle\s+RUNNING\s+pid {pids['idle']}\s+uptime 0:00:\d\d\s+restarts 0", table, re.M
    )

    assert ctl(path, "stop", "idle").stdout.strip() == "idle: stopped"
    assert not pid_alive(pids["idle"])
    rows = status(path)
    assert rows["idle"]["state"] == "stopped"
    assert rows["idle"]["pid"] is None
    assert ctl(path, "start", "idle").stdout.strip() == "idle: started"
    started = running_pids(path, 2)["idle"]
    assert started != pids["idle"]
    assert ctl(path, "restart", "idle").stdout.strip() == "idle: restarted"
    assert running_pids(path, 2)["idle"] not in (started, pids["idle"])
    assert ctl(path, "reload").stdout.strip() == "reloaded: 3 unchanged"

    tail = subprocess.Popen(
        [PY, "-m", "taskvisor", "ctl", "--file", str(path), "tail", "ticker", "-n", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stdout is not None
        first = [tail.stdout.readline().strip() for _ in range(2)]
        later = [tail.stdout.readline().strip() for _ in range(5)]
    finally:
        tail.kill()
        tail.wait()
        if tail.stdout is not None:
            tail.stdout.close()
    numbers = [int(line.split()[1]) for line in first + later]
    assert numbers == list(range(numbers[0], numbers[0] + 7))  # followed, nothing lost
    lines = ctl(path, "tail", "ticker", "-n", "3", "--no-follow").stdout.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("tick ") for line in lines)

    bad = ctl(path, "stop", "nope", check=False)
    assert bad.returncode == 1
    assert "no task named 'nope' (tasks: ticker, idle, job)" in bad.stderr
    assert run.stop() == 0
    assert not os.path.exists(tmp_path / "tasks.sock")  # removed at exit


def test_ctl_refuses_a_socket_with_wrong_permissions(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        server.listen()
        os.chmod(path, 0o666)
        result = subprocess.run(
            [PY, "-m", "taskvisor", "ctl", "--socket", str(path), "status"],
            capture_output=True,
            text=True,
            timeout=GUARD,
            check=False,
        )
        assert result.returncode == 2
        assert f"refusing {path}: its mode is 0666, expected 0600" in result.stderr
        os.chmod(path, 0o600)
        os.chown(path, 12345, -1)
        result = subprocess.run(
            [PY, "-m", "taskvisor", "ctl", "--socket", str(path), "status"],
            capture_output=True,
            text=True,
            timeout=GUARD,
            check=False,
        )
        assert result.returncode == 2
        assert f"refusing {path}: it belongs to uid 12345, not to you" in result.stderr
    finally:
        server.close()
    missing = subprocess.run(
        [PY, "-m", "taskvisor", "ctl", "--socket", str(tmp_path / "none.sock"), "status"],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )
    assert missing.returncode == 2
    assert "does not exist: is taskvisor run of this file running?" in missing.stderr


def test_the_control_socket_is_0600_and_a_second_run_is_refused(
    tmp_path: Path, runs: list[Run]
) -> None:
    path = write(
        tmp_path,
        '[control]\nsocket = "ctl/app.sock"\n'
        f'[[task]]\nname = "x"\ncommand = {sh("exec sleep 60")}\n',
    )
    (tmp_path / "ctl").mkdir()
    run = start(runs, path)
    st = os.stat(tmp_path / "ctl" / "app.sock")
    assert st.st_mode & 0o777 == 0o600
    second = Run([PY, "-m", "taskvisor", "run", str(path)], tmp_path)
    runs.append(second)
    assert second.finish() == 1
    assert "another taskvisor is running with the control socket" in second.text
    assert run.stop() == 0


# --------------------------------------------------------------------------- reload


def hundred(tmp_path: Path, changed: int | None = None, extra: bool = False) -> Path:
    blocks = []
    for i in range(100):
        seconds = 61 if i == changed else 60
        blocks.append(f'[[task]]\nname = "p{i:03d}"\ncommand = ["sleep", "{seconds}"]\n')
    if extra:
        blocks.append(f'[[task]]\nname = "new"\ncommand = {sh("exec sleep 60")}\n')
    return write(tmp_path, "[supervisor]\ngrace = 10\n\n" + "\n".join(blocks))


def test_supervisor_910_reload_only_changed(tmp_path: Path, runs: list[Run]) -> None:
    path = hundred(tmp_path)
    run = start(runs, path)
    before = running_pids(path, 100)
    hundred(tmp_path, changed=42)
    assert ctl(path, "reload").stdout.strip() == "reloaded: restarted p042; 99 unchanged"
    after = running_pids(path, 100)
    assert [n for n in before if before[n] != after[n]] == ["p042"]
    assert not pid_alive(before["p042"])

    # An invalid file changes nothing and says why.
    good = path.read_text()
    path.write_text(good.replace('name = "p007"', 'name = "p007"\nrestart = "sometimes"'))
    bad = ctl(path, "reload", check=False)
    assert bad.returncode == 1
    assert "reload refused, nothing changed" in bad.stderr
    assert 'task "p007" (#8): restart: expected "never", "on_failure" or "always"' in bad.stderr
    assert running_pids(path, 100) == after

    # SIGHUP reloads too: one task added, one removed, the rest untouched.
    text = good.replace('[[task]]\nname = "p099"\ncommand = ["sleep", "60"]\n', "")
    path.write_text(text + f'\n[[task]]\nname = "new"\ncommand = {sh("exec sleep 60")}\n')
    run.signal(signal.SIGHUP)
    run.wait_line(lambda line: "SIGHUP: reloaded: added new; removed p099; 99 unchanged" in line)
    final = running_pids(path, 100)
    assert "p099" not in final
    assert "new" in final
    assert all(final[n] == after[n] for n in final if n != "new")
    assert not pid_alive(after["p099"])
    assert run.stop() == 0


# --------------------------------------------------------------------------- limits, output


def test_supervisor_586_memory_limit(tmp_path: Path, runs: list[Run]) -> None:
    # Past its memory limit the program is killed (cgroup) or its allocation fails
    # (setrlimit): either way it ends, is restarted, and the supervisor and the other
    # program live on.
    hog = (
        "import os, sys; print('attempt', os.environ['TASKVISOR_ATTEMPT'], flush=True); "
        "block = bytearray(400 * 1024 * 1024); print('allocated', flush=True)"
    )
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "hog"
        command = [{toml_str(PY)}, "-c", {toml_str(hog)}]
        limits = {{ memory = "200M", nofile = 64 }}
        backoff = {{ first = 0.01, max = 0.05 }}

        [[task]]
        name = "bystander"
        command = {sh("ulimit -n; exec sleep 60")}
        limits = {{ nofile = 77 }}
        """,
    )
    checked = subprocess.run(
        [PY, "-m", "taskvisor", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=True,
    )
    assert "task 'hog': limits: memory 200M as" in checked.stdout
    run = start(runs, path)
    run.wait_line(lambda line: "taskvisor.process.hog: attempt 3" in line)
    bystander = running_pids(path, 1)["bystander"]
    assert "taskvisor.process.bystander: 77" in run.text
    assert "allocated" not in run.text
    assert run.proc.poll() is None
    assert "task 'hog' attempt 1 failed" in run.text
    assert run.stop() == 0
    assert not pid_alive(bystander)


def test_cpu_limit_without_cgroups_is_said_not_applied(tmp_path: Path) -> None:
    result = check_file(
        tmp_path,
        '[[task]]\nname = "x"\ncommand = ["true"]\nlimits = { cpu = 1.5, memory = "1G" }\n',
    )
    assert result.returncode == 0, result.stderr
    assert "limits: " in result.stdout
    if "setrlimit" in result.stdout:
        assert "cpu 1.5: NOT applied (no rlimit limits a rate; needs cgroup v2)" in result.stdout
        assert "memory 1G as RLIMIT_AS" in result.stdout
    else:
        assert "cpu 1.5 as cgroup cpu.max" in result.stdout


def test_output_to_rotated_files(tmp_path: Path, runs: list[Run]) -> None:
    script = "i=0; while [ $i -lt 40 ]; do echo line-$i; echo err-$i >&2; i=$((i+1)); done"
    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "chatty"
        command = {sh(script)}
        restart = "never"
        stdout = "logs/out.log"
        stderr = "logs/err.log"
        max_bytes = 100
        backups = 2
        """,
    )
    (tmp_path / "logs").mkdir()
    run = start(runs, path)
    assert run.finish() == 0
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "err.log",
        "err.log.1",
        "err.log.2",
        "out.log",
        "out.log.1",
        "out.log.2",
    ]
    assert all(p.stat().st_size <= 100 for p in logs.iterdir())
    assert (logs / "out.log").read_text().splitlines()[-1] == "line-39"
    assert "line-" not in run.text  # not on the terminal
    assert "err-39" in (logs / "err.log").read_text()


# --------------------------------------------------------------------------- no orphans


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_no_child_left_behind_after_a_signal(
    tmp_path: Path, runs: list[Run], sig: signal.Signals
) -> None:
    # Each program has a grandchild in its group; all of them are gone after the signal.
    script = "sleep 60 & echo child $!; exec sleep 60"
    blocks = [f'[[task]]\nname = "p{i}"\ncommand = {sh(script)}\n' for i in range(3)]
    path = write(tmp_path, "\n".join(blocks))
    run = start(runs, path)
    pids = running_pids(path, 3)
    children = [
        int(line.split()[-1]) for line in run.wait_count(lambda line: ": child " in line, 3)
    ]
    assert run.stop(sig) == 0
    for pid in [*pids.values(), *children]:
        assert not pid_alive(pid)
    assert all(group_gone(pgid) for pgid in pids.values())


def test_a_child_killed_with_sigkill_is_restarted_and_its_group_reaped(
    tmp_path: Path, runs: list[Run]
) -> None:
    script = "sleep 60 & echo child $!; exec sleep 60"
    path = write(
        tmp_path, f'[[task]]\nname = "p"\ncommand = {sh(script)}\nbackoff = {{ first = 0.01 }}\n'
    )
    run = start(runs, path)
    first = running_pids(path, 1)["p"]
    grandchild = int(run.wait_line(lambda line: ": child " in line).split()[-1])
    os.kill(first, signal.SIGKILL)
    second = poll(lambda: (p := running_pids(path, 1)["p"]) != first and p, "a new pid")
    assert pid_alive(second)
    poll(lambda: not pid_alive(grandchild), "the old group's grandchild gone")
    run.wait_line(lambda line: "killed by SIGKILL" in line)
    assert run.stop() == 0
    assert group_gone(first)
    assert group_gone(second)


# --------------------------------------------------------------------------- status page


def test_status_page_shows_dependencies_probes_and_output(tmp_path: Path, runs: list[Run]) -> None:
    pytest.importorskip("aiohttp")
    import urllib.request

    path = write(
        tmp_path,
        f"""
        [[task]]
        name = "db"
        command = {sh("echo db is up; exec sleep 60")}
        ready = {{ log = "db is up" }}

        [[task]]
        name = "web"
        command = {sh("echo serving; exec sleep 60")}
        after = ["db"]
        health = {{ command = ["true"], every = 0.05 }}

        [status]
        listen = "127.0.0.1:0"
        """,
    )
    run = start(runs, path)
    url = run.wait_line(lambda line: "status page at http://" in line).rsplit(" ", 1)[1]

    def fetch() -> dict[str, Any] | None:
        with urllib.request.urlopen(url + "tasks", timeout=GUARD) as resp:
            body = json.load(resp)
        tasks = {t["name"]: t for t in body["tasks"]}
        web = tasks.get("web")
        if web is None or not web.get("health_probe", {}).get("at"):
            return None
        return tasks

    tasks = poll(fetch, "a health result on the page")
    assert tasks["web"]["after"] == ["db"]
    assert tasks["db"]["ready_probe"]["probe"] == "log /db is up/"
    assert tasks["db"]["ready_probe"]["ok"] is True
    assert tasks["web"]["health_probe"]["ok"] is True
    assert [o["line"] for o in tasks["db"]["output"]] == ["db is up"]
    assert "(taskvisor)" not in tasks
    assert run.stop() == 0
