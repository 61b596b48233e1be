"""The running file: its programs in one supervisor, and what ``ctl`` and SIGHUP ask of them.

``Runner`` owns the supervisor's view of the file: it adds each task (``start_all``), stops,
starts and restarts one (``stop``/``start``/``restart``), applies a reload (``reload``), and
answers ``status``. Control operations run one at a time.

While a control operation runs, while a task stopped by ``ctl stop`` waits to be started
again, and while a file of more than ``START_BATCH`` tasks is being started, the run holds an
internal task of its own named ``(taskvisor)`` (``_hold``): ``Supervisor.run`` ends once
nothing is registered, and a stopped task, or one being restarted (``cancel`` then ``add``),
is not registered. The keeper returns as soon as none of these holds, so a small run never
touched by ``ctl`` has none. It is left out of everything the command line shows; the file's
subscribers see its events. (Once the core's ``start()`` handles signals and
``sup.wait()`` and ``sup.restart()`` exist, the keeper can go.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from .._errors import SupervisorClosed, TaskAlreadyExists
from .._outcome import OutcomeKind, TaskHandle
from .._registry import TaskState
from .._spec import TaskSpec
from .._supervisor import Supervisor
from ._file import FileErrors, Plan, load
from ._limits import Enforcer
from ._output import Output, RotatingFile
from ._program import Program, make_body
from ._ready import Readiness
from ._reload import diff
from ._tasks import RESERVED_NAME, TaskPlan

__all__ = ["KEEPER", "ControlError", "Runner"]

log = logging.getLogger("taskvisor.cli")

KEEPER = RESERVED_NAME
TAIL_DEFAULT = 10
START_BATCH = 10
START_YIELDS = 6
"""Loop iterations between two batches: enough for a batch's programs to be spawned."""


class ControlError(Exception):
    """A control request that cannot be done; the message says why (for the ``ctl`` user)."""


