"""``threaded(fn)``: a blocking function as a task body, each attempt in a thread of its own.

Limits, stated plainly: Python cannot kill a thread. A stop (or an attempt ``timeout``) only
sets the flag that ``ctx.is_cancelled()`` reads; the function must check it and return. The
attempt waits for the thread to finish, so a timed-out attempt ends when the function
notices. A function that never checks holds its task until the supervisor's force-stop,
after which the thread is abandoned (still running, a daemon thread that does not keep the
process alive) and the task finishes ``FORCE_ABORTED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from ._context import StopSignal, TaskContext
from ._spec import _takes_context

_log = logging.getLogger("taskvisor")


def threaded(
    fn: Callable[[TaskContext], Any] | Callable[[], Any],
) -> Callable[[TaskContext], Awaitable[None]]:
    """Turn a blocking ``fn(ctx)`` (or ``fn()``) into a task body run in a worker thread.

    Every attempt runs ``fn`` in a new daemon thread, with the caller's ``contextvars``. What
    it raises counts as for any body (``Fail``, ``Fatal``, other exceptions); what it
    returns is ignored. Cancellation is cooperative: ``ctx.is_cancelled()`` turns true when
    the task is asked to stop or the attempt times out, and the attempt ends once ``fn``
    returns. ``ctx.sleep``/``ctx.cancelled`` are coroutines and cannot be used in the thread.
    """
    probe = fn
    while isinstance(probe, functools.partial):
        probe = probe.func
    if not callable(fn):
        raise TypeError(f"fn must be a callable, got {type(fn).__name__}")
    if (
        inspect.iscoroutinefunction(probe)
        or inspect.isasyncgenfunction(probe)
        or inspect.iscoroutinefunction(getattr(type(probe), "__call__", None))  # noqa: B004
    ):
        raise TypeError(
            "threaded() runs a blocking function in a thread; pass an async function to "
            "TaskSpec directly"
        )
    return _Threaded(fn, _takes_context(fn))


class _Threaded:
    """The task body ``threaded()`` returns (internal)."""

    # No ``__wrapped__``: ``inspect.signature`` would follow it to ``fn`` and hide ``ctx``.
    __slots__ = ("_takes_context", "fn")

    def __init__(self, fn: Callable[..., Any], takes_context: bool) -> None:
        self.fn = fn
        self._takes_context = takes_context

    def __repr__(self) -> str:
        return f"threaded({self.fn!r})"

    async def __call__(self, ctx: TaskContext) -> None:
        loop = asyncio.get_running_loop()
        # The thread's own flag: set by a stop request *and* by this attempt's timeout,
        # neither of which the thread could otherwise see.
        stop = StopSignal()
        if ctx.is_cancelled():
            stop.request()
        thread_ctx = TaskContext(ctx.id, ctx.name, ctx.attempt, stop)
        args: tuple[Any, ...] = (thread_ctx,) if self._takes_context else ()
        result: asyncio.Future[None] = loop.create_future()
        context = contextvars.copy_context()
        call = self.fn

        def settle(exc: BaseException | None) -> None:
            if result.done():
                return
            if exc is None:
                result.set_result(None)
            else:
                result.set_exception(exc)

        def target() -> None:
            try:
                context.run(call, *args)
            except BaseException as exc:  # handed to the loop: nothing is swallowed here
                outcome: BaseException | None = exc
            else:
                outcome = None
            # A closed loop means nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, outcome)

        thread = threading.Thread(
            target=target, name=f"taskvisor:{ctx.name}#{ctx.attempt}", daemon=True
        )
        thread.start()
        try:
            await asyncio.shield(result)
        except asyncio.CancelledError:
            stop.request()
            if not result.done():
                try:
                    await asyncio.shield(result)
                except asyncio.CancelledError:
                    # Forced: stop waiting. The thread runs on; its result is dropped.
                    result.add_done_callback(_discard)
                    _log.warning(
                        "task %r: thread %s ignored the stop request and was abandoned",
                        ctx.name,
                        thread.name,
                    )
                    raise
            # Whatever the thread returned or raised after the stop, the attempt was stopped.
            result.add_done_callback(_discard)
            raise


def _discard(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
