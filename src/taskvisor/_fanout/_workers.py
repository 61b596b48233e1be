"""Subscribers that run apart from the publisher: an async worker each, and blocking threads.

An ``async def on_event`` (or a sync one that returned an awaitable) is awaited by a worker
task of its own, one event at a time. A ``blocking = True`` subscriber's sync ``on_event``
runs in a dedicated thread of its own, fed by a worker task in batches (one thread hop per
batch, not per event). Either way the events wait in the subscriber's ``Channel.queue``
until handled, so its capacity bound stays exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue as _queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from .._events import Event, EventKind
from .._subscriber import EventCallback, SubscriberRef
from ._channel import Channel

_T = TypeVar("_T")


class Reporter(Protocol):
    """What a worker tells the bus."""

    def panicked(self, ref: SubscriberRef, kind: EventKind | None, exc: BaseException) -> None:
        """``on_event`` raised."""

    def drained(self, ch: Channel) -> None:
        """The queue has been drained empty (an overflow episode may end)."""


class SubscriberThread:
    """The dedicated thread of a ``blocking`` subscriber: runs its calls one at a time.

    A daemon thread, not a ``ThreadPoolExecutor`` (whose threads are joined when the
    interpreter exits): a subscriber stuck in ``on_event`` must not keep the process alive
    after shutdown. Python cannot kill a thread; a daemon thread at least lets the process end.
    """

    __slots__ = ("_jobs",)

    def __init__(self, name: str) -> None:
        self._jobs: _queue.SimpleQueue[Callable[[], None] | None] = _queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def call(self, fn: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        """Run ``fn(*args)`` in the thread; what it returns or raises resolves the future."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_T] = loop.create_future()

        def job() -> None:
            # RuntimeError from call_soon_threadsafe: the loop is closed, nobody waits.
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the loop, never swallowed here
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, fut, None, exc)
            else:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, fut, result, None)

        self._jobs.put(job)
        return fut

    def stop(self) -> None:
        """End the thread once its current call returns; nothing queued after runs."""
        self._jobs.put(None)


def _settle(fut: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


def _deliver(
    call: EventCallback, batch: list[Event], ch: Channel
) -> list[tuple[EventKind, BaseException]]:
    """Run in a blocking subscriber's thread: hand it a batch, collect what it raised.

    Stops early once the channel is closed (the drain deadline passed while this thread was
    stuck): what is left then is dropped, as for any subscriber.
    """
    failures: list[tuple[EventKind, BaseException]] = []
    for event in batch:
        if ch.closed:
            break
        try:
            call(event)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # reported as SUBSCRIBER_PANICKED back on the loop
            failures.append((event.kind, exc))
    return failures


def _own_cancellation() -> bool:
    """Whether the current task itself is being cancelled (not a subscriber's stray error)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def work(
    bus: Reporter,
    ref: SubscriberRef,
    ch: Channel,
    thread: SubscriberThread | None,
    pending: Awaitable[Any] | None = None,
) -> None:
    """The worker of one subscriber: deliver its queue in order until the bus closes it.

    ``pending``: a delivery already begun (a sync ``on_event`` that returned an awaitable),
    awaited first.
    """
    queue = ch.queue
    call = ref.call
    try:
        if pending is not None:
            try:
                await pending
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and _own_cancellation():
                    raise
                bus.panicked(ref, None, exc)
        while True:
            if thread is not None and queue:
                batch = list(queue)
                failures = await thread.call(_deliver, call, batch, ch)
                for _ in batch:
                    if queue:
                        queue.popleft()
                for kind, error in failures:
                    bus.panicked(ref, kind, error)
                continue
            while queue and thread is None:
                event = queue.popleft()
                try:
                    result = call(event)
                    if result is not None and inspect.isawaitable(result):
                        await result
                except (KeyboardInterrupt, SystemExit, GeneratorExit):
                    raise
                except BaseException as exc:  # a subscriber's bug must not stop its worker
                    if isinstance(exc, asyncio.CancelledError) and _own_cancellation():
                        raise  # the worker itself is being cancelled (the drain timed out)
                    bus.panicked(ref, event.kind, exc)
            bus.drained(ch)
            if queue:  # its overflow report
                continue
            if ch.closing or ch.closed:
                return
            await ch.wait()
    finally:
        ch.close()
