"""``taskvisor.threaded``: blocking functions as task bodies, each attempt in its own thread."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time

import pytest

import taskvisor as tv
from conftest import FAST, GUARD, SupervisorFactory
from taskvisor import OutcomeKind as O

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class Flag:
    """An asyncio.Event that a worker thread can set."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def set_from_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        async with asyncio.timeout(GUARD):
            await self._event.wait()


def until_cancelled(ctx: tv.TaskContext) -> None:
    """The cooperative loop a threaded body is expected to run."""
    while not ctx.is_cancelled():
        time.sleep(0.001)  # stands for one short step of blocking work


def test_threaded_is_exported() -> None:
    assert "threaded" in tv.__all__
    assert tv.threaded.__module__ == "taskvisor"


async def test_runs_in_a_worker_thread_with_the_context(
    make_supervisor: SupervisorFactory,
) -> None:
    seen: dict[str, object] = {}

    def work(ctx: tv.TaskContext) -> str:
        seen["thread"] = threading.current_thread()
        seen["name"] = ctx.name
        seen["attempt"] = ctx.attempt
        seen["id"] = ctx.id
        return "ignored"

    sup = make_supervisor()
    handle = sup.add(tv.TaskSpec.once("blocking", tv.threaded(work)))
    async with asyncio.timeout(GUARD):
        outcome = await handle
    assert outcome.kind is O.COMPLETED
    thread = seen["thread"]
    assert isinstance(thread, threading.Thread)
    assert thread is not threading.main_thread()
    assert thread.daemon
    assert seen["name"] == "blocking"
    assert seen["attempt"] == 1
    assert seen["id"] == handle.id


async def test_a_function_without_parameters_is_accepted(
    make_supervisor: SupervisorFactory,
) -> None:
    calls: list[int] = []
    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("noarg", tv.threaded(lambda: calls.append(1))))
    assert outcome.kind is O.COMPLETED
    assert calls == [1]


async def test_contextvars_are_copied_into_the_thread(
    make_supervisor: SupervisorFactory,
) -> None:
    seen: list[str] = []
    sup = make_supervisor()
    token = request_id.set("req-42")
    try:
        spec = tv.TaskSpec.once("ctxvar", tv.threaded(lambda: seen.append(request_id.get())))
    finally:
        request_id.reset(token)
    request_id.set("req-42")  # add() runs the body in a copy of the current context
    async with asyncio.timeout(GUARD):
        await sup.add(spec)
    assert seen == ["req-42"]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (tv.Fail("disk full", exit_code=28), O.FAILED),
        (tv.Fatal("bad credentials"), O.FATAL),
        (ValueError("not a number"), O.FAILED),
    ],
)
async def test_exceptions_in_the_thread_end_the_attempt_as_usual(
    make_supervisor: SupervisorFactory, exc: Exception, kind: O
) -> None:
    def boom() -> None:
        raise exc

    sup = make_supervisor()
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(tv.TaskSpec.once("boom", tv.threaded(boom)))
    assert outcome.kind is kind
    assert outcome.error is exc
    if isinstance(exc, tv.TaskError):
        assert outcome.exit_code == exc.exit_code


async def test_failures_are_retried_in_fresh_threads(make_supervisor: SupervisorFactory) -> None:
    threads: list[threading.Thread] = []

    def flaky(ctx: tv.TaskContext) -> None:
        threads.append(threading.current_thread())
        if ctx.attempt < 3:
            raise tv.Fail("not yet")

    sup = make_supervisor()
    spec = tv.TaskSpec.restartable("flaky", tv.threaded(flaky), backoff=FAST)
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(spec)
    assert outcome.kind is O.COMPLETED
    assert outcome.attempts == 3
    assert len(set(map(id, threads))) == 3


async def test_a_stop_is_seen_through_is_cancelled(make_supervisor: SupervisorFactory) -> None:
    started = Flag()
    saw_stop = threading.Event()

    def work(ctx: tv.TaskContext) -> None:
        started.set_from_thread()
        until_cancelled(ctx)
        saw_stop.set()

    sup = make_supervisor()
    handle = sup.add(tv.TaskSpec.once("coop", tv.threaded(work)))
    await started.wait()
    async with asyncio.timeout(GUARD):
        assert await sup.cancel("coop") is True
        outcome = await handle
    # The attempt ended only after the function returned; returning after a stop still
    # means the task was stopped.
    assert saw_stop.is_set()
    assert outcome.kind is O.CANCELED


async def test_an_attempt_timeout_is_seen_by_the_thread_and_attempts_never_overlap(
    make_supervisor: SupervisorFactory,
) -> None:
    lock = threading.Lock()
    running = 0
    most = 0
    ended_by_flag: list[int] = []

    def work(ctx: tv.TaskContext) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            until_cancelled(ctx)
            ended_by_flag.append(ctx.attempt)
        finally:
            with lock:
                running -= 1

    sup = make_supervisor()
    spec = tv.TaskSpec.restartable(
        "slow", tv.threaded(work), timeout=0.02, max_retries=2, backoff=FAST
    )
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(spec)
    assert outcome.kind is O.FAILED
    assert outcome.reason is not None
    assert "timed out" in outcome.reason
    assert ended_by_flag == [1, 2, 3]
    assert most == 1


async def test_a_thread_that_ignores_the_stop_is_abandoned_after_grace(
    make_supervisor: SupervisorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskvisor")
    started = Flag()
    release = threading.Event()
    worker: list[threading.Thread] = []

    def stubborn() -> None:
        worker.append(threading.current_thread())
        started.set_from_thread()
        release.wait(GUARD)  # ignores ctx entirely

    sup = make_supervisor(grace=0.01)
    handle = sup.add(tv.TaskSpec.once("stubborn", tv.threaded(stubborn)))
    await started.wait()
    try:
        async with asyncio.timeout(GUARD):
            report = await sup.shutdown()
            outcome = await handle
        assert report.stuck == ("stubborn",)
        assert outcome.kind is O.FORCE_ABORTED
        assert worker[0].is_alive()  # a thread cannot be killed: it runs on
        assert any("abandoned" in r.getMessage() for r in caplog.records)
    finally:
        release.set()
        await asyncio.to_thread(worker[0].join, GUARD)
    assert not worker[0].is_alive()


def test_async_functions_and_non_callables_are_refused() -> None:
    async def already_async(ctx: tv.TaskContext) -> None:
        return None

    with pytest.raises(TypeError, match="pass an async function to TaskSpec directly"):
        tv.threaded(already_async)
    with pytest.raises(TypeError, match="callable"):
        tv.threaded(42)  # type: ignore[arg-type]


def test_the_body_is_accepted_by_taskspec() -> None:
    def work(ctx: tv.TaskContext) -> None:
        return None

    body = tv.threaded(work)
    assert tv.TaskSpec.once("t", body).fn is body
    assert "work" in repr(body)
