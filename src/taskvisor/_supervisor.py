"""The ``Supervisor``: admission, management calls, per-task cleanup and the shared shutdown.

Data flow: ``add``/``run``/controller → ``_register`` (registry + ``TASK_ADDED``) → one
runner task per registered task (``_actor.drive``) → ``_cleanup`` (``TASK_FINISHED``, name
released, ``TASK_REMOVED``, outcome resolved, controller told). Stop requests go through
``_request_stop``; the timers that make sure nothing waits forever are ``_shutdown.py``'s.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType

from ._actor import SlotPool, drive
from ._config import ShutdownReport, SupervisorConfig
from ._context import TaskId, new_task_id
from ._controller import Controller, ControllerConfig, ControllerSnapshot, ControllerSpec
from ._errors import (
    AlreadyRunning,
    ControllerNotConfigured,
    SupervisorClosed,
    TaskAlreadyExists,
    TaskTerminationTimeout,
)
from ._events import EventKind
from ._fanout import Bus, EventStream
from ._outcome import OutcomeKind, RejectionKind, TaskHandle, TaskOutcome
from ._registry import Registry, TaskInfo, TaskRecord, TaskState
from ._shutdown import GRACE_OVER, Stopper, install_signal_handlers
from ._spec import TaskDefaults, TaskSpec
from ._subscriber import DEFAULT_QUEUE_CAPACITY, as_subscriber
from ._validate import check_duration, check_int
from ._voice import Voice

_ADD_REQUESTED = EventKind.TASK_ADD_REQUESTED
_ADDED = EventKind.TASK_ADDED
_FINISHED = EventKind.TASK_FINISHED
_REMOVED = EventKind.TASK_REMOVED
_REMOVE_REQUESTED = EventKind.TASK_REMOVE_REQUESTED

EVENTS_PER_TASK = 6
"""What an instant one-shot task publishes (added, started, ended, removed): how a batch
admission sizes its chunks (``Bus.paced``)."""

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
        if controller is not None and not isinstance(controller, ControllerConfig):
            raise TypeError(
                f"controller must be a ControllerConfig or None, got {type(controller).__name__}"
            )
        self._config = config
        self._defaults = defaults
        subscribers = list(subscribers)
        self._bus = Bus([as_subscriber(s) for s in subscribers])
        if config.log:
            from .subscribers import LogSubscriber  # its package imports this one

            if not any(isinstance(s, LogSubscriber) for s in subscribers):
                self._bus.voice = Voice()
        self._controller = None if controller is None else Controller(controller, _Port(self))
        self._registry = Registry()
        self._finish = self._cleanup  # one bound method for every runner, not one per task
        self._slots = SlotPool(config.max_concurrent) if config.max_concurrent is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._stopper: Stopper | None = None
        self._closing = False
        self._running = False
        self._shutdown_task: asyncio.Task[ShutdownReport] | None = None
        self._shutdown_begun = asyncio.Event()  # bound to a loop at its first wait
        self._restore_signals: Callable[[], None] | None = None
        self._forcing: str | None = None  # why the rest of the grace period was skipped
        self._tracked: _List[TaskRecord] | None = None  # run(): every task it admitted
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
            self._stopper = Stopper(loop, self._config.grace, self._bus, self._cleanup)
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
        """Start the supervisor on the running loop (``async with`` does this).

        With ``handle_signals`` (the default), SIGINT and SIGTERM start the shutdown from
        now on (a second one skips the rest of the grace period): use ``await sup.wait()``
        to learn when it is over.
        """
        loop = self._bind()
        if self._closing:
            raise SupervisorClosed("the supervisor has been shut down")
        self._install_signals(loop)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._config.handle_signals and self._restore_signals is None:
            self._restore_signals = install_signal_handlers(loop, self._on_signal)

    async def wait(self) -> ShutdownReport:
        """Return the ``ShutdownReport`` once the supervisor has shut down, whoever started it.

        A signal, ``shutdown()``, an exceeded restart intensity: this waits for all of them.
        Called before ``start``, it waits for a later start and shutdown.
        """
        await self._shutdown_begun.wait()
        assert self._shutdown_task is not None
        return await asyncio.shield(self._shutdown_task)

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
            bus.publish(_ADD_REQUESTED, spec.name)
        if self._registry.has_name(spec.name):
            self._reject(spec.name, None, RejectionKind.ALREADY_EXISTS)
            raise TaskAlreadyExists(spec.name)
        rec = self._register(spec, new_task_id(), None, None)
        return TaskHandle(rec.id, rec.name, rec, self.cancel)

    def _reject(self, name: str, task_id: TaskId | None, rejection: RejectionKind) -> None:
        if self._bus.listening:
            self._bus.publish(
                EventKind.TASK_ADD_FAILED,
                name,
                task_id,
                outcome=OutcomeKind.REJECTED,
                rejection=rejection,
            )

    def _register(
        self,
        spec: TaskSpec,
        task_id: TaskId,
        future: asyncio.Future[TaskOutcome] | None,
        on_cleanup: Callable[[TaskRecord], None] | None,
    ) -> TaskRecord:
        """Register and start one task whose name is known to be free."""
        rec = TaskRecord(task_id, spec, future, on_cleanup)
        self._registry.insert(rec)
        if self._tracked is not None:
            self._tracked.append(rec)
        if self._bus.listening:
            self._bus.publish(_ADDED, rec.name, task_id)
        self._launch(rec)
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

    def _cleanup(self, rec: TaskRecord, outcome: TaskOutcome) -> None:
        """The one cleanup of a task; later calls (an abandoned runner ending) do nothing."""
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
        if bus.listening:  # TASK_FINISHED, then TASK_REMOVED (the name is released by now)
            bus.publish(
                _FINISHED,
                rec.name,
                rec.id,
                outcome=outcome.kind,
                reason=outcome.reason,
                exit_code=outcome.exit_code,
            )
            bus.publish(_REMOVED, rec.name, rec.id)
        if bus.voice is not None:
            bus.voice.finished(rec.name, outcome)
        if rec.restarted is not None:  # a restart asked for, but the task ended instead
            if not rec.restarted.done():
                rec.restarted.set_result(False)
            rec.restarted = None
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
        its own grace wait forces every task still running (one wait instead of thousands
        of timers).
        """
        if rec.finalized or rec.requested:
            return False
        rec.request()
        if self._bus.listening:
            self._bus.publish(_REMOVE_REQUESTED, rec.name, rec.id)
        runner = rec.runner
        # A runner that has not begun sees the request at its first step; cancelling it now
        # would skip its coroutine entirely, and with it the cleanup.
        if rec.started and runner is not None and not runner.done():
            runner.cancel()
            if arm_force:
                assert self._stopper is not None
                self._stopper.arm(rec)
        return True

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

    async def restart(self, id_or_name: TaskKey) -> bool:
        """Stop the current attempt as ``cancel`` would, then start the next one at once.

        Same task (same id); neither a failure nor a restart for the restart counts and the
        intensity. A wait in ``BACKOFF`` or ``SCHEDULED`` ends at once instead. ``False`` for
        an unknown or finished task, or one ``WAITING`` or ``STOPPING`` (nothing changes);
        ``True`` once the new attempt has published ``ATTEMPT_STARTING``.
        """
        key = _check_key(id_or_name)
        self._check_thread()
        rec = self._registry.lookup(key)
        if rec is None or rec.finalized or rec.requested or rec.state is TaskState.WAITING:
            return False
        runner = rec.runner
        if runner is None or runner.done():
            return False
        if rec.restarted is None:
            rec.restarted = asyncio.get_running_loop().create_future()
            # A runner that has not begun (a first delay seen from registration) skips its
            # wait when it does; cancelling it now would skip its coroutine and its cleanup.
            if rec.started:
                runner.cancel()
            if rec.state is TaskState.RUNNING:  # an attempt to stop, not a wait to end
                assert self._stopper is not None
                self._stopper.arm_restart(rec, rec.restarted)
        return await asyncio.shield(rec.restarted)

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
        loop = self._bind()
        if self._running:
            raise AlreadyRunning("Supervisor.run is already active")
        if self._closing:
            raise SupervisorClosed("the supervisor has been shut down")
        self._running = True
        self._tracked = []
        self._install_signals(loop)
        try:
            try:
                await self._admit_batch(batch)
                await self._wait_finished()
            except asyncio.CancelledError:
                # Like a task group: a cancelled run leaves no task behind. Shut down (a
                # second cancellation skips the rest of the grace period), then re-raise.
                shutting = self._begin_shutdown("run cancelled")
                while not shutting.done():
                    try:
                        await asyncio.shield(shutting)
                    except asyncio.CancelledError:
                        self._force_now("run cancelled again")
                raise
            return await self.shutdown()
        finally:
            self._running = False

    async def _admit_batch(self, batch: _List[TaskSpec]) -> None:
        """Admit a whole batch or none of it, paced so that subscribers keep up (SPEC §14).

        Every name is checked, then every task registered at once (no other admission can
        slip in between); their events and runners follow in chunks.
        """
        seen: set[str] = set()
        conflicts: set[str] = set()
        first: str | None = None
        for spec in batch:
            if spec.name in seen or self._registry.has_name(spec.name):
                conflicts.add(spec.name)
                if first is None:
                    first = spec.name
            seen.add(spec.name)
        bus = self._bus
        if first is not None:
            if bus.listening:

                def refuse(chunk: Sequence[TaskSpec]) -> None:
                    names = [spec.name for spec in chunk]
                    bus.publish_batch(_ADD_REQUESTED, names)
                    for name in names:
                        rejection = (
                            RejectionKind.ALREADY_EXISTS
                            if name in conflicts
                            else RejectionKind.BATCH_REJECTED
                        )
                        self._reject(name, None, rejection)

                await bus.paced(batch, refuse, 2, lambda: True)
            raise TaskAlreadyExists(first)
        records = [TaskRecord(new_task_id(), spec, None, None) for spec in batch]
        for rec in records:
            self._registry.insert(rec)
        if self._tracked is not None:
            self._tracked += records

        def admit(chunk: Sequence[TaskRecord]) -> None:
            if bus.listening:
                names = [rec.name for rec in chunk]
                bus.publish_batch(_ADD_REQUESTED, names)
                bus.publish_batch(_ADDED, names, [rec.id for rec in chunk])
            for rec in chunk:
                self._launch(rec)

        await bus.paced(records, admit, EVENTS_PER_TASK, lambda: self._closing)

    def _idle(self) -> bool:
        return len(self._registry) == 0 and (self._controller is None or self._controller.idle)

    async def _wait_finished(self) -> None:
        changed = self._changed
        assert changed is not None
        while not self._closing and not self._idle():
            changed.clear()
            await changed.wait()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._shutdown_task is None:
            self._begin_shutdown(f"signal {sig.name}")
        else:
            self._force_now(f"second signal ({sig.name})")

    def _force_now(self, why: str) -> None:
        """Skip the rest of the grace period: what still runs is forced now."""
        if self._forcing is None:
            self._forcing = why
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
            self._shutdown_begun.set()
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
            bus.publish(EventKind.SHUTDOWN_REQUESTED, reason=reason)
        if self._controller is not None:
            self._controller.close()
        records = self._registry.records()
        for rec in records:
            self._request_stop(rec, arm_force=False)

        def exceeded(stuck: tuple[str, ...]) -> str:
            names = ", ".join(stuck)
            if self._forcing is not None:  # honest words: the grace period did not run out
                reason = f"{self._forcing}: forcing the stop now; still running: {names}"
                why = f"force-stopped: {self._forcing}"
            else:
                reason = f"still running after the {grace}s grace period: {names}"
                why = GRACE_OVER
            if bus.voice is not None:
                bus.voice.grace_exceeded(reason)
            if bus.listening:
                bus.publish(EventKind.GRACE_EXCEEDED, reason=reason)
            return why  # the forced tasks' outcomes say the same

        assert self._stopper is not None
        assert self._skip_grace is not None
        stuck = await self._stopper.wait_all(records, self._skip_grace, exceeded)
        if not stuck and bus.listening:
            bus.publish(EventKind.ALL_STOPPED_WITHIN_GRACE)
        await bus.close(self._config.subscriber_shutdown_timeout)
        if self._restore_signals is not None:
            self._restore_signals()
        outcomes = {
            rec.name: rec.outcome
            for rec in (*(self._tracked or ()), *records)
            if rec.outcome is not None
        }
        return ShutdownReport(
            grace_exceeded=bool(stuck),
            stuck=stuck,
            grace=grace,
            outcomes=MappingProxyType(outcomes),
        )


class _Port:
    """The supervisor as the controller sees it (``_controller.Admission``): nothing more."""

    __slots__ = ("_sup",)

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup

    @property
    def bus(self) -> Bus:
        return self._sup._bus

    def name_taken(self, name: str) -> bool:
        return self._sup._registry.has_name(name)

    def register(
        self,
        spec: TaskSpec,
        task_id: TaskId,
        future: asyncio.Future[TaskOutcome],
        on_cleanup: Callable[[TaskRecord], None],
    ) -> TaskRecord:
        return self._sup._register(spec, task_id, future, on_cleanup)

    def reject(self, name: str, task_id: TaskId, rejection: RejectionKind) -> None:
        self._sup._reject(name, task_id, rejection)

    def request_stop(self, rec: TaskRecord) -> None:
        self._sup._request_stop(rec)

    def handle(self, task_id: TaskId, name: str, future: asyncio.Future[TaskOutcome]) -> TaskHandle:
        return TaskHandle(task_id, name, future, self._sup.cancel)

    def idle(self) -> None:
        changed = self._sup._changed
        if changed is not None:
            changed.set()  # `run()` waits for the controller to be idle
