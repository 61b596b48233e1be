"""Testing your own service with ``taskvisor.testing`` (``python -m examples.testing_kit``).

What a test of a supervised service usually needs, shown as a plain script:

- ``no_backoff()`` makes retries instant, whatever backoff the service configures (30 s here),
  so the test does not wait; in pytest, wrap it in a fixture::

      @pytest.fixture(autouse=True)
      def instant_retries():
          with taskvisor.testing.no_backoff():
              yield

- ``EventRecorder`` collects the events; ``await recorder.wait_for(kind, task=...)`` returns
  the matching event as soon as it arrives (no polling, no sleeps), and ``kinds(task=...)``
  gives the sequence to assert on.
"""

from __future__ import annotations

import asyncio
import sys

import taskvisor as tv
from taskvisor.testing import EventRecorder, no_backoff


def build_service(fail_times: int) -> tuple[tv.TaskSpec, list[int]]:
    """The code under test: a worker that fails a few times before its dependency is up."""
    calls: list[int] = []

    async def sync_inventory(ctx: tv.TaskContext) -> None:
        calls.append(ctx.attempt)
        if ctx.attempt <= fail_times:
            raise tv.Fail("inventory service unavailable", exit_code=75)

    spec = tv.TaskSpec.restartable(
        "sync-inventory", sync_inventory, backoff=tv.BackoffPolicy.constant(30.0)
    )
    return spec, calls


async def main(short: bool = False) -> int:
    fail_times = 2 if short else 5
    spec, calls = build_service(fail_times)
    recorder = EventRecorder()
    sup = tv.Supervisor(tv.SupervisorConfig(handle_signals=False), subscribers=[recorder])
    with no_backoff():
        async with asyncio.timeout(10), sup:
            handle = sup.add(spec)
            finished = await recorder.wait_for(tv.EventKind.TASK_FINISHED, task=spec.name)
            outcome = await handle

    assert outcome.ok, outcome
    assert outcome.attempts == fail_times + 1
    assert finished.outcome is tv.OutcomeKind.COMPLETED
    assert calls == list(range(1, fail_times + 2))
    failures = recorder.select(tv.EventKind.ATTEMPT_FAILED, task=spec.name)
    assert [e.exit_code for e in failures] == [75] * fail_times
    backoffs = recorder.select(tv.EventKind.BACKOFF_SCHEDULED, task=spec.name)
    assert all(e.delay == 0.0 for e in backoffs)  # the 30 s policy, skipped
    print("events:", " ".join(k.value for k in recorder.kinds(task=spec.name)))
    print(f"ok: flaky recovered after {fail_times} failures, no backoff waited")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