class Runner:
    """The file's tasks in ``sup``: add, stop, start, restart, reload, status."""

    def __init__(
        self,
        plan: Plan,
        sup: Supervisor,
        readiness: Readiness,
        enforcer: Enforcer,
    ) -> None:
        self.plan = plan
        self.sup = sup
        self.readiness = readiness
        self.enforcer = enforcer
        self.programs: dict[str, Program] = {}
        self.files: dict[str, RotatingFile] = {}
        self.on_add: list[Callable[[TaskHandle], None]] = []
        """Called with every handle the runner adds (the status page tracks them)."""
        self._lock = asyncio.Lock()
        self._watchers: set[asyncio.Task[None]] = set()
        self._keep: asyncio.Event | None = None
        self._starting: asyncio.Task[None] | None = None
        self._awaited = _awaited(plan)
        self._followed: dict[str, TaskHandle] = {}
        self._keeper: TaskHandle | None = None

    # ------------------------------------------------------------------ lifecycle

    def _hold(self) -> None:
        """Keep the run alive (see the module's docstring) until ``_release``."""
        if self._keeper is not None and not self._keeper.done():
            return
        keep = self._keep = asyncio.Event()

        async def keeper() -> None:
            await keep.wait()

        self._keeper = self.sup.add(TaskSpec.once(KEEPER, keeper))

    def _release(self) -> None:
        """Let the keeper go, unless a task stopped by ``ctl`` still waits to be started."""
        if self._keep is not None and not any(p.stopped for p in self.programs.values()):
            self._keep.set()

    def start_all(self) -> None:
        """Add every task of the file (dependents wait for their ``after`` in their body).

        A large file is added ``START_BATCH`` tasks at a time, letting each batch's programs
        start before the next: 200 attempts in flight at once hold 200 sets of buffers at
        the same moment, and the memory stays taken after they are freed (about 2.5 KiB a
        program). The run is held (``_hold``) meanwhile.
        """
        plans = list(self.plan.tasks)
        for plan in plans:
            self.readiness.reset(plan.name)
        if len(plans) <= START_BATCH:
            for plan in plans:
                self._add(plan)
            return
        self._hold()
        for plan in plans[:START_BATCH]:
            self._add(plan)
        self._starting = asyncio.create_task(self._start_rest(plans[START_BATCH:]))

    async def _start_rest(self, plans: list[TaskPlan]) -> None:
        try:
            for i in range(0, len(plans), START_BATCH):
                for _ in range(START_YIELDS):
                    await asyncio.sleep(0)
                for plan in plans[i : i + START_BATCH]:
                    self._add(plan)
        except SupervisorClosed:
            pass  # a signal came during the start: the rest is not started
        finally:
            self._release()
        for _ in range(START_YIELDS):
            await asyncio.sleep(0)
        _give_back_memory()

    def _add(self, plan: TaskPlan) -> Program:
        program = self.programs.get(plan.name)
        if program is None or program.plan.output != plan.output:
            if program is not None:
                program.output.close()
            output = Output(plan.name, plan.output, self.files)
            program = Program(plan, output)
            self.programs[plan.name] = program
        else:
            program.plan = plan
        self.readiness.reset(plan.name)
        spec = plan.spec(make_body(program, self.readiness, self.enforcer, plan))
        handle = self.sup.add(spec)
        program.handle = handle
        program.stopped = False
        self._watch(program)
        for hook in self.on_add:
            hook(handle)
        return program

    def _watch(self, program: Program) -> None:
        """Follow the task's end if some task waits for it (only then: a task each)."""
        handle = program.handle
        if program.name not in self._awaited or handle is None or handle.done():
            return
        if self._followed.get(program.name) is handle:
            return
        self._followed[program.name] = handle
        watcher = asyncio.create_task(self._follow(program, handle))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _follow(self, program: Program, handle: TaskHandle) -> None:
        outcome = await handle
        if program.handle is not handle:
            return  # re-added meanwhile
        completed = outcome.kind is OutcomeKind.COMPLETED
        self.readiness.mark_finished(program.name, ready=program.plan.once and completed)

    def close(self) -> None:
        """After the run: close output files and followers, remove cgroups."""
        for program in self.programs.values():
            program.output.close()
        for writer in self.files.values():
            writer.close()
        self.files.clear()
        self.enforcer.close()

    # ------------------------------------------------------------------ control

    def _program(self, name: str) -> Program:
        program = self.programs.get(name)
        if program is None:
            known = ", ".join(self.programs) or "none"
            raise ControlError(f"no task named {name!r} (tasks: {known})")
        return program

    async def _operate(self, operation: Any, *args: Any) -> str:
        """Run one control operation under the lock, the run held alive meanwhile."""
        async with self._lock:
            try:
                self._hold()
            except SupervisorClosed:
                raise ControlError("taskvisor is shutting down") from None
            try:
                result: str = await operation(*args)
            except SupervisorClosed:
                raise ControlError("taskvisor is shutting down") from None
            finally:
                self._release()
            return result

    async def stop(self, name: str) -> str:
        """Stop ``name`` and keep it stopped (``start`` runs it again)."""
        return await self._operate(self._stop, name)

    async def start(self, name: str) -> str:
        """Start ``name`` if it is not running (stopped, or finished)."""
        return await self._operate(self._start, name)

    async def restart(self, name: str) -> str:
        """Stop ``name`` (if running) and start it again."""
        return await self._operate(self._restart, name)

    async def reload(self) -> str:
        """Re-read the file and apply the difference (``ControlError`` if it is invalid)."""
        return await self._operate(self._reload)

    async def _stop(self, name: str) -> str:
        program = self._program(name)
        if not program.alive:
            return f"{name}: not running"
        program.stopped = True
        await self.sup.cancel(name)
        return f"{name}: stopped"

    async def _start(self, name: str) -> str:
        program = self._program(name)
        if program.alive:
            return f"{name}: already running"
        self._carry_restarts(program)
        try:
            self._add(program.plan)
        except TaskAlreadyExists:  # its cleanup is still under way
            raise ControlError(f"{name}: still stopping; try again") from None
        return f"{name}: started"

    async def _restart(self, name: str) -> str:
        program = self._program(name)
        if program.alive:
            program.stopped = True
            await self.sup.cancel(name)
        self._carry_restarts(program)
        self._add(program.plan)
        return f"{name}: restarted"

    def _carry_restarts(self, program: Program) -> None:
        handle = program.handle
        outcome = handle.outcome if handle is not None else None
        if outcome is not None:
            program.restarts_before += max(0, outcome.attempts - 1)

    async def _reload(self) -> str:
        try:
            new = load(self.plan.path)
        except FileErrors as errors:
            raise ControlError(
                "reload refused, nothing changed:\n" + "\n".join(errors.messages)
            ) from None
        running = {name: p.plan for name, p in self.programs.items()}
        change = diff(running, new.tasks, self.plan.run_wide, new.run_wide)
        self._awaited = _awaited(new)
        was_stopped = {n for n, p in self.programs.items() if p.stopped and not p.alive}
        stopping = [p.name for p in change.changed] + list(change.removed)
        for name in stopping:
            program = self.programs[name]
            if program.alive:
                program.stopped = True
        await asyncio.gather(
            *(self.sup.cancel(name) for name in stopping if self.programs[name].alive)
        )
        for name in change.removed:
            program = self.programs.pop(name)
            program.output.close()
        for plan in change.changed:
            if plan.name in was_stopped:  # stays stopped, with its new table
                self.programs[plan.name].plan = plan
                continue
            self._add(plan)
        for plan in change.added:
            self._add(plan)
        order = {plan.name: i for i, plan in enumerate(new.tasks)}
        self.programs = dict(sorted(self.programs.items(), key=lambda kv: order[kv[0]]))
        self.plan = _keep_run_wide(self.plan, new)
        for program in self.programs.values():
            self._watch(program)
        return "reloaded: " + change.summary()

    # ------------------------------------------------------------------ views

    def status(self) -> list[dict[str, Any]]:
        """One row per task, in file order: name, state, pid, uptime, restarts, last_error."""
        now = time.time()
        rows = []
        for program in self.programs.values():
            info = self.sup.get(program.name) if program.alive else None
            outcome = program.outcome
            if info is not None:
                state = _live_state(program, info.state, self.readiness)
                restarts = program.restarts_before + info.restarts
                last_error = info.last_error
            else:
                if program.stopped:
                    state = "stopped"
                elif outcome is not None:
                    state = outcome.kind.value
                else:
                    state = "starting"
                attempts = outcome.attempts if outcome is not None else 0
                restarts = program.restarts_before + max(0, attempts - 1)
                last_error = None
                if outcome is not None and outcome.kind is not OutcomeKind.COMPLETED:
                    last_error = outcome.reason
            started = program.started_at if info is not None else None
            rows.append(
                {
                    "name": program.name,
                    "state": state,
                    "pid": program.pid if info is not None else None,
                    "uptime": None if started is None else round(now - started, 3),
                    "restarts": restarts,
                    "last_error": last_error,
                }
            )
        return rows

    def details(self) -> dict[str, dict[str, Any]]:
        """What the status page adds to each task: after, probes, pid, recent output."""
        out: dict[str, dict[str, Any]] = {}
        for program in self.programs.values():
            plan = program.plan
            out[program.name] = {
                "after": list(plan.after),
                "waiting_for": list(program.waiting_for),
                "ready": self.readiness.is_ready(program.name),
                "pid": program.pid,
                "ready_probe": _probe_json(plan.ready, program.ready_result),
                "health_probe": _probe_json(plan.health, program.health_result),
                "output": [
                    {"at": at, "stream": stream, "line": line}
                    for at, stream, line in program.output.last(TAIL_DEFAULT)
                ],
            }
        return out

    def output(self, name: str) -> Output:
        """The output of ``name`` (for ``ctl tail``)."""
        return self._program(name).output


