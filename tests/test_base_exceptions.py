"""Task bodies that raise ``BaseException`` subclasses other than cancellation.

The decided behaviour (README "Limits", SPEC §1 "never swallowed or retried"):

- ``KeyboardInterrupt`` / ``SystemExit`` from a body: the attempt reports ``ATTEMPT_FAILED``,
  the task is never retried, its outcome is resolved ``FAILED`` with the exception as
  ``error`` — and only then does the exception propagate out of the event loop, exactly as
  Python propagates it out of any asyncio task. Whoever catches it (``asyncio.run``'s caller)
  finds the outcome already resolved; the other tasks keep their state and the supervisor
  can still be shut down cleanly on the same loop. Uncaught, it ends the process as usual
  (exit status of ``SystemExit``, the usual ``KeyboardInterrupt`` exit).
- Any other ``BaseException`` subclass (not an ``Exception``, not a cancellation): the task
  ends ``FAILED`` with it as ``error``, never retried, and it does not propagate: the outcome
  is where it is delivered (re-raising it would only leave it unretrieved in a runner task).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, Recorder, SupervisorFactory, check_task_events
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O


class Abort(BaseException):
    """A custom ``BaseException`` subclass."""


def make_body(exc: BaseException) -> Any:
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise exc

    def count() -> int:
        return calls

    return body, count


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), SystemExit(3)], ids=["KeyboardInterrupt", "SystemExit"]
)
def test_interrupt_in_a_body_resolves_failed_then_propagates(exc: BaseException) -> None:
    recorder = Recorder()
    body, calls = make_body(exc)
    seen: dict[str, Any] = {}

    async def main() -> None:
        sup = tv.Supervisor(
            tv.SupervisorConfig(grace=1.0, handle_signals=False), subscribers=[recorder]
        )
        seen["sup"] = sup
        async with sup:
            started = asyncio.Event()

            async def sibling(ctx: tv.TaskContext) -> None:
                started.set()
                await ctx.cancelled()

            seen["sibling"] = sup.add(tv.TaskSpec("sibling", sibling))
            await started.wait()
            seen["handle"] = sup.add(tv.TaskSpec.restartable("interrupting", body, backoff=FAST))
            await asyncio.Event().wait()  # ended by the exception leaving the loop

    with asyncio.Runner() as runner:
        with pytest.raises(type(exc)) as raised:
            runner.run(main())
        assert raised.value is exc
        # Resolved before the exception left the loop; not retried.
        handle: tv.TaskHandle = seen["handle"]
        outcome = handle.outcome
        assert outcome is not None
        assert outcome.kind is O.FAILED
        assert outcome.error is exc
        assert outcome.attempts == 1
        assert outcome.reason == (
            f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        )
        assert calls() == 1
        sup: tv.Supervisor = seen["sup"]
        # The rest of the supervisor is as it was, and shuts down cleanly on the same loop.
        assert [i.name for i in sup.list()] == ["sibling"]

        async def finish() -> tv.ShutdownReport:
            async with asyncio.timeout(GUARD):
                return await sup.shutdown()

        report = runner.run(finish())
        assert not report.grace_exceeded
        assert seen["sibling"].outcome.kind is O.CANCELED
    assert calls() == 1
    mine = [e for e in recorder.events if e.task == "interrupting"]
    assert [e.kind for e in mine] == [
        K.TASK_ADD_REQUESTED,
        K.TASK_ADDED,
        K.ATTEMPT_STARTING,
        K.ATTEMPT_FAILED,
        K.TASK_FINISHED,
        K.TASK_REMOVED,
    ]
    assert mine[3].reason == outcome.reason
    assert mine[4].outcome is O.FAILED
    assert check_task_events(recorder.events) == 2


SCRIPT = """
import asyncio, sys
import taskvisor as tv

HANDLE = None

async def body():
    await asyncio.sleep(0)
    raise {exc}

async def main():
    global HANDLE
    async with tv.Supervisor(tv.SupervisorConfig(grace=1.0, handle_signals=False)) as sup:
        HANDLE = sup.add(tv.TaskSpec.restartable("interrupting", body))
        await asyncio.Event().wait()

try:
    asyncio.run(main())
finally:
    o = HANDLE.outcome
    print("outcome", o.kind.value, type(o.error).__name__, o.attempts, flush=True)
"""


@pytest.mark.parametrize(
    ("exc", "status"),
    [("SystemExit(7)", {7}), ("KeyboardInterrupt()", {-signal.SIGINT, 130, 0xC000013A})],
    ids=["SystemExit", "KeyboardInterrupt"],
)
def test_uncaught_interrupt_ends_the_process_as_python_does(exc: str, status: set[int]) -> None:
    """In a real program (``asyncio.run``), the body's exception ends the process with its
    usual status, after the outcome was resolved."""
    script = textwrap.dedent(SCRIPT.format(exc=exc))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode in status, proc.stderr
    name = exc.split("(")[0]
    assert f"outcome failed {name} 1" in proc.stdout, proc.stdout + proc.stderr


async def test_other_base_exceptions_fail_the_task_without_retry_or_propagation(
    make_supervisor: SupervisorFactory, recorder: Recorder
) -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        sup = make_supervisor()
        abort = Abort("stop here")
        body, calls = make_body(abort)
        handle = sup.add(tv.TaskSpec.restartable("aborting", body, backoff=FAST))
        async with asyncio.timeout(GUARD):
            outcome = await handle
        assert outcome.kind is O.FAILED
        assert outcome.error is abort
        assert outcome.attempts == 1
        assert outcome.reason == "Abort: stop here"
        assert calls() == 1
        # The supervisor is unaffected: it still runs tasks.
        again = sup.add(tv.TaskSpec.once("after", make_body(ValueError("x"))[0]))
        async with asyncio.timeout(GUARD):
            assert (await again).kind is O.FAILED
        failed = await recorder.wait_for(K.ATTEMPT_FAILED, task="aborting")
        assert failed.reason == "Abort: stop here"
        await sup.shutdown()
        del handle, outcome, abort
        gc.collect()  # a task holding an unretrieved exception reports it when collected
    finally:
        loop.set_exception_handler(previous)
    assert errors == [], "nothing may be left unretrieved in a task"
    assert check_task_events(recorder.events) == 2
