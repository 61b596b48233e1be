"""Child process for ``test_signals.py``: ``sup.run(...)`` with ``handle_signals=True``.

Usage: ``python _signal_child.py MODE`` where MODE is ``cooperative`` (the body stops at
once), ``slow-cleanup`` (the body's cleanup outlasts the 30 s grace) or ``no-signals``
(``handle_signals=False``); ``with-cooperative`` and ``with-slow-cleanup`` do the same under
``async with Supervisor(...)`` and ``await sup.wait()`` instead of ``run``. Prints ``ready``
once the body runs, ``stopping`` when it sees its stop, and finally one JSON line describing
the shutdown.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import taskvisor as tv

GRACE = 30.0


async def main(mode: str) -> dict[str, object]:
    events: list[tv.Event] = []

    async def body() -> None:
        print("ready", flush=True)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print("stopping", flush=True)
            if mode == "slow-cleanup":
                await asyncio.sleep(GRACE * 2)
            raise

    sup = tv.Supervisor(
        tv.SupervisorConfig(grace=GRACE, handle_signals=mode != "no-signals"),
        subscribers=[events.append],
    )

    def app_handler(signum: int, frame: object) -> None:
        print("app handler called", flush=True)

    if mode != "no-signals":
        # The application's own handler: replaced while run() is active, given back after.
        signal.signal(signal.SIGTERM, app_handler)
    sigint_before = signal.getsignal(signal.SIGINT)  # asyncio.run's own, which cancels main
    started = time.monotonic()
    report = await sup.run([tv.TaskSpec("worker", body)])
    elapsed = time.monotonic() - started
    finished = [e for e in events if e.kind is tv.EventKind.TASK_FINISHED]
    requested = [e for e in events if e.kind is tv.EventKind.SHUTDOWN_REQUESTED]
    return {
        "grace_exceeded": report.grace_exceeded,
        "stuck": list(report.stuck),
        "grace": report.grace,
        "elapsed": elapsed,
        "outcomes": [e.outcome for e in finished],
        "shutdown_reasons": [e.reason for e in requested],
        "grace_exceeded_events": sum(e.kind is tv.EventKind.GRACE_EXCEEDED for e in events),
        "handlers_restored": signal.getsignal(signal.SIGINT) == sigint_before
        and signal.getsignal(signal.SIGTERM) is app_handler,
    }


async def main_with(mode: str) -> dict[str, object]:
    """``async with Supervisor(...)`` and ``await sup.wait()``: signals from ``start()``."""
    events: list[tv.Event] = []
    cleanup: list[str] = []

    async def body() -> None:
        print("ready", flush=True)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print("stopping", flush=True)
            if mode == "with-slow-cleanup":
                await asyncio.sleep(GRACE * 2)
            cleanup.append("done")
            raise

    sigint_before = signal.getsignal(signal.SIGINT)
    sigterm_before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    sup = tv.Supervisor(tv.SupervisorConfig(grace=GRACE), subscribers=[events.append])
    async with sup:
        sup.add(tv.TaskSpec("worker", body))
        report = await sup.wait()
    elapsed = time.monotonic() - started
    finished = [e for e in events if e.kind is tv.EventKind.TASK_FINISHED]
    exceeded = [e for e in events if e.kind is tv.EventKind.GRACE_EXCEEDED]
    return {
        "grace_exceeded": report.grace_exceeded,
        "stuck": list(report.stuck),
        "grace": report.grace,
        "elapsed": elapsed,
        "outcomes": {name: o.kind for name, o in report.outcomes.items()},
        "reasons": [o.reason for o in report.outcomes.values()],
        "finished": [e.outcome for e in finished],
        "shutdown_reasons": [e.reason for e in events if e.kind is tv.EventKind.SHUTDOWN_REQUESTED],
        "grace_exceeded_reasons": [e.reason for e in exceeded],
        "cleanup_ran": cleanup == ["done"],
        "same_report": await sup.shutdown() is report,
        "handlers_restored": signal.getsignal(signal.SIGINT) == sigint_before
        and signal.getsignal(signal.SIGTERM) == sigterm_before,
    }


if __name__ == "__main__":
    chosen = main_with if sys.argv[1].startswith("with-") else main
    print(json.dumps(asyncio.run(chosen(sys.argv[1]))), flush=True)
