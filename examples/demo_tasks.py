"""The Python tasks of ``examples/demo.toml`` (``make demo``): ``call = "demo_tasks:tick"``.

``taskvisor run`` imports this module from the TOML file's directory.
"""

from __future__ import annotations

import logging
import time

from taskvisor import TaskContext

log = logging.getLogger("demo")


async def tick(ctx: TaskContext) -> None:
    """A periodic Python task: one short piece of work per attempt."""
    log.info("tick: attempt %d of the periodic task", ctx.attempt)


def report(ctx: TaskContext) -> None:
    """A blocking function, run in a worker thread; it checks for a stop between steps."""
    for step in range(3):
        if ctx.is_cancelled():
            log.info("report: stop requested, leaving early")
            return
        time.sleep(0.2)  # stands for blocking I/O
        log.info("report: step %d done", step + 1)
