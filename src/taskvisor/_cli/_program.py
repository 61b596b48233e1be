"""One task of the file while ``taskvisor run`` runs it: its plan, its body, its attempts' probes.

``make_body`` wraps the task's body so that each attempt first waits for the tasks named in
``after`` (through ``_ready.Readiness``), and, for a command, watches the attempt
(``ProgramWatch``): output to its destination, the readiness probe, then the health probe,
limits applied in the child.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .._context import TaskContext
from .._errors import Fatal
from .._outcome import TaskHandle, TaskOutcome
from ..process import Watch, command
from ._limits import Enforcer
from ._output import Output
from ._probes import CHECK_LIMIT, Probe, ProbeResult, check
from ._ready import Readiness, hung, not_ready_in_time
from ._tasks import Body, TaskPlan

__all__ = ["Program", "ProgramWatch", "make_body"]

log = logging.getLogger("taskvisor.cli")


class Program:
    """A task of the file at run time: its plan and what its attempts have shown."""

    __slots__ = (
        "handle",
        "health_result",
        "output",
        "pid",
        "plan",
        "ready_result",
        "restarts_before",
        "started_at",
        "stopped",
        "waiting_for",
    )

    def __init__(self, plan: TaskPlan, output: Output) -> None:
        self.plan = plan
        self.output = output
        self.handle: TaskHandle | None = None
        self.pid: int | None = None
        self.started_at: float | None = None
        """Wall-clock start of the running program (a callable: of the attempt)."""
        self.waiting_for: tuple[str, ...] = ()
        """Names in ``after`` not ready yet, while the attempt waits for them."""
        self.ready_result: ProbeResult | None = None
        self.health_result: ProbeResult | None = None
        self.stopped = False
        """Stopped by ``ctl stop``: kept (startable again), the run does not end for it."""
        self.restarts_before = 0
        """Restarts counted by earlier registrations (``ctl restart`` re-adds the task)."""

    @property
    def name(self) -> str:
        """The task's name."""
        return self.plan.name

    @property
    def outcome(self) -> TaskOutcome | None:
        """The outcome of the last registration, once it finished."""
        handle = self.handle
        return None if handle is None else handle.outcome

    @property
    def alive(self) -> bool:
        """Registered and not finished."""
        return self.handle is not None and not self.handle.done()


def make_body(program: Program, readiness: Readiness, enforcer: Enforcer, plan: TaskPlan) -> Body:
    """The body of ``plan``'s task: wait for ``after``, then run the command or the function."""
    name = plan.name
    inner: Any
    if plan.is_command:

        def watch(ctx: TaskContext) -> Watch:
            return ProgramWatch(ctx, program, readiness, enforcer)

        inner = command(plan.argv, **plan.command_options, watch=watch)
        takes_context = True
    else:
        assert plan.body is not None
        inner = plan.body
        takes_context = plan.spec(inner).takes_context

    async def body(ctx: TaskContext) -> Any:
        if plan.after:
            await _wait_after(program, readiness, plan)
        if not plan.is_command:
            program.started_at = time.time()
            if not plan.once:
                readiness.mark_ready(name)
        try:
            return await (inner(ctx) if takes_context else inner())
        finally:
            if not plan.is_command:
                program.started_at = None
                readiness.mark_not_ready(name)

    body.__qualname__ = body.__name__ = f"run_{name}"
    return body


async def _wait_after(program: Program, readiness: Readiness, plan: TaskPlan) -> None:
    pending = tuple(dep for dep in plan.after if not readiness.is_ready(dep))
    if not pending:
        return
    log.info("task %r waits for %s to be ready", plan.name, ", ".join(map(repr, pending)))
    program.waiting_for = pending
    try:
        for dep in plan.after:
            if not await readiness.wait(dep):
                raise Fatal(f"not started: {dep!r}, named in after, finished without being ready")
            program.waiting_for = tuple(d for d in program.waiting_for if d != dep)
    finally:
        program.waiting_for = ()


