"""Supervision events as JSON lines (``python -m examples.events_jsonl``).

``JsonLinesSubscriber`` appends one JSON object per event to a file it owns (or to a stream
you pass), flushed per line and written from its own thread. Each line uses the ``Event``
field names; fields that are not set are left out. Read the file back with any JSON lines
tool (``jq``, pandas ``read_json(lines=True)``, DuckDB ``read_json_auto``) or, as here, with
the standard library.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import taskvisor as tv
from taskvisor.subscribers import JsonLinesSubscriber


async def main(short: bool = False) -> int:
    failures = 1 if short else 3

    async def import_orders(ctx: tv.TaskContext) -> None:
        if ctx.attempt <= failures:
            raise tv.Fail("SFTP connection reset")

    spec = tv.TaskSpec.restartable(
        "import-orders", import_orders, backoff=tv.BackoffPolicy.constant(0.02)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "taskvisor-events.jsonl"
        # `with` closes the file once the supervisor has shut down (and drained every event).
        with JsonLinesSubscriber(path) as sink:
            sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False), subscribers=[sink])
            await sup.run([spec])

        lines = path.read_text(encoding="utf-8").splitlines()
        print(f"{len(lines)} lines in {path.name}; the last outcome:")
        print(next(line for line in reversed(lines) if '"kind":"task_finished"' in line))
        records = [json.loads(line) for line in lines]
    attempts = Counter(r["task"] for r in records if r["kind"] == "attempt_starting")
    print(f"attempts per task: {dict(attempts)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
