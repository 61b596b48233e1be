"""The ``Supervisor``: admission, management calls, per-task cleanup and the shared shutdown.

Data flow: ``add``/``run``/controller → ``_register`` (registry + ``TASK_ADDED``) → one
runner task per registered task (``_actor.drive``) → ``_cleanup`` (``TASK_FINISHED``, name
released, ``TASK_REMOVED``, outcome resolved, controller told). Stop requests go through
``_request_stop``; force and abandon timers make sure nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import _attempt as attempt
from ._actor import SlotPool, drive, stopped_outcome
from ._config import ShutdownReport, SupervisorConfig
from ._context import TaskId, new_task_id
from ._errors import (
    AlreadyRunning,
    ControllerNotConfigured,
    SupervisorClosed,
    TaskAlreadyExists,
    TaskTerminationTimeout,
)
from ._events import EventKind, new_event
from ._fanout import Bus, EventStream
from ._outcome import OutcomeKind, RejectionKind, TaskHandle, TaskOutcome
from ._registry import Registry, TaskInfo, TaskRecord, TaskState
from ._spec import TaskDefaults, TaskSpec
from ._subscriber import DEFAULT_QUEUE_CAPACITY, as_subscriber
from ._validate import check_duration, check_int

# Enum members as module constants: ``EventKind.X`` costs ~75 ns on CPython 3.11 (the enum
# metaclass's attribute hook), a module global ~5 ns; these are read on every task's path.
_ADD_REQUESTED = EventKind.TASK_ADD_REQUESTED
_ADDED = EventKind.TASK_ADDED
_SUCCEEDED = EventKind.ATTEMPT_SUCCEEDED
_REMOVED = EventKind.TASK_REMOVED
_REMOVE_REQUESTED = EventKind.TASK_REMOVE_REQUESTED

if TYPE_CHECKING:
    from ._controller import Controller, ControllerConfig, ControllerSnapshot, ControllerSpec

FORCE_WAIT = 1.0
"""After a force-stop, how long to wait for a body that swallows cancellation before the
supervisor stops waiting for it, resolves it ``FORCE_ABORTED`` and moves on."""

TaskKey = TaskId | int | str
_List = list  # `Supervisor.list` shadows the builtin inside the class body


def _check_key(key: object) -> TaskKey:
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"id_or_name must be a TaskId, an int or a str, got {type(key).__name__}")
    return key


class Supervisor:
    """Runs async task bodies under restart, backoff, timeout and shutdown policies.

    Use ``await sup.run(specs)`` to supervise a batch until it finishes or a signal arrives,
    or ``async with sup:`` and manage tasks with ``add``/``cancel``/``remove``/``list``.
    """

    def __init__(
        self,
        config: SupervisorConfig | None = None,
        defaults: TaskDefaults | None = None,
        subscribers: Iterable[object] = (),
        controller: ControllerConfig | None = None,
    ) -> None:
        config = SupervisorConfig() if config is None else config
        defaults = TaskDefaults() if defaults is None else defaults
        if not isinstance(config, SupervisorConfig):
            raise TypeError(f"config must be a SupervisorConfig, got {type(config).__name__}")
        if not isinstance(defaults, TaskDefaults):
            raise TypeError(f"defaults must be a TaskDefaults, got {type(defaults).__name__}")
        if isinstance(subscribers, str | bytes) or not isinstance(subscribers, Iterable):
            raise TypeError(
                f"subscribers must be an iterable of subscribers, got {type(subscribers).__name__}"
            )
        self._config = config
        self._defaults = defaults
        subscribers = list(subscribers)
        self._bus = Bus([as_subscriber(s) for s in subscribers])
        self._controller: Controller | None = None
        if controller is not None:
            from ._controller import Controller, ControllerConfig

            if not isinstance(controller, ControllerConfig):
                raise TypeError(
                    "controller must be a ControllerConfig or None, "
                    f"got {type(controller).__name__}"
                )
            self._controller = Controller(controller, self)
        self._registry = Registry()
        self._finish = self._cleanup  # one bound method for every runner, not one per task
        self._slots = SlotPool(config.max_concurrent) if config.max_concurrent is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._closing = False
        self._running = False
        self._shutdown_task: asyncio.Task[ShutdownReport] | None = None
        self._skip_grace: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None  # set whenever a task is cleaned up
        for sub in subscribers:  # the optional hook (see ``Subscriber``), once fully built
            on_attach = getattr(sub, "on_attach", None)
            if callable(on_attach):
                on_attach(self)

    # ------------------------------------------------------------------ lifecycle

    def _bind(self) -> asyncio.AbstractEventLoop:
        """Attach to the running loop on first use; refuse calls from any other thread."""
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "the supervisor must be used from inside a running asyncio event loop"
                ) from None
            self._loop = loop
            self._thread = threading.get_ident()
            self._skip_grace = asyncio.Event()
            self._changed = asyncio.Event()
            self._bus.start()
        elif threading.get_ident() != self._thread:
            raise RuntimeError(
                "Supervisor methods must be called from the event loop's thread; "
                "use loop.call_soon_threadsafe or asyncio.run_coroutine_threadsafe"
            )
        else:
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                raise RuntimeError(
                    "this supervisor belongs to the event loop it was started on; "
                    "build a new Supervisor for another loop (e.g. a second asyncio.run)"
                )
        return loop

    def _check_thread(self) -> None:
        if self._thread is not None and threading.get_ident() != self._thread:
            self._bind()

    async def start(self) -> None:
        """Start the supervisor on the running loop (``async with`` does this)."""
        self._bind()
        if self._closing:
            raise SupervisorClosed("the supervisor has been shut down")

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    @property
    def config(self) -> SupervisorConfig:
        """The supervisor's settings."""
        return self._config

    @property
    def defaults(self) -> TaskDefaults:
        """What specs inherit."""
        return self._defaults

    @property
    def closed(self) -> bool:
        """Whether shutdown has begun (no more admissions)."""
        return self._closing

    # ------------------------------------------------------------------ admission

    def add(self, spec: TaskSpec) -> TaskHandle:
        """Register ``spec`` and start it; its name must not be registered already."""
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"spec must be a TaskSpec, got {type(spec).__name__}")
        self._bind()
        if self._closing:
            raise SupervisorClosed("the supervisor is shutting down; no more tasks are admitted")
        bus = self._bus
        if bus.listening:
            bus.emit(_ADD_REQUESTED, spec.name)
        if self._registry.has_name(spec.name):
            self._reject(spec.name, None, RejectionKind.ALREADY_EXISTS)
            raise TaskAlreadyExists(spec.name)
        rec = self._register(spec, new_task_id(), None, None)
        return TaskHandle(rec.id, rec.name, rec, self.cancel)

    def _reject(self, name: str, task_id: TaskId | None, rejection: RejectionKind) -> None:
        if self._bus.listening:
            self._bus.publish(
                new_event(
                    EventKind.TASK_ADD_FAILED,
                    name,
                    task_id,
                    rejection=rejection,
                    outcome=OutcomeKind.REJECTED,
                )
            )

    def _handle(
        self, task_id: TaskId, name: str, future: asyncio.Future[TaskOutcome]
    ) -> TaskHandle:
        return TaskHandle(task_id, name, future, self.cancel)

    def _register(
        self,
        spec: TaskSpec,
        task_id: TaskId,
        future: asyncio.Future[TaskOutcome] | None,
        on_cleanup: Callable[[TaskRecord], None] | None,
    ) -> TaskRecord:
        """Register and start one task whose name is known to be free (internal)."""
        rec = self._enroll(spec, task_id, future, on_cleanup)
        if self._bus.listening:
            self._bus.emit(_ADDED, rec.name, task_id)
        self._launch(rec)
        return rec

    def _enroll(
        self,
        spec: TaskSpec,
        task_id: TaskId,
        future: asyncio.Future[TaskOutcome] | None,
        on_cleanup: Callable[[TaskRecord], None] | None,
    ) -> TaskRecord:
        """Register one task whose name is known to be free, without starting it (internal)."""
        rec = TaskRecord(task_id, spec, future, on_cleanup)
        self._registry.insert(rec)
        return rec

    def _launch(self, rec: TaskRecord) -> None:
        """Start the runner of a registered task, after its ``TASK_ADDED``.

        After: with an eager task factory, the body may run inside ``create_task``.
        """
        loop = self._loop
        assert loop is not None
        rec.runner = loop.create_task(
            drive(rec, self._defaults, self._bus, self._slots, self._finish),
            name=f"taskvisor:{rec.name}",
        )

    def _cleanup(self, rec: TaskRecord, outcome: TaskOutcome, just_succeeded: bool = False) -> None:
        """The one cleanup of a task; later calls (an abandoned runner ending) do nothing.

        ``just_succeeded``: the last attempt has just succeeded and is still open. It is closed
        here, and its ``ATTEMPT_SUCCEEDED`` goes out with ``TASK_FINISHED`` (``_actor.drive``).
        """
        ended = time.perf_counter() if just_succeeded else 0.0
        if rec.finalized:
            return
        rec.finalized = True
        if rec.timers:
            for timer in rec.timers:
                timer.cancel()
            rec.timers = None
        if self._slots is not None:
            self._slots.release(rec)
        self._registry.release(rec)
        bus = self._bus
        last = duration = None
        if just_succeeded:
            last = rec.attempt
            duration = attempt.end(rec, ended)
        if bus.listening:
            # TASK_FINISHED, then TASK_REMOVED (the name is released by now)
            now = ended if just_succeeded else None
            if outcome.reason is None and outcome.exit_code is None:
                bus.emit_closing(rec.name, rec.id, outcome.kind, last, duration, now)
            else:
                if last is not None:
                    bus.emit(_SUCCEEDED, rec.name, rec.id, last, duration, now=now)
                bus.publish(
                    new_event(
                        EventKind.TASK_FINISHED,
                        rec.name,
                        rec.id,
                        outcome=outcome.kind,
                        reason=outcome.reason,
                        exit_code=outcome.exit_code,
                    )
                )
                bus.emit(_REMOVED, rec.name, rec.id)
        rec.runner = None  # the runner is ending (it called us); drop the reference
        rec.resolve(outcome)
        if rec.on_cleanup is not None:
            rec.on_cleanup(rec)
        changed = self._changed
        if changed is not None:
            changed.set()

    # ------------------------------------------------------------------ stopping

    def _request_stop(self, rec: TaskRecord, *, arm_force: bool = True) -> bool:
        """Ask ``rec`` to stop; True only for the request that did it.

        ``arm_force`` starts the task's own grace timer; the shutdown passes False because
        its own grace wait forces every task still running (one timer instead of thousands).
        """
        if rec.finalized or rec.requested:
            return False
        rec.request()
        if self._bus.listening:
            self._bus.emit(_REMOVE_REQUESTED, rec.name, rec.id)
        runner = rec.runner
        # A runner that has not begun sees the request at its first step; cancelling it now
        # would skip its coroutine entirely, and with it the cleanup.
        if rec.started and runner is not None and not runner.done():
            runner.cancel()
            if arm_force:
                loop = self._loop
                assert loop is not None
                rec.timers = [loop.call_later(self._config.grace, self._force, rec)]
        return True

    def _force(self, rec: TaskRecord) -> None:
        """Grace is over: cancel again, and stop waiting after ``FORCE_WAIT``."""
        if rec.finalized or rec.forced:
            return
        rec.forced = True
        runner = rec.runner
        # A runner that has not begun would die before its first line, skipping its cleanup;
        # it sees the stop request at its first step instead.
        if rec.started and runner is not None and not runner.done():
            runner.cancel()
        loop = self._loop
        assert loop is not None
        timer = loop.call_later(FORCE_WAIT, self._abandon, rec)
        if rec.timers is None:
            rec.timers = [timer]
        else:
            rec.timers.append(timer)

    def _abandon(self, rec: TaskRecord) -> None:
        """The body swallows cancellation: resolve it ``FORCE_ABORTED`` and let it go."""
        if rec.finalized:
            return
        # The attempt never ends on its own terms: close it here, so that every
        # ATTEMPT_STARTING still gets exactly one terminal event.
        attempt.canceled(rec, self._bus)
        self._cleanup(rec, stopped_outcome(rec))

    async def cancel(self, id_or_name: TaskKey, timeout: float | None = None) -> bool:
        """Stop a task and wait for its cleanup; True only for the caller whose request stopped it.

        False for an unknown or finished task, or one whose stop was already requested (that
        caller still waits). With a ``timeout`` that expires, raises ``TaskTerminationTimeout``;
        the stop still proceeds. Also finds a queued controller submission.
        """
        key = _check_key(id_or_name)
        t = check_duration("timeout", timeout, allow_none=True)
        self._check_thread()
        rec = self._registry.lookup(key)
        if rec is None:
            return self._controller.remove_queued(key) if self._controller is not None else False
        mine = self._request_stop(rec)
        if rec.outcome is None:
            future = rec.outcome_future()
            if t is None:
                await future
            else:
                try:
                    await asyncio.wait_for(future, t)
                except TimeoutError:
                    raise TaskTerminationTimeout(rec.id, t) from None
        return mine

    def remove(self, id_or_name: TaskKey) -> bool:
        """Request a task's stop without waiting; True only for the request that stopped it."""
        key = _check_key(id_or_name)
        self._check_thread()
        rec = self._registry.lookup(key)
        if rec is None:
            return self._controller.remove_queued(key) if self._controller is not None else False
        return self._request_stop(rec)

    # ------------------------------------------------------------------ reading

    def list(self) -> _List[TaskInfo]:
        """Every registered task, sorted by id."""
        self._check_thread()
        return [rec.info() for rec in self._registry.records()]

    def get(self, id_or_name: TaskKey) -> TaskInfo | None:
        """The registered task with this id or name, if any."""
        key = _check_key(id_or_name)
        self._check_thread()
        rec = self._registry.lookup(key)
        return None if rec is None else rec.info()

    def is_alive(self, name: str) -> bool:
        """Whether a task of this name is registered and not finished."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._check_thread()
        return self._registry.has_name(name)

    def state_counts(self) -> dict[TaskState, int]:
        """How many registered tasks are in each ``TaskState`` (every state present).

        Read-only and safe from any thread (a metrics scrape): it reads a copy of the registry.
        """
        counts = dict.fromkeys(TaskState, 0)
        for rec in self._registry:  # iterating the registry copies its records atomically
            counts[rec.info().state] += 1
        return counts

    def event_counts(self) -> Mapping[EventKind, int]:
        """How many events of each kind this supervisor has published (every kind present).

        Counting starts at the first call (until then it costs nothing; a subscriber that needs
        the counts, like ``PrometheusSubscriber``, asks when it is attached). The result is a
        live, read-only view: it keeps counting (``dict(...)`` takes a snapshot), stays
        readable after the supervisor is gone, and can be read from any thread. Events are
        published only while a subscriber or an ``events()`` stream is attached; those a
        subscriber's ``event_kinds`` leaves out, or that nobody gets, are counted all the same.
        """
        return self._bus.count_events()

    def events(self, capacity: int = DEFAULT_QUEUE_CAPACITY) -> EventStream:
        """An async iterator of every event published from now on; ends after shutdown."""
        check_int("capacity", capacity, minimum=1)
        self._check_thread()
        return self._bus.stream(capacity)

    # ------------------------------------------------------------------ controller

    def submit(self, spec: ControllerSpec) -> TaskHandle:
        """Hand a ``ControllerSpec`` to the controller; returns its handle at once."""
        if self._controller is None:
            raise ControllerNotConfigured("this supervisor was built without a controller")
        self._bind()
        if self._closing:
            raise SupervisorClosed("the supervisor is shutting down; no more tasks are admitted")
        return self._controller.submit(spec)

    def controller_snapshot(self) -> ControllerSnapshot | None:
        """The controller's slots and queues, or ``None`` without a controller."""
        self._check_thread()
        return None if self._controller is None else self._controller.snapshot()

    # ------------------------------------------------------------------ run & shutdown

    async def run(self, specs: Iterable[TaskSpec]) -> ShutdownReport:
        """Admit ``specs`` as one batch, supervise until done, shut down, return the report.

        Done: every task finished (tasks added meanwhile included), a signal arrived, or
        ``shutdown()`` was called.
        """
        if isinstance(specs, TaskSpec) or not isinstance(specs, Iterable):
            raise TypeError(f"specs must be an iterable of TaskSpec, got {type(specs).__name__}")
        batch = _List(specs)
        for i, spec in enumerate(batch):
            if not isinstance(spec, TaskSpec):
                raise TypeError(f"specs[{i}] must be a TaskSpec, got {type(spec).__name__}")
        self._bind()
        if self._running:
            raise AlreadyRunning("Supervisor.run is already active")
        if self._closing:
            raise SupervisorClosed("the supervisor has been shut down")
        self._admit_batch(batch)
        self._running = True
        restore = self._install_signal_handlers()
        try:
            try:
                await self._wait_finished()
            except asyncio.CancelledError:
                # Like a task group: a cancelled run leaves no task behind. Shut down (a
                # second cancellation skips the rest of the grace period), then re-raise.
                shutting = self._begin_shutdown("run cancelled")
                while not shutting.done():
                    try:
                        await asyncio.shield(shutting)
                    except asyncio.CancelledError:
                        assert self._skip_grace is not None
                        self._skip_grace.set()
                raise
            return await self.shutdown()
        finally:
            restore()
            self._running = False

    def _admit_batch(self, batch: _List[TaskSpec]) -> None:
        bus = self._bus
        names = [spec.name for spec in batch] if bus.listening else []
        if names:
            bus.emit_each(_ADD_REQUESTED, names)
        seen: set[str] = set()
        conflicts: set[str] = set()
        first: str | None = None
        for spec in batch:
            if spec.name in seen or self._registry.has_name(spec.name):
                conflicts.add(spec.name)
                if first is None:
                    first = spec.name
            seen.add(spec.name)
        if first is not None:
            for spec in batch:
                kind = (
                    RejectionKind.ALREADY_EXISTS
                    if spec.name in conflicts
                    else RejectionKind.BATCH_REJECTED
                )
                self._reject(spec.name, None, kind)
            raise TaskAlreadyExists(first)
        records = [self._enroll(spec, new_task_id(), None, None) for spec in batch]
        if names:  # listening (no event can have changed that since)
            bus.emit_each(_ADDED, names, [rec.id for rec in records])
        for rec in records:
            self._launch(rec)

    def _idle(self) -> bool:
        return len(self._registry) == 0 and (self._controller is None or self._controller.idle)

    async def _wait_finished(self) -> None:
        changed = self._changed
        assert changed is not None
        while not self._closing and not self._idle():
            changed.clear()
            await changed.wait()

    def _install_signal_handlers(self) -> Callable[[], None]:
        loop = self._loop
        if (
            not self._config.handle_signals
            or loop is None
            or threading.current_thread() is not threading.main_thread()
        ):
            return lambda: None
        installed: _List[tuple[signal.Signals, Any]] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if getattr(previous, "__module__", "").startswith("asyncio"):
                previous = None  # another loop's internal handler: nothing of ours to give back
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
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

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._shutdown_task is None:
            self._begin_shutdown(f"signal {sig.name}")
        else:
            assert self._skip_grace is not None
            self._skip_grace.set()

    def _begin_shutdown(self, reason: str) -> asyncio.Task[ShutdownReport]:
        if self._shutdown_task is None:
            loop = self._bind()
            self._closing = True
            self._shutdown_task = loop.create_task(
                self._shutdown(reason), name="taskvisor:shutdown"
            )
            assert self._changed is not None
            self._changed.set()
        return self._shutdown_task

    async def shutdown(self) -> ShutdownReport:
        """Stop everything within ``grace`` and drain subscribers; one shared operation.

        The first caller starts it; every caller (and ``run``) gets the same report.
        """
        reason = "natural completion" if self._running and self._idle() else "shutdown requested"
        return await asyncio.shield(self._begin_shutdown(reason))

    async def _shutdown(self, reason: str) -> ShutdownReport:
        bus = self._bus
        grace = self._config.grace
        if bus.listening:
            bus.publish(new_event(EventKind.SHUTDOWN_REQUESTED, reason=reason))
        if self._controller is not None:
            self._controller.close()
        records = self._registry.records()
        for rec in records:
            self._request_stop(rec, arm_force=False)
        pending = [rec for rec in records if not rec.finalized]
        if pending:
            assert self._skip_grace is not None
            waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._all_done(pending))}
            skip = asyncio.ensure_future(self._skip_grace.wait())
            waiters.add(skip)
            await asyncio.wait(waiters, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        # A task's own force timer (armed by its stop request) can fire just before this wait
        # ends and finish it FORCE_ABORTED: it was still running at the end of grace too.
        stuck = tuple(sorted(rec.name for rec in pending if rec.forced or not rec.finalized))
        if stuck:
            if bus.listening:
                bus.publish(
                    new_event(
                        EventKind.GRACE_EXCEEDED,
                        reason=f"still running after {grace}s: {', '.join(stuck)}",
                    )
                )
            left = [rec for rec in pending if not rec.finalized]
            for rec in left:
                self._force(rec)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_done(left), FORCE_WAIT)
            for rec in left:
                self._abandon(rec)
        elif bus.listening:
            bus.publish(new_event(EventKind.ALL_STOPPED_WITHIN_GRACE))
        await bus.close(self._config.subscriber_shutdown_timeout)
        return ShutdownReport(grace_exceeded=bool(stuck), stuck=stuck, grace=grace)

    @staticmethod
    async def _all_done(records: _List[TaskRecord]) -> None:
        for rec in records:
            if rec.outcome is None:
                await rec.outcome_future()
