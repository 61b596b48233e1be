"""The runnable examples keep running: each one is executed once, with ``--short``.

Each example is a module run as ``python -m examples.NAME --short`` in a subprocess; the
test checks its exit status and the lines that show it did what its docstring says. The
observability examples are run by their own test files (``test_obs_*.py``,
``test_testing_kit.py``); the last test makes sure no example is left unexecuted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Helpers of examples/demo.toml (run by `taskvisor run`), not examples of their own.
NOT_MODULES = {"__init__", "demo_programs", "demo_tasks"}


def run_example(name: str) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", f"examples.{name}", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_basic() -> None:
    out = run_example("basic")
    assert "fetch-rates: attempt 3" in out
    assert "outcome: completed after 3 attempts" in out


def test_worker_stops_gracefully_on_sigint() -> None:
    out = run_example("worker")
    assert "stop requested: finishing job 3 first" in out
    # The job in hand when Ctrl+C arrived was finished before the worker stopped.
    assert out.index("stop requested: finishing job 3") < out.index("job 3 done")
    assert "stopped gracefully: grace_exceeded=False, jobs done: [1, 2, 3]" in out


def test_periodic() -> None:
    out = run_example("periodic")
    assert "(success)" in out
    assert "(failure)" in out
    assert re.search(r"stopped: canceled after \d+ runs", out)


def test_demo_runs_tasks_with_different_policies() -> None:
    out = run_example("demo")
    outcomes = dict(re.findall(r"^  (\S+)\s+(completed|failed|fatal|canceled)\b", out, re.M))
    assert outcomes == {
        "flaky": "completed",
        "heartbeat": "canceled",
        "slow-query": "failed",
        "migrate": "fatal",
    }
    assert "attempt_timed_out" in out
    assert "shutdown: grace_exceeded=False stuck=[]" in out


def test_dynamic() -> None:
    out = run_example("dynamic")
    assert "add refused: a task named 'consumer-eu' is already registered" in out
    assert "cancel('reindex') -> True; outcome: canceled" in out
    assert re.search(r"id=\d+ consumer-us\s+stopping", out)
    assert re.search(r"consumer-us added again: new id (\d+) \(was (\d+)\)", out)
    assert "is_alive('reindex') -> False" in out


def test_outcomes_shows_every_kind() -> None:
    out = run_example("outcomes")
    for name, kind in [
        ("ok", "completed"),
        ("flaky", "failed"),
        ("misconfigured", "fatal"),
        ("serve", "canceled"),
        ("stubborn", "force_aborted"),
        ("serve-2", "rejected"),
    ]:
        assert re.search(rf"^{re.escape(name)}\s+{kind}\b", out, re.M), name
    assert "rejection=slot_busy" in out
    assert "stuck=['stubborn']" in out


def test_tenant_sync_with_replace() -> None:
    out = run_example("tenant_sync")
    assert "acme-1: replaced by a newer request" in out
    for line in [
        "acme-1    canceled",
        "acme-2    rejected (superseded)",
        "acme-3    completed",
        "globex-3  rejected (slot_busy)",
    ]:
        assert line in out
    assert "running→terminating" in out


def test_queue_consumer_reconnects() -> None:
    out = run_example("queue_consumer")
    assert out.count("reconnecting in") == 2
    assert "duplicate 3 skipped" in out
    assert "outcome: completed after 3 connections" in out
    assert "handled: [1, 2, 3, 4, 5, 6, 7, 8]" in out


def test_supervise_command() -> None:
    out = run_example("supervise_command")
    assert "taskvisor.process.migrate: migrated on attempt 2" in out
    assert "taskvisor.process.web: SIGTERM: closing connections" in out
    assert re.search(r"^migrate\s+completed attempts=2", out, re.M)
    assert re.search(r"^web\s+canceled", out, re.M)
    assert re.search(r"^legacy-job\s+fatal\s+attempts=1 exit_code=78", out, re.M)


def test_demo_toml_is_valid() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "taskvisor", "check", str(EXAMPLES / "demo.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "module", sorted(p.stem for p in EXAMPLES.glob("*.py") if p.stem not in NOT_MODULES)
)
def test_every_example_is_executed_by_a_test(module: str) -> None:
    tests = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py"))
    called = f'"examples.{module}"' in tests or f'run_example("{module}")' in tests
    assert called, f"examples/{module}.py is run by no test"
    source = (EXAMPLES / f"{module}.py").read_text(encoding="utf-8")
    assert "--short" in source, f"examples/{module}.py has no --short mode"
