"""Supervising external programs (``python -m examples.supervise_command``).

``taskvisor.process.command(argv, ...)`` builds a task body that runs a program, one process
group per attempt, with no shell. Its exit code decides how the attempt ended: a code in
``success_exit_codes`` is a success, one in ``fatal_exit_codes`` is ``Fatal``, any other a
retryable ``Fail``. Every line the program prints becomes a ``logging`` record on
``taskvisor.process.<task name>``. On a stop the group gets ``stop_signal`` (SIGTERM), then
SIGKILL after ``stop_timeout`` seconds.

The programs here are small Python scripts run with ``sys.executable -c``:

- ``migrate`` exits 75 on its first attempt, then succeeds (it reads ``TASKVISOR_ATTEMPT``);
- ``web`` serves until the supervisor shuts down, and cleans up on SIGTERM;
- ``legacy-job`` exits 78, declared fatal: never retried.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import taskvisor as tv
from taskvisor.process import command

MIGRATE = """
import os, sys
attempt = int(os.environ["TASKVISOR_ATTEMPT"])
if attempt == 1:
    print("database not ready", file=sys.stderr)
    sys.exit(75)
print(f"migrated on attempt {attempt}")
"""

WEB = """
import signal, sys, time
def stop(signum, frame):
    print("SIGTERM: closing connections", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("serving", flush=True)
while True:
    time.sleep(0.05)
"""

LEGACY = """
import sys
print("config format 1 is no longer supported", file=sys.stderr)
sys.exit(78)
"""


async def main(short: bool = False) -> int:
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(levelname)-7s %(name)s: %(message)s"
    )
    serving = asyncio.Event()

    class WebUp(logging.Handler):
        """Notices the web program's "serving" line (its SIGTERM handler is in place)."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "serving":
                serving.set()

    logging.getLogger("taskvisor.process.web").addHandler(WebUp())

    py = sys.executable
    specs = [
        tv.TaskSpec.restartable(
            "migrate", command([py, "-c", MIGRATE]), backoff=tv.BackoffPolicy.constant(0.05)
        ),
        tv.TaskSpec.restartable("web", command([py, "-c", WEB], stop_timeout=5.0)),
        tv.TaskSpec.restartable("legacy-job", command([py, "-c", LEGACY], fatal_exit_codes=[78])),
    ]
    sup = tv.Supervisor(tv.SupervisorConfig(grace=10.0))
    async with sup:
        handles = [sup.add(spec) for spec in specs]
        migrate, _web, legacy = handles
        await asyncio.wait_for(asyncio.gather(migrate, legacy, serving.wait()), timeout=30)
        await asyncio.sleep(0.2 if short else 2.0)  # let the web server run a little
    for h in handles:
        o = await h
        print(f"{h.name:<10} {o.kind.value:<9} attempts={o.attempts} exit_code={o.exit_code}")
    kinds = [(await h).kind.value for h in handles]
    return 0 if kinds == ["completed", "canceled", "fatal"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
