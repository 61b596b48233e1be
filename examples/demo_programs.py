"""The programs that ``examples/demo.toml`` runs as commands: ``python3 demo_programs.py NAME``.

Standard library only, so any ``python3`` runs them.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import types


def flaky() -> int:
    """Fails on its first two attempts, then serves until it is stopped."""
    attempt = int(os.environ.get("TASKVISOR_ATTEMPT", "1"))
    if attempt <= 2:
        print(f"flaky: cannot reach the database (attempt {attempt})", file=sys.stderr)
        return 1
    print(f"flaky: connected on attempt {attempt}; serving", flush=True)
    beat = 0
    while True:
        time.sleep(2)
        beat += 1
        print(f"flaky: heartbeat {beat}", flush=True)


def slow() -> int:
    """Takes longer than its attempt timeout; cleans up on SIGTERM."""

    def on_term(signum: int, frame: types.FrameType | None) -> None:
        print("slow: SIGTERM received, cleaning up", flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    print("slow: working on a long job", flush=True)
    time.sleep(60)
    return 0


def crash() -> int:
    """Crashes with a traceback every time."""
    raise RuntimeError("crash: config value 'port' is not a number")


if __name__ == "__main__":
    programs = {"flaky": flaky, "slow": slow, "crash": crash}
    raise SystemExit(programs[sys.argv[1]]())
