"""OS signals under ``run`` with ``handle_signals=True``: the first SIGINT/SIGTERM shuts down
gracefully, a second one skips the rest of the grace period (SPEC §3). Checked from outside,
on a child process."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

import taskvisor as tv
from conftest import GUARD

CHILD = Path(__file__).with_name("_signal_child.py")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> str:
        assert self.proc.stdout is not None
        return (await self.proc.stdout.readline()).decode().strip()

    async def finish(self) -> tuple[int, dict[str, Any], str]:
        out, err = await self.proc.communicate()
        lines = out.decode().strip().splitlines()
        assert len(lines) <= 1, lines  # nothing but the report (e.g. no app handler call)
        report: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        assert self.proc.returncode is not None
        return self.proc.returncode, report, err.decode()


async def spawn(mode: str) -> Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        mode,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Child(proc)


async def run_child(
    mode: str, *steps: tuple[str, signal.Signals | None]
) -> tuple[int, dict[str, Any], str]:
    """Spawn the child; for each step wait for the line, then send the signal."""
    child = await spawn(mode)
    try:
        async with asyncio.timeout(GUARD * 2):
            for expected, sig in steps:
                assert await child.line() == expected
                if sig is not None:
                    child.proc.send_signal(sig)
            return await child.finish()
    finally:
        if child.proc.returncode is None:
            child.proc.kill()
            await child.proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_first_signal_shuts_down_gracefully(sig: signal.Signals) -> None:
    code, report, err = await run_child("cooperative", ("ready", sig), ("stopping", None))
    assert code == 0, err
    assert err == ""
    assert report["grace_exceeded"] is False
    assert report["stuck"] == []
    assert report["outcomes"] == ["canceled"]
    assert report["shutdown_reasons"] == [f"signal {sig.name}"]
    assert report["handlers_restored"] is True


async def test_second_signal_skips_the_rest_of_the_grace_period() -> None:
    code, report, err = await run_child(
        "slow-cleanup",
        ("ready", signal.SIGTERM),
        # The body saw its stop and is cleaning up: the shutdown is graceful so far.
        ("stopping", signal.SIGINT),
    )
    assert code == 0, err
    # Heard by default (SPEC §13), in honest words: a second signal, not an expired grace.
    assert err == "shutdown: second signal (SIGINT): forcing the stop now; still running: worker\n"
    assert report["shutdown_reasons"] == ["signal SIGTERM"]  # one shutdown, from the first
    assert report["grace_exceeded"] is True
    assert report["stuck"] == ["worker"]
    assert report["outcomes"] == ["force_aborted"]
    assert report["grace_exceeded_events"] == 1
    assert report["grace"] == 30.0
    assert report["elapsed"] < report["grace"]  # it did not wait out the grace period
    assert report["handlers_restored"] is True


async def test_without_signal_handling_the_default_action_applies() -> None:
    child = await spawn("no-signals")
    try:
        async with asyncio.timeout(GUARD * 2):
            assert await child.line() == "ready"
            child.proc.send_signal(signal.SIGTERM)
            code, report, _ = await child.finish()
    finally:
        if child.proc.returncode is None:
            child.proc.kill()
            await child.proc.wait()
    assert code == -signal.SIGTERM
    assert report == {}


# --------------------------------------------------------------------------- §13: every mode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_async_with_and_wait_shut_down_on_a_signal_with_cleanup(sig: signal.Signals) -> None:
    # `docker stop` (SIGTERM) or Ctrl+C under `async with`: start() installed the handlers.
    code, report, err = await run_child("with-cooperative", ("ready", sig), ("stopping", None))
    assert code == 0, err
    assert err == ""  # no KeyboardInterrupt traceback, nothing worth a warning
    assert report["cleanup_ran"] is True
    assert report["shutdown_reasons"] == [f"signal {sig.name}"]
    assert report["outcomes"] == {"worker": "canceled"}
    assert report["grace_exceeded"] is False
    assert report["same_report"] is True  # wait() and shutdown() give the one report
    assert report["handlers_restored"] is True


async def test_async_with_two_sigints_force_the_stop_in_honest_words() -> None:
    code, report, err = await run_child(
        "with-slow-cleanup",
        ("ready", signal.SIGINT),
        ("stopping", signal.SIGINT),
    )
    assert code == 0, err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert "second signal" in err
    assert "grace period" not in err
    assert err == "shutdown: second signal (SIGINT): forcing the stop now; still running: worker\n"
    assert report["cleanup_ran"] is False  # its cleanup was cut short: forced
    assert report["outcomes"] == {"worker": "force_aborted"}
    assert report["finished"] == ["force_aborted"]
    # 13.1.7: GRACE_EXCEEDED is still published, and the report says so, with those words.
    assert report["grace_exceeded"] is True
    assert report["stuck"] == ["worker"]
    [reason] = report["grace_exceeded_reasons"]
    assert reason.startswith("second signal (SIGINT): forcing the stop now")
    assert "grace" not in reason
    [outcome_reason] = report["reasons"]
    assert "grace period" not in outcome_reason, outcome_reason
    assert report["elapsed"] < report["grace"]
    assert report["shutdown_reasons"] == ["signal SIGINT"]
    assert report["handlers_restored"] is True


async def test_wait_called_before_start_waits_for_a_later_start_and_shutdown() -> None:
    sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False))
    async with asyncio.timeout(GUARD):
        waiter = asyncio.create_task(sup.wait())
        started = asyncio.Event()

        async def body() -> None:
            started.set()
            await asyncio.Event().wait()

        await asyncio.sleep(0.01)  # a short while before the start: the waiter waits
        assert not waiter.done()
        async with sup:
            sup.add(tv.TaskSpec("w", body))
            await started.wait()
            assert not waiter.done()
        report = await waiter
    assert report.outcomes["w"].kind is tv.OutcomeKind.CANCELED
    assert await sup.shutdown() is report


async def test_wait_returns_when_run_is_stopped_by_shutdown() -> None:
    sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False))
    started = asyncio.Event()

    async def body() -> None:
        started.set()
        await asyncio.Event().wait()

    async with asyncio.timeout(GUARD):
        waiter = asyncio.create_task(sup.wait())
        running = asyncio.create_task(sup.run([tv.TaskSpec("w", body)]))
        await started.wait()
        assert not waiter.done()
        stopped = await sup.shutdown()
        assert await running is stopped
        assert await waiter is stopped
