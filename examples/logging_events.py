"""Supervision events as standard ``logging`` records (``python -m examples.logging_events``).

``LogSubscriber`` writes one record per event on the ``taskvisor`` logger: a sentence for
people, and every event field in ``extra`` under the ``taskvisor_`` prefix, for structured
pipelines. This example shows both, side by side, on stderr:

- a plain text handler for people;
- a tiny JSON formatter that copies the ``taskvisor_*`` attributes into each line (what
  python-json-logger or structlog's ``ProcessorFormatter`` do for you).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import taskvisor as tv
from taskvisor.subscribers import LogSubscriber


class JsonFormatter(logging.Formatter):
    """One JSON object per record: level, message, and the ``taskvisor_*`` fields that are set."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {"level": record.levelname, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key.startswith("taskvisor_") and value is not None:
                doc[key] = value
        return json.dumps(doc, default=str)  # an exception (taskvisor_error) as its text


def configure_logging() -> None:
    text = logging.StreamHandler(sys.stderr)
    text.setFormatter(logging.Formatter("%(levelname)-7s %(name)s: %(message)s"))
    structured = logging.StreamHandler(sys.stderr)
    structured.setFormatter(JsonFormatter())
    logger = logging.getLogger("taskvisor")
    logger.setLevel(logging.DEBUG)  # INFO would hide attempt starts, backoffs, requests
    logger.addHandler(text)
    logger.addHandler(structured)
    logger.propagate = False


async def main(short: bool = False) -> int:
    configure_logging()
    failures = 1 if short else 3

    async def fetch_rates(ctx: tv.TaskContext) -> None:
        if ctx.attempt <= failures:
            raise tv.Fail("rates API returned 503", exit_code=75)

    async def check_config() -> None:
        raise tv.Fatal("missing RATES_URL")

    specs = [
        tv.TaskSpec.restartable(
            "fetch-rates", fetch_rates, backoff=tv.BackoffPolicy.constant(0.05)
        ),
        tv.TaskSpec.once("check-config", check_config),
    ]
    # Quieter in production: LogSubscriber(level_map={tv.EventKind.ATTEMPT_SUCCEEDED: "DEBUG"})
    sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False), subscribers=[LogSubscriber()])
    await sup.run(specs)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
