"""``python -m benchmarks.programs``: ``taskvisor run`` side by side with supervisord.

The same N programs (``sleep 3600``) under each supervisor, one after the other, on this
machine, in one run (``make bench-programs``). Measured from the outside, through ``/proc``,
the same way for both:

- **start**: from spawning the supervisor to the moment N children have exec'd ``sleep``;
- **idle CPU**: the supervising process's user + system CPU time over an idle window
  (60 s by default; ``--idle`` for quicker runs), and its RSS at the end of it;
- **restart latency**: ``kill -9`` of a random program until a new ``sleep`` child has
  replaced it (p50, p99 over ``--kills`` kills, one at a time);
- **stop**: from SIGTERM to the supervisor's exit with every program gone.

Both are configured to restart a crashed program at once: supervisord with ``startsecs = 0``
and ``autorestart = true`` (a program that dies while RUNNING is restarted without backoff),
taskvisor with ``[defaults] backoff = { first = 0.005, max = 5.0 }`` (its default first retry
waits 0.1-0.2 s). Output is left at each one's default: supervisord writes each program's
output to log files, taskvisor reads it through pipes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GUARD = 120.0
CLOCK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (``/proc/PID/task/PID/children``)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def sleepers(pid: int) -> set[int]:
    """Children of ``pid`` that run ``sleep`` (exec'd, not merely forked)."""
    return {c for c in children(pid) if comm(c) == "sleep"}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK  # utime, stime


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(condition: Callable[[], bool], pause: float = 0.001) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("benchmark guard expired")
        time.sleep(pause)


def taskvisor_files(directory: Path, count: int) -> list[str]:
    lines = ["[supervisor]", "grace = 10", "", "[defaults]"]
    lines += ["backoff = { first = 0.005, max = 5.0 }", ""]
    for i in range(count):
        lines += ["[[task]]", f'name = "p{i:03d}"', 'command = ["sleep", "3600"]', ""]
    path = directory / "programs.toml"
    path.write_text("\n".join(lines))
    return [sys.executable, "-m", "taskvisor", "run", "--log-level", "WARNING", str(path)]


def supervisord_files(directory: Path, count: int) -> list[str]:
    binary = shutil.which("supervisord", path=str(Path(sys.executable).parent))
    if binary is None:
        raise SystemExit("supervisord is not installed here: pip install supervisor")
    logs = directory / "logs"
    logs.mkdir()
    lines = [
        "[supervisord]",
        "nodaemon = true",
        "user = root" if os.geteuid() == 0 else "",
        f"logfile = {directory / 'supervisord.log'}",
        f"pidfile = {directory / 'supervisord.pid'}",
        f"childlogdir = {logs}",
        "loglevel = warn",
        "",
    ]
    for i in range(count):
        lines += [
            f"[program:p{i:03d}]",
            "command = sleep 3600",
            "autorestart = true",
            "startsecs = 0",
            "stopwaitsecs = 10",
            "",
        ]
    path = directory / "supervisord.conf"
    path.write_text("\n".join(lines))
    return [binary, "-c", str(path)]


def measure(name: str, argv: list[str], count: int, idle: float, kills: int) -> dict[str, float]:
    rng = random.Random(586)
    begin = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pid = proc.pid
    try:
        wait_until(lambda: len(sleepers(pid)) >= count)
        started = time.monotonic() - begin
        time.sleep(1.0)  # settle: the last start's bookkeeping, then idle
        cpu_before = cpu_seconds(pid)
        time.sleep(idle)
        idle_cpu = cpu_seconds(pid) - cpu_before
        rss = rss_mib(pid)
        latencies = []
        for _ in range(kills):
            before = sleepers(pid)
            victim = rng.choice(sorted(before))
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)

            def replaced(before: set[int] = before, victim: int = victim) -> bool:
                # One read of the children list per poll; comm only of the new ones: the
                # measuring must not take the CPU the supervisor needs.
                now = children(pid)
                if victim in now:
                    return False
                new = [c for c in now if c not in before]
                return bool(new) and all(comm(c) == "sleep" for c in new)

            wait_until(replaced, pause=0.0005)
            latencies.append(time.monotonic() - t0)
        latencies.sort()
        programs = sorted(sleepers(pid))
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(GUARD)
        wait_until(lambda: all(not os.path.exists(f"/proc/{p}") or comm(p) == "" for p in programs))
        stopped = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = {
        "start_s": started,
        "idle_cpu_s": idle_cpu,
        "rss_mib": rss,
        "restart_p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "restart_p99_ms": 1000 * latencies[max(0, int(len(latencies) * 0.99) - 1)]
        if latencies
        else float("nan"),
        "stop_s": stopped,
    }
    print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()), file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.programs", description=__doc__)
    parser.add_argument("--programs", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds (60)")
    parser.add_argument("--kills", type=int, default=200, help="kill -9 restarts to time (200)")
    args = parser.parse_args(argv)
    results = {}
    for name, build in (("supervisord", supervisord_files), ("taskvisor run", taskvisor_files)):
        with tempfile.TemporaryDirectory(prefix="bench-programs-") as tmp:
            results[name] = measure(
                name, build(Path(tmp), args.programs), args.programs, args.idle, args.kills
            )
    rows = (
        ("time until all run", "start_s", "s", 2),
        (f"CPU time over {args.idle:g} idle s", "idle_cpu_s", "s", 3),
        ("RSS after idling", "rss_mib", "MiB", 1),
        ("restart latency p50 (kill -9)", "restart_p50_ms", "ms", 1),
        ("restart latency p99 (kill -9)", "restart_p99_ms", "ms", 1),
        ("time to stop all", "stop_s", "s", 2),
    )
    sup, tv = results["supervisord"], results["taskvisor run"]
    print(f"\n{args.programs} programs (`sleep 3600`), {args.kills} kills, {os.cpu_count()} CPUs\n")
    print("| measure | supervisord | taskvisor run | taskvisor better |")
    print("|---|---:|---:|:---:|")
    better_all = True
    for label, key, unit, digits in rows:
        better = tv[key] < sup[key]
        better_all &= better
        print(
            f"| {label} | {sup[key]:.{digits}f} {unit} | {tv[key]:.{digits}f} {unit} | "
            f"{'yes' if better else 'NO'} |"
        )
    goal = tv["restart_p99_ms"] <= 100
    print(
        f"\nrestart p99 <= 100 ms: {'yes' if goal else 'NO'}; every figure better: "
        f"{'yes' if better_all else 'NO'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
