"""Making sure stops end: force and abandon timers, the shutdown's grace wait, OS signals.

A stop request cancels a task's runner. ``Stopper.arm`` then gives it ``grace`` seconds;
``force`` cancels it again (its outcome becomes ``FORCE_ABORTED``) and, ``FORCE_WAIT`` later,
``abandon`` resolves a body that swallows every cancellation without waiting for it any
longer. At shutdown one grace wait (``Stopper.wait_all``) does that for every task at once,
instead of a timer each. Nothing here decides *whether* a task stops: the supervisor does.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import _attempt as attempt
from ._actor import stopped_outcome
from ._fanout import Bus
from ._outcome import TaskOutcome
from ._registry import TaskRecord

GRACE_OVER = "force-stopped after the grace period"
"""Why a task is forced when its grace period ran out (the outcome's reason)."""

FORCE_WAIT = 1.0
"""After a force-stop, how long to wait for a body that swallows cancellation before the
supervisor stops waiting for it, resolves it ``FORCE_ABORTED`` and moves on."""


class Stopper:
    """The force and abandon timers of one supervisor's tasks."""

    __slots__ = ("_bus", "_cleanup", "_grace", "_loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        grace: float,
        bus: Bus,
        cleanup: Callable[[TaskRecord, TaskOutcome], None],
    ) -> None:
        self._loop = loop
        self._grace = grace
        self._bus = bus
        self._cleanup = cleanup

    def arm(self, rec: TaskRecord) -> None:
        """``rec``'s stop was requested: force it if it is still running ``grace`` from now."""
        self._add_timer(rec, self._loop.call_later(self._grace, self.force, rec))

    @staticmethod
    def _add_timer(rec: TaskRecord, timer: asyncio.TimerHandle) -> None:
        if rec.timers is None:
            rec.timers = [timer]
        else:
            rec.timers.append(timer)

    def force(self, rec: TaskRecord, why: str = GRACE_OVER) -> None:
        """Grace is over: cancel again, and stop waiting after ``FORCE_WAIT``.

        ``why`` becomes the outcome's reason (a second signal cut the grace period short).
        """
        if rec.finalized or rec.forced:
            return
        rec.forced = why
        runner = rec.runner
        # A runner that has not begun would die before its first line, skipping its cleanup;
        # it sees the stop request at its first step instead.
        if rec.started and runner is not None and not runner.done():
            runner.cancel()
        self._add_timer(rec, self._loop.call_later(FORCE_WAIT, self.abandon, rec))

    def arm_restart(self, rec: TaskRecord, restarted: asyncio.Future[bool]) -> None:
        """``Supervisor.restart`` cancelled ``rec``'s running attempt: make sure it ends.

        As under a stop: an attempt still running ``grace`` later is cancelled again, and a
        body that swallows that too is given up on ``FORCE_WAIT`` later (``FORCE_ABORTED``;
        the restart did not happen). Both timers go once the restart is over.
        """
        number = rec.attempt
        handles: list[asyncio.TimerHandle] = []

        def still_running() -> bool:
            return (
                rec.restarted is restarted
                and not rec.finalized
                and not rec.requested
                and rec.attempt == number
                and rec.attempt_started is not None
            )

        def force() -> None:
            if still_running():
                runner = rec.runner
                if runner is not None and not runner.done():
                    runner.cancel()
                handles.append(self._loop.call_later(FORCE_WAIT, give_up))

        def give_up() -> None:
            if still_running():
                rec.forced = GRACE_OVER
                rec.request()  # whatever the body does later, no further attempt starts
                self.abandon(rec)

        def over(_: asyncio.Future[bool]) -> None:
            for handle in handles:
                handle.cancel()

        handles.append(self._loop.call_later(self._grace, force))
        restarted.add_done_callback(over)

    def abandon(self, rec: TaskRecord) -> None:
        """The body swallows cancellation: resolve it ``FORCE_ABORTED`` and let it go."""
        if rec.finalized:
            return
        # Its attempt never ends on its own terms: close it here, so that every
        # ATTEMPT_STARTING still gets exactly one terminal event.
        attempt.canceled(rec, self._bus)
        self._cleanup(rec, stopped_outcome(rec))

    async def wait_all(
        self,
        records: Sequence[TaskRecord],
        skip: asyncio.Event,
        exceeded: Callable[[tuple[str, ...]], str],
    ) -> tuple[str, ...]:
        """The shutdown's wait: up to ``grace`` for every record (less if ``skip`` is set).

        Tasks still running then are passed to ``exceeded`` (sorted names; it says why they
        are forced), forced, given ``FORCE_WAIT`` more, and abandoned if they still run.
        Returns those names.
        """
        pending = [rec for rec in records if not rec.finalized]
        if not pending:
            return ()
        waiters: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(all_done(pending)),
            asyncio.ensure_future(skip.wait()),
        }
        await asyncio.wait(waiters, timeout=self._grace, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        # A task's own force timer (armed by an earlier stop request) can fire just before
        # this wait ends and finish it FORCE_ABORTED: it was still running at the end of
        # grace too.
        stuck = tuple(sorted(rec.name for rec in pending if rec.forced or not rec.finalized))
        why = exceeded(stuck) if stuck else GRACE_OVER
        left = [rec for rec in pending if not rec.finalized]
        for rec in left:
            self.force(rec, why)
        if left:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_done(left), FORCE_WAIT)
        for rec in left:
            self.abandon(rec)
        return stuck


async def all_done(records: Sequence[TaskRecord]) -> None:
    """Return once every record's outcome is resolved."""
    for rec in records:
        if rec.outcome is None:
            await rec.outcome_future()


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop, handler: Callable[[signal.Signals], None]
) -> Callable[[], None]:
    """Route SIGINT and SIGTERM to ``handler`` on ``loop``; return what undoes it.

    Only from the main thread, and where the loop supports it (not on Windows); elsewhere
    nothing is installed. Undoing gives back the application's own Python-level handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return _nothing
    installed: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if getattr(previous, "__module__", "").startswith("asyncio"):
            previous = None  # another loop's internal handler: nothing of ours to give back
        try:
            loop.add_signal_handler(sig, handler, sig)
        except (NotImplementedError, RuntimeError, ValueError):  # e.g. Windows
            continue
        installed.append((sig, previous))

    def restore() -> None:
        for sig, previous in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
                # remove_signal_handler resets to the default action: give back the
                # application's own Python-level handler.
                if previous is not None:
                    signal.signal(sig, previous)

    return restore


def _nothing() -> None:
    pass