class ProgramWatch(Watch):
    """Watches one attempt of a command task: output, readiness, health, limits."""

    def __init__(
        self, ctx: TaskContext, program: Program, readiness: Readiness, enforcer: Enforcer
    ) -> None:
        super().__init__(ctx)
        self.program = program
        self.readiness = readiness
        plan = program.plan
        self.plan = plan
        if plan.limits is not None:
            self.preexec = enforcer.preexec(plan.name, plan.limits)
        self.judges = plan.ready is not None or plan.health is not None
        loop = asyncio.get_running_loop()
        self._verdict: asyncio.Future[BaseException] = loop.create_future()
        self._tasks: list[asyncio.Task[None]] = []
        self._log_matched: asyncio.Event | None = None
        ready = plan.ready
        if ready is not None and ready.kind == "log" and not plan.once:
            self._log_matched = asyncio.Event()
        program.ready_result = None
        self._cwd: str | None = plan.command_options.get("cwd")
        self._env: dict[str, str] | None = plan.command_options.get("env")

    def started(self, pid: int) -> None:
        """Record the pid; start the readiness probe (or be ready at once)."""
        program = self.program
        program.pid = pid
        program.started_at = time.time()
        plan = self.plan
        log.info("task %r: %s started as pid %d", plan.name, plan.argv[0], pid)
        if plan.once:
            return  # ready means completed; its outcome says so
        if plan.ready is not None:
            self._spawn(self._become_ready(plan.ready))
        else:
            self.readiness.mark_ready(plan.name)
            if plan.health is not None:
                self._spawn(self._stay_healthy(plan.health))

    def output(self, stream: str, text: str, pid: int | None) -> None:
        """Send the record to the task's output; look for the ``log`` readiness pattern."""
        self.program.output.write(stream, text, pid)
        matched = self._log_matched
        if matched is not None and not matched.is_set():
            assert self.plan.ready is not None
            pattern = self.plan.ready.target
            for line in text.split("\n"):
                if pattern.search(line):
                    self.program.ready_result = ProbeResult(True, line[:200], time.time())
                    matched.set()
                    break

    async def verdict(self) -> BaseException:
        """The failure a probe decided (not ready in time, hung)."""
        return await self._verdict

    def ended(self) -> None:
        """Stop the probes; the task is not ready any more."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        program = self.program
        program.pid = None
        program.started_at = None
        if not self.plan.once:
            self.readiness.mark_not_ready(self.plan.name)

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.create_task(coro))

    def _decide(self, failure: BaseException) -> None:
        if not self._verdict.done():
            self._verdict.set_result(failure)

    async def _become_ready(self, probe: Probe) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + probe.timeout
        program = self.program
        if probe.kind == "log":
            assert self._log_matched is not None
            try:
                async with asyncio.timeout_at(deadline):
                    await self._log_matched.wait()
            except TimeoutError:
                self._decide(not_ready_in_time(probe.timeout, probe.describe(), "no such line"))
                return
        else:
            while True:
                left = deadline - loop.time()
                result = await check(probe, max(0.01, min(CHECK_LIMIT, left)), self._cwd, self._env)
                program.ready_result = result
                if result.ok:
                    break
                left = deadline - loop.time()
                if left <= 0:
                    self._decide(not_ready_in_time(probe.timeout, probe.describe(), result.detail))
                    return
                await asyncio.sleep(min(probe.every, left))
        log.info("task %r is ready (%s)", self.plan.name, probe.describe())
        self.readiness.mark_ready(self.plan.name)
        if self.plan.health is not None:
            await self._stay_healthy(self.plan.health)

    async def _stay_healthy(self, probe: Probe) -> None:
        failures = 0
        name = self.plan.name
        while True:
            await asyncio.sleep(probe.every)
            result = await check(probe, probe.timeout, self._cwd, self._env)
            self.program.health_result = result
            if result.ok:
                failures = 0
                continue
            failures += 1
            log.warning(
                "task %r: health check %s failed (%d of %d): %s",
                name,
                probe.describe(),
                failures,
                probe.failures,
                result.detail,
            )
            if failures >= probe.failures:
                self._decide(hung(probe.describe(), failures, result.detail))
                return