def _give_back_memory() -> None:
    """Return the heap freed after a burst of starts to the system (glibc; else nothing).

    Starting hundreds of programs at once frees most of what it allocated, but glibc keeps
    the freed pages; ``malloc_trim`` gives them back (about 0.6 MiB after 200 programs).
    """
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return
    trim(0)


def _awaited(plan: Plan) -> frozenset[str]:
    """The names some task waits for (``after``)."""
    return frozenset(dep for task in plan.tasks for dep in task.after)


def _live_state(program: Program, state: TaskState, readiness: Readiness) -> str:
    if state is not TaskState.RUNNING:
        return state.value
    if program.waiting_for:
        return "waiting"
    plan = program.plan
    if plan.is_command and program.pid is None:
        return "starting"
    if plan.ready is not None and not plan.once and not readiness.is_ready(program.name):
        return "starting"
    return "running"


def _probe_json(probe: Any, result: Any) -> dict[str, Any] | None:
    if probe is None:
        return None
    out: dict[str, Any] = {"probe": probe.describe()}
    if result is not None:
        out.update(result.as_json())
    return out


def _keep_run_wide(old: Plan, new: Plan) -> Plan:
    """The new tasks under the old run-wide settings (a reload cannot change those)."""
    from dataclasses import replace

    return replace(old, tasks=new.tasks, defaults=new.defaults, warnings=new.warnings)
