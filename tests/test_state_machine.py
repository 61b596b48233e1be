"""Stateful property test: no sequence of calls loses an outcome, leaks a task or hangs.

Hypothesis drives one supervisor (with a controller; started with ``start()``, or running a
batch under ``run()``, which shuts down by itself once everything has finished) through
random sequences of ``add``,
``submit`` (queue / replace / drop_if_running into a few slots), ``cancel`` (awaited,
spawned, with a timeout, through the handle), ``remove``, cancel-or-remove then re-add of
the same name, time passing, and ``shutdown`` (with calls racing it). Task bodies succeed,
fail, fail fatally, crash, time out, run long, sleep on the context, ignore cancellation for
a while, swallow it, swallow it until the test releases them, cancel themselves, or raise a
custom ``BaseException`` subclass. ``KeyboardInterrupt``/``SystemExit`` are left out on
purpose: they propagate out of the event loop by design (README "Limits"); see
``test_base_exceptions.py``.

Checked after every step: every handle's outcome, once resolved, never changes; ``list()``
is exactly the admitted tasks whose outcome is not resolved yet (the rest of the pending
handles are the controller's queued submissions, in FIFO order, matching the snapshot's
counts); no two bodies of one controller slot, and no more than ``max_concurrent`` bodies,
run at once while their outcomes are unresolved, and no task waits for a concurrency slot
while one is free (no slot leaks); a stop call returns ``True`` exactly when the task was
not ``STOPPING`` yet, and an awaited ``cancel`` returns only after the task's cleanup, within
``grace`` + the force wait + a margin. Checked at the end, after shutdown: every handle resolved;
every task's events follow SPEC §6 and its outcome is exactly what its policy makes of its
attempts; ``events()`` saw what the subscriber saw and ended; the registry is empty; no
library task is left running except the bodies that swallow cancellation until released
(Python cannot kill them: they are abandoned ``FORCE_ABORTED``, as documented); no library
task ended with an exception nobody retrieves; and the shutdown took no longer than
``grace`` + the force wait (only when such a body was running) + ``subscriber_shutdown_timeout``
+ a margin.

Asyncio inside a state machine: each example owns a fresh event loop, created in
``__init__`` and closed in ``teardown``; every rule runs one coroutine on it with
``run_until_complete``, so nothing runs between steps except callbacks already due. The
supervisor's ``FORCE_WAIT`` (how long it waits for a body that swallows a forced
cancellation) is lowered to 0.1 s for speed while an example runs.

Size: ``TASKVISOR_STATEFUL_EXAMPLES`` (default 80) examples of up to
``TASKVISOR_STATEFUL_STEPS`` (default 30) steps; e.g. ``TASKVISOR_STATEFUL_EXAMPLES=500``
for a long local run. The number of examples and steps run is printed.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import itertools
import os
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Context
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import taskvisor as tv
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O
from taskvisor import RejectionKind as RJ
from taskvisor import _shutdown as supervisor_module

T = TypeVar("T")

EXAMPLES = int(os.environ.get("TASKVISOR_STATEFUL_EXAMPLES", "80"))
STEPS = int(os.environ.get("TASKVISOR_STATEFUL_STEPS", "30"))

FORCE_WAIT = 0.1
"""Replaces the supervisor's ``FORCE_WAIT`` while an example runs."""
SUB_TIMEOUT = 0.5
"""``subscriber_shutdown_timeout`` of every example."""
MARGIN = 1.0
"""Generous slack on the shutdown and cancel bounds (a loaded 2-core machine)."""
GUARD = 5.0
"""No single step may take longer: a hang fails the example instead of the suite."""
BACKOFF = 0.002
NAMES = ("a", "b", "c", "d")
SLOTS = ("s1", "s2")


class Boom(BaseException):
    """A custom ``BaseException``: neither an ``Exception``, a cancellation nor an exit."""


class Body(enum.Enum):
    """What a task body does."""

    OK = "ok"  # returns after 1 ms
    FAIL = "fail"  # raises Fail("boom", exit_code=3)
    FATAL = "fatal"  # raises Fatal("doom", exit_code=4)
    CRASH = "crash"  # raises ValueError("crash")
    TIMEOUT = "timeout"  # sleeps past its attempt timeout
    LONG = "long"  # returns after 80 ms
    CTX_SLEEP = "ctx_sleep"  # returns after ctx.sleep(0.08)
    LINGER = "linger"  # on cancellation keeps going a little, then re-raises
    SWALLOW = "swallow"  # on cancellation returns normally
    STUBBORN = "stubborn"  # swallows every cancellation until the test releases it
    SELF_CANCEL = "self_cancel"  # raises CancelledError nobody requested
    BASE_EXC = "base_exc"  # raises Boom


SLOW_TO_STOP = frozenset({Body.LINGER, Body.STUBBORN})
"""Bodies that may outlive the grace period; every other body stops within one iteration."""

TERMINAL = frozenset(
    {K.ATTEMPT_SUCCEEDED, K.ATTEMPT_FAILED, K.ATTEMPT_TIMED_OUT, K.ATTEMPT_CANCELED}
)
LIFECYCLE = TERMINAL | {
    K.TASK_ADDED,
    K.ATTEMPT_STARTING,
    K.BACKOFF_SCHEDULED,
    K.TASK_REMOVE_REQUESTED,
    K.TASK_FINISHED,
    K.TASK_REMOVED,
}
OUT_OF_ORDER = frozenset({RJ.REMOVED_FROM_QUEUE, RJ.SUPERSEDED, RJ.SHUTTING_DOWN})
"""Rejections that take a submission out of its queue wherever it stands."""


@dataclass
class Stats:
    """What the state machine ran, for the lead's report."""

    examples: int = 0
    steps: int = 0
    tasks: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


STATS = Stats()


@dataclass(frozen=True)
class Plan:
    """How one task behaves: its body and its policies."""

    body: Body
    restart: tv.RestartPolicy
    max_retries: int | None
    timeout: float | None
    linger: float

    @property
    def effective_timeout(self) -> float | None:
        if self.body is Body.TIMEOUT and self.timeout is None:
            return 0.01
        return self.timeout


# Weighted towards bodies that end on their own, so that natural outcomes occur too.
BODIES = [Body.OK] * 4 + [Body.FAIL] * 2 + [Body.LONG] * 2 + [b for b in Body if b is not Body.OK]
plans = st.builds(
    Plan,
    body=st.sampled_from(BODIES),
    restart=st.sampled_from(
        [
            tv.RestartPolicy.NEVER,
            tv.RestartPolicy.NEVER,
            tv.RestartPolicy.ON_FAILURE,
            tv.RestartPolicy.ON_FAILURE,
            tv.RestartPolicy.always(),
            tv.RestartPolicy.always(interval=0.005),
        ]
    ),
    max_retries=st.sampled_from([0, 1, 3, None]),
    timeout=st.sampled_from([None, None, 0.05]),
    linger=st.sampled_from([0.01, 0.05, 0.15]),
)


class BatchHandle:
    """Stands in for the handle ``run(batch)`` does not return: done once the task left the
    registry (the same moment its outcome resolves); the outcome is read from its
    ``TASK_FINISHED`` event, so it carries no ``error``."""

    def __init__(self, sup: tv.Supervisor, info: tv.TaskInfo, recorder: Recorder) -> None:
        self.id = info.id
        self.name = info.name
        self._sup = sup
        self._recorder = recorder
        self._outcome: tv.TaskOutcome | None = None

    def __repr__(self) -> str:
        return f"<BatchHandle id={int(self.id)} name={self.name!r}>"

    def done(self) -> bool:
        return self._outcome is not None or self._sup.get(self.id) is None

    @property
    def outcome(self) -> tv.TaskOutcome | None:
        if self._outcome is None:
            events = [e for e in self._recorder.events if e.task_id == self.id]
            finished = [e for e in events if e.kind is K.TASK_FINISHED]
            if finished:
                e = finished[0]
                assert e.outcome is not None
                attempts = [x.kind for x in events].count(K.ATTEMPT_STARTING)
                self._outcome = tv.TaskOutcome(
                    e.outcome, e.reason, e.exit_code, None, None, attempts
                )
        return self._outcome

    async def cancel(self) -> bool:
        return await self._sup.cancel(self.id)


@dataclass
class Tracked:
    """One handle the test holds, with what it knows about it."""

    handle: tv.TaskHandle | BatchHandle
    plan: Plan
    slot: str | None  # the controller slot, for submissions
    key: int | None = None  # position in the model queue (smaller runs first), if queued
    outcome: tv.TaskOutcome | None = None  # first outcome seen
    stubborn_task: asyncio.Task[Any] | None = None


@dataclass
class Running:
    """One body currently executing."""

    task_id: int
    slot: str | None


@dataclass
class StopCall:
    """A cancel/remove call and what it returned (``None``: it raised TaskTerminationTimeout)."""

    target: int | None
    result: bool | None


@dataclass
class Recorder:
    """A subscriber that keeps every event."""

    name: str = "recorder"
    queue_capacity: int = 10_000_000
    events: list[tv.Event] = field(default_factory=list)

    def on_event(self, event: tv.Event) -> None:
        self.events.append(event)


class SupervisorMachine(RuleBasedStateMachine):
    """One supervisor, one loop, random calls; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        STATS.examples += 1
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        self.created: list[asyncio.Task[Any]] = []
        self.loop.set_task_factory(cast(Any, self._task_factory))
        self.saved_force_wait = supervisor_module.FORCE_WAIT
        supervisor_module.FORCE_WAIT = FORCE_WAIT
        self.sup: tv.Supervisor | None = None
        self.recorder = Recorder()
        self.streamed: list[tv.Event] = []
        self.stream_task: asyncio.Task[None] | None = None
        self.grace = 0.0
        self.max_concurrent: int | None = None
        self.max_slot_queue = 0
        self.tracked: dict[int, Tracked] = {}
        self.queues: dict[str, list[Tracked]] = defaultdict(list)
        self.back = itertools.count(1)
        self.front = itertools.count(-1, -1)
        self.running: list[Running] = []
        self.violations: list[str] = []
        self.stop_calls: list[StopCall] = []
        self.spawned: list[asyncio.Task[None]] = []
        self.release = asyncio.Event()
        self.report: tv.ShutdownReport | None = None
        self.run_task: asyncio.Task[tv.ShutdownReport] | None = None
        self.steps_here = 0
        self.shutdown_called = False  # by a rule (preconditions must not depend on timing)

    # ------------------------------------------------------------------ plumbing

    def _task_factory(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        context: Context | None = None,
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, context=context)
        self.created.append(task)
        return task

    def run(self, coro: Awaitable[T]) -> T:
        """Run one step's coroutine on the machine's loop, under the guard."""
        STATS.steps += 1
        self.steps_here += 1

        async def guarded() -> T:
            async with asyncio.timeout(GUARD):
                return await coro

        return self.loop.run_until_complete(guarded())

    @property
    def s(self) -> tv.Supervisor:
        assert self.sup is not None
        return self.sup

    @property
    def closing(self) -> bool:
        """Whether shutdown began (by a rule, or by ``run`` once everything finished)."""
        return self.sup is not None and self.sup.closed

    def spec(self, name: str, plan: Plan) -> tv.TaskSpec:
        return tv.TaskSpec(
            name,
            self.body(plan),
            restart=plan.restart,
            max_retries=plan.max_retries,
            timeout=plan.effective_timeout,
        )

    def track(self, handle: tv.TaskHandle | BatchHandle, plan: Plan, slot: str | None) -> Tracked:
        STATS.tasks += 1
        t = Tracked(handle, plan, slot)
        assert int(handle.id) not in self.tracked, "a TaskId was reused"
        self.tracked[int(handle.id)] = t
        return t

    def live(self) -> list[Running]:
        """Bodies running whose outcome is not resolved (abandoned bodies own nothing)."""
        return [r for r in self.running if not self.tracked[r.task_id].handle.done()]

    def body(self, plan: Plan) -> Callable[[tv.TaskContext], Awaitable[None]]:
        async def body(ctx: tv.TaskContext) -> None:
            tracked = self.tracked.get(int(ctx.id))
            if tracked is None:
                self.violations.append(f"body of unknown task {ctx.id} ran")
                return
            if tracked.handle.done():
                self.violations.append(f"task {ctx.id} started an attempt after its outcome")
            me = Running(int(ctx.id), tracked.slot)
            live = self.live()
            if any(r.task_id == me.task_id for r in live):
                self.violations.append(f"two attempts of task {ctx.id} at once")
            if me.slot is not None and any(r.slot == me.slot for r in live):
                self.violations.append(f"two owners of slot {me.slot!r} at once")
            if self.max_concurrent is not None and len(live) + 1 > self.max_concurrent:
                self.violations.append(f"{len(live) + 1} bodies > max_concurrent")
            self.running.append(me)
            try:
                await self.behave(plan, ctx, tracked)
            finally:
                self.running.remove(me)

        return body

    async def behave(self, plan: Plan, ctx: tv.TaskContext, tracked: Tracked) -> None:
        b = plan.body
        if b is Body.OK:
            await asyncio.sleep(0.001)
        elif b is Body.FAIL:
            await asyncio.sleep(0.001)
            raise tv.Fail("boom", exit_code=3)
        elif b is Body.FATAL:
            await asyncio.sleep(0.001)
            raise tv.Fatal("doom", exit_code=4)
        elif b is Body.CRASH:
            await asyncio.sleep(0.001)
            raise ValueError("crash")
        elif b is Body.TIMEOUT:
            await asyncio.sleep(30)
        elif b is Body.LONG:
            await asyncio.sleep(0.08)
        elif b is Body.CTX_SLEEP:
            await ctx.sleep(0.08)
        elif b is Body.LINGER:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(plan.linger)
                raise
        elif b is Body.SWALLOW:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                return
        elif b is Body.STUBBORN:
            tracked.stubborn_task = asyncio.current_task()
            while not self.release.is_set():
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    continue
        elif b is Body.SELF_CANCEL:
            await asyncio.sleep(0.001)
            raise asyncio.CancelledError
        else:
            await asyncio.sleep(0.001)
            raise Boom("boom")

    def queued(self) -> list[Tracked]:
        """Model-queued submissions still waiting (not resolved, not registered)."""
        return [
            t
            for q in self.queues.values()
            for t in q
            if not t.handle.done() and self.s.get(t.handle.id) is None
        ]

    def queued_target(self, key: int | str) -> Tracked | None:
        """The queued submission a cancel/remove of ``key`` must take, if any."""
        if isinstance(key, str):
            same = [t for t in self.queued() if t.handle.name == key]
            return min(same, key=lambda t: int(t.handle.id)) if same else None
        return next((t for t in self.queued() if int(t.handle.id) == key), None)

    def expect_stop(self, key: int | str, call: Callable[[], bool]) -> bool:
        """Make one synchronous stop call on ``key`` and check what it returns."""
        pre = self.s.get(key)
        queued = self.queued_target(key) if pre is None else None
        result = call()
        self.check_stop(key, pre, queued, result)
        return result

    def check_stop(
        self, key: int | str, pre: tv.TaskInfo | None, queued: Tracked | None, result: bool
    ) -> None:
        assert isinstance(result, bool)
        if pre is not None:
            assert result is (pre.state is not tv.TaskState.STOPPING), (key, pre, result)
            self.stop_calls.append(StopCall(int(pre.id), result))
            after = self.s.get(pre.id)
            assert after is None or after.state is tv.TaskState.STOPPING
        elif queued is not None:
            assert result is True, (key, "queued submission not found")
            o = queued.handle.outcome
            assert o is not None, "a removed queued submission must resolve at once"
            assert o.kind is O.REJECTED
            assert o.rejection is RJ.REMOVED_FROM_QUEUE
            self.stop_calls.append(StopCall(int(queued.handle.id), result))
        else:
            assert result is False, (key, "nothing to stop, yet True")

    # ------------------------------------------------------------------ setup

    @initialize(
        grace=st.sampled_from([0.0, 0.05, 0.2]),
        max_concurrent=st.sampled_from([None, 1, 2, 4]),
        max_slot_queue=st.sampled_from([0, 1, 3]),
        batch=st.none() | st.lists(st.tuples(st.sampled_from(NAMES), plans), max_size=3),
    )
    def setup(
        self,
        grace: float,
        max_concurrent: int | None,
        max_slot_queue: int,
        batch: list[tuple[str, Plan]] | None,
    ) -> None:
        """``batch=None``: ``async with``-style ``start()``; else ``run(batch)`` in the
        background, which shuts down by itself once every task has finished."""
        self.grace = grace
        self.max_concurrent = max_concurrent
        self.max_slot_queue = max_slot_queue
        self.sup = tv.Supervisor(
            tv.SupervisorConfig(
                grace=grace,
                subscriber_shutdown_timeout=SUB_TIMEOUT,
                max_concurrent=max_concurrent,
                handle_signals=False,
            ),
            defaults=tv.TaskDefaults(backoff=tv.BackoffPolicy.constant(BACKOFF)),
            subscribers=[self.recorder],
            controller=tv.ControllerConfig(max_slot_queue=max_slot_queue),
        )

        async def start() -> None:
            stream = self.s.events(capacity=10_000_000)

            async def consume() -> None:
                async for event in stream:
                    self.streamed.append(event)

            loop = asyncio.get_running_loop()
            self.stream_task = loop.create_task(consume(), name="test-stream")
            if batch is None:
                await self.s.start()
                return
            specs = [self.spec(name, plan) for name, plan in batch]
            names = [name for name, _ in batch]
            if len(set(names)) < len(names):
                with pytest.raises(tv.TaskAlreadyExists):
                    await self.s.run(specs)
                assert self.s.list() == [], "a rejected batch must leave nothing behind"
                await self.s.start()
                return
            self.run_task = loop.create_task(self.s.run(specs), name="test-run")
            await asyncio.sleep(0)
            for info in self.s.list():
                plan = batch[names.index(info.name)][1]
                self.track(BatchHandle(self.s, info, self.recorder), plan, None)

        self.run(start())

    # ------------------------------------------------------------------ rules

    @rule(name=st.sampled_from(NAMES), plan=plans)
    def add(self, name: str, plan: Plan) -> None:
        async def step() -> None:
            self.add_now(name, plan)

        self.run(step())

    def add_now(self, name: str, plan: Plan) -> None:
        sup = self.s
        spec = self.spec(name, plan)
        if self.closing:
            with pytest.raises(tv.SupervisorClosed):
                sup.add(spec)
            return
        if sup.is_alive(name):
            with pytest.raises(tv.TaskAlreadyExists) as err:
                sup.add(spec)
            assert err.value.name == name
            return
        handle = sup.add(spec)
        self.track(handle, plan, None)
        info = sup.get(name)
        assert info is not None
        assert info.id == handle.id
        assert sup.is_alive(name)

    @rule(
        name=st.sampled_from(NAMES),
        plan=plans,
        slot=st.sampled_from((*SLOTS, None)),
        policy=st.sampled_from(tv.AdmissionPolicy),
    )
    def submit(self, name: str, plan: Plan, slot: str | None, policy: tv.AdmissionPolicy) -> None:
        async def step() -> None:
            sup = self.s
            spec = self.spec(name, plan)
            maker = {
                tv.AdmissionPolicy.QUEUE: tv.ControllerSpec.queue,
                tv.AdmissionPolicy.REPLACE: tv.ControllerSpec.replace,
                tv.AdmissionPolicy.DROP_IF_RUNNING: tv.ControllerSpec.drop_if_running,
            }[policy]
            cspec = maker(spec, slot)
            if self.closing:
                with pytest.raises(tv.SupervisorClosed):
                    sup.submit(cspec)
                return
            key = name if slot is None else slot
            snap = sup.controller_snapshot()
            assert snap is not None
            view = {v.slot: v for v in snap.slots}.get(key)
            waiting = sorted((t for t in self.queued() if t.slot == key), key=lambda t: t.key or 0)
            name_taken = sup.is_alive(name)
            handle = sup.submit(cspec)
            assert handle.name == name
            tracked = self.track(handle, plan, key)
            outcome = handle.outcome
            if view is None:  # idle slot: admitted (or refused) at once
                assert not waiting
                if name_taken:
                    assert outcome is not None
                    assert outcome.rejection is RJ.ALREADY_EXISTS
                else:
                    assert outcome is None
                    assert sup.get(handle.id) is not None
                return
            assert view.owner is not None, view
            assert view.queued == len(waiting), (view, waiting)
            if policy is tv.AdmissionPolicy.DROP_IF_RUNNING:
                assert outcome is not None
                assert outcome.rejection is RJ.SLOT_BUSY
            elif policy is tv.AdmissionPolicy.QUEUE:
                if view.queued >= self.max_slot_queue:
                    assert outcome is not None
                    assert outcome.rejection is RJ.QUEUE_FULL
                else:
                    assert outcome is None
                    tracked.key = next(self.back)
                    self.queues[key].append(tracked)
            else:
                assert outcome is None
                if waiting:
                    head = waiting[0].handle.outcome
                    assert head is not None, "a replace must supersede the queue head"
                    assert head.rejection is RJ.SUPERSEDED
                    assert all(not t.handle.done() for t in waiting[1:])
                tracked.key = next(self.front)
                self.queues[key].append(tracked)
                owner = sup.get(view.owner)
                assert owner is None or owner.state is tv.TaskState.STOPPING

        self.run(step())

    @rule(
        name=st.sampled_from(NAMES),
        plan=plans,
        slot=st.sampled_from(SLOTS),
        policy=st.sampled_from(tv.AdmissionPolicy),
    )
    def submit_to_shared_slot(
        self, name: str, plan: Plan, slot: str, policy: tv.AdmissionPolicy
    ) -> None:
        """Submissions of different names contending for one slot (twice as likely)."""
        self.submit(name, plan, slot, policy)

    def pick_key(self, choice: str, index: int, name: str) -> int | str:
        """A task id or a name: mostly ones the test knows, sometimes unknown ones.

        Every rule draws the same values whatever happened at run time (Hypothesis needs
        data generation that does not depend on timing); they are mapped onto what exists.
        """
        ids = sorted(self.tracked)
        if choice.startswith("queued"):
            queued = sorted(self.queued(), key=lambda t: int(t.handle.id))
            if not queued:
                return name
            t = queued[index % len(queued)]
            return int(t.handle.id) if choice == "queued-id" else t.handle.name
        if choice == "unknown-id" or (choice == "id" and not ids):
            return 10**12
        if choice == "unknown-name" or not ids:
            return name
        task_id = ids[index % len(ids)]
        return task_id if choice == "id" else self.tracked[task_id].handle.name

    @rule(
        choice=st.sampled_from(
            ["name", "id", "id", "queued-id", "queued-name", "unknown-id", "unknown-name"]
        ),
        index=st.integers(min_value=0, max_value=63),
        name=st.sampled_from(NAMES),
        how=st.sampled_from(["remove", "cancel", "handle", "background", "timeout"]),
        timeout=st.sampled_from([0.0, 0.001, 0.01]),
    )
    def stop(self, choice: str, index: int, name: str, how: str, timeout: float) -> None:
        """Stop a task (or a queued submission, or nothing) in one of five ways."""
        key = self.pick_key(choice, index, name)
        known = self.tracked.get(key) if isinstance(key, int) else None
        sup = self.s

        async def step() -> None:
            if how == "remove":
                self.expect_stop(key, lambda: sup.remove(key))
            elif how == "cancel" or known is None:
                await self.cancel_now(key, None)
            elif how == "handle":
                await self.cancel_now(key, known.handle)
            elif how == "background":
                task = asyncio.get_running_loop().create_task(
                    self.cancel_now(key, known.handle), name="test-cancel"
                )
                self.spawned.append(task)
            else:
                await self.cancel_with_timeout(key, timeout)

        self.run(step())

    async def cancel_now(self, key: int | str, handle: tv.TaskHandle | BatchHandle | None) -> None:
        """Cancel and wait: the task is cleaned up when it returns, within the bound."""
        sup = self.s
        loop = asyncio.get_running_loop()
        pre = sup.get(key)
        queued = self.queued_target(key) if pre is None else None
        started = loop.time()
        result = await (handle.cancel() if handle is not None else sup.cancel(key))
        took = loop.time() - started
        self.check_stop(key, pre, queued, result)
        if pre is not None:
            assert self.tracked[int(pre.id)].handle.done(), "cancel returned before cleanup"
            assert sup.get(pre.id) is None
            limit = self.grace + FORCE_WAIT + MARGIN
            assert took <= limit, f"cancel took {took:.3f}s > {limit:.3f}s"

    async def cancel_with_timeout(self, key: int | str, timeout: float) -> None:
        sup = self.s
        pre = sup.get(key)
        queued = self.queued_target(key) if pre is None else None
        expired: tv.TaskTerminationTimeout | None = None
        try:
            result = await sup.cancel(key, timeout=timeout)
        except tv.TaskTerminationTimeout as exc:
            expired = exc
        if expired is None:
            self.check_stop(key, pre, queued, result)
            if pre is not None:
                assert self.tracked[int(pre.id)].handle.done()
            return
        assert pre is not None
        assert expired.task_id == pre.id
        assert expired.timeout == timeout
        after = sup.get(pre.id)
        assert after is None or after.state is tv.TaskState.STOPPING, "the stop must proceed"
        self.stop_calls.append(StopCall(int(pre.id), None))

    @rule(name=st.sampled_from(NAMES), plan=plans, wait=st.booleans())
    def stop_then_add_again(self, name: str, plan: Plan, wait: bool) -> None:
        """Cancel (waiting) or remove (not waiting) a name, then add it again at once."""

        async def step() -> None:
            if wait:
                await self.cancel_now(name, None)
            else:
                self.expect_stop(name, lambda: self.s.remove(name))
            # After a cancel the name is free, unless a queued submission of that name was just
            # admitted in its place by the slot's cleanup; after a remove it is usually still
            # taken. `add_now` expects exactly what `is_alive` says.
            self.add_now(name, plan)

        self.run(step())

    @rule(seconds=st.sampled_from([0.0, 0.001, 0.005, 0.02, 0.06]))
    def time_passes(self, seconds: float) -> None:
        async def step() -> None:
            await asyncio.sleep(seconds)
            await self.no_starvation()

        self.run(step())

    async def no_starvation(self) -> None:
        """No task waits for a concurrency slot while one is free (no slot leaks).

        A slot handed to a waiter is taken before the waiter resumes, so the condition can
        hold for an iteration or two; a leaked slot makes it hold forever.
        """
        limit = self.max_concurrent
        if limit is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.5
        while True:
            waiting = [i for i in self.s.list() if i.state is tv.TaskState.WAITING]
            busy = len(self.live())
            if not waiting or busy >= limit:
                return
            assert loop.time() < deadline, f"{waiting} wait while {busy} of {limit} slots run"
            await asyncio.sleep(0.001)

    @precondition(lambda self: not self.shutdown_called and self.steps_here > STEPS // 3)
    @rule(name=st.sampled_from(NAMES), plan=plans)
    def shutdown(self, name: str, plan: Plan) -> None:
        self.shutdown_called = True
        self.run(self.shutdown_now(name, plan))

    async def shutdown_now(self, name: str, plan: Plan) -> None:
        sup = self.s
        loop = asyncio.get_running_loop()
        stubborn = [
            t
            for t in self.tracked.values()
            if t.plan.body is Body.STUBBORN
            and not t.handle.done()
            and any(r.task_id == int(t.handle.id) for r in self.running)
        ]
        # Not stopping yet: nothing can finish them before the shutdown asks them to stop.
        fresh = {
            t.handle.name
            for t in stubborn
            if (info := sup.get(t.handle.id)) is not None
            and info.state is not tv.TaskState.STOPPING
        }
        started = loop.time()
        first = asyncio.ensure_future(sup.shutdown())
        await asyncio.sleep(0)
        # Calls racing the shutdown: admission is closed, stop calls stay well-behaved.
        assert sup.closed
        with pytest.raises(tv.SupervisorClosed):
            sup.add(self.spec(name, plan))
        with pytest.raises(tv.SupervisorClosed):
            sup.submit(tv.ControllerSpec.queue(self.spec(name, plan)))
        self.expect_stop(name, lambda: sup.remove(name))
        second = await sup.shutdown()
        report = await first
        took = loop.time() - started
        assert report is second, "every shutdown caller gets the same report"
        self.report = report
        limit = self.grace + (FORCE_WAIT if stubborn else 0.0) + SUB_TIMEOUT + 0.1 + MARGIN
        assert took <= limit, f"shutdown took {took:.3f}s > {limit:.3f}s"
        assert report.grace == self.grace
        assert report.grace_exceeded is bool(report.stuck)
        assert list(report.stuck) == sorted(report.stuck)
        assert fresh <= set(report.stuck), "a body that ignores its stop must be reported"
        for stuck in report.stuck:
            forced = [
                t
                for t in self.tracked.values()
                if t.handle.name == stuck
                and t.handle.outcome is not None
                and t.handle.outcome.kind is O.FORCE_ABORTED
            ]
            assert forced, f"{stuck} reported stuck but not FORCE_ABORTED"
            assert all(t.plan.body in SLOW_TO_STOP for t in forced), f"{stuck} reported stuck"
        assert sup.list() == []
        for t in self.tracked.values():
            assert t.handle.done(), f"{t.handle} unresolved after shutdown"

    @precondition(lambda self: self.shutdown_called)
    @rule()
    def calls_after_shutdown(self) -> None:
        async def step() -> None:
            sup = self.s
            assert sup.list() == []
            assert sup.remove("a") is False
            assert await sup.cancel("a") is False
            report = await sup.shutdown()
            if self.report is None:  # `run` shut down by itself
                self.report = report
            assert report is self.report
            with pytest.raises(tv.SupervisorClosed):
                await sup.start()
            still_running = self.run_task is not None and not self.run_task.done()
            with pytest.raises(tv.AlreadyRunning if still_running else tv.SupervisorClosed):
                await sup.run([])

        self.run(step())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def consistent(self) -> None:
        if self.sup is None:
            return
        sup = self.sup
        assert not self.violations, self.violations
        # Outcomes: resolved at most once, never changed.
        for t in self.tracked.values():
            o = t.handle.outcome
            if t.outcome is not None:
                assert o is t.outcome, "an outcome changed"
            elif o is not None:
                t.outcome = o
                assert isinstance(o, tv.TaskOutcome)
        # The model queues: FIFO (smaller key first), counts as in the snapshot.
        snap = sup.controller_snapshot()
        assert snap is not None
        views = {v.slot: v for v in snap.slots}
        listed = sup.list()
        by_id = {int(i.id): i for i in listed}
        for slot, queue in list(self.queues.items()):
            inside = sorted(
                (t for t in queue if t.outcome is None or t.outcome.rejection not in OUT_OF_ORDER),
                key=lambda t: t.key or 0,
            )
            gone = [t.outcome is not None or int(t.handle.id) in by_id for t in inside]
            assert gone == sorted(gone, reverse=True), f"slot {slot!r} broke FIFO order"
            waiting = [t for t, g in zip(inside, gone, strict=True) if not g]
            view = views.get(slot)
            assert (view.queued if view else 0) == len(waiting), (slot, view, waiting)
            self.queues[slot] = waiting
        queued_ids = {int(t.handle.id) for q in self.queues.values() for t in q}
        pending = {i for i, t in self.tracked.items() if not t.handle.done()}
        # list(): exactly the admitted tasks whose outcome is not resolved yet, sorted by id.
        assert [int(i.id) for i in listed] == sorted(by_id)
        assert set(by_id) == pending - queued_ids
        assert len({i.name for i in listed}) == len(listed), "a name registered twice"
        for info in listed:
            assert sup.get(info.name) == sup.get(info.id)
            assert sup.is_alive(info.name)
            # Restarts are attempts started after a failed one (SPEC §13): never more than
            # the attempts after the first, none before a failure.
            assert 0 <= info.restarts <= max(0, info.attempt - 1)
            if info.last_error is None:
                assert info.restarts == 0
        for name in NAMES:
            assert sup.is_alive(name) is any(i.name == name for i in listed)
        # Slots: one owner each, and it is a registered task of that slot.
        owners = [v.owner for v in snap.slots if v.owner is not None]
        assert snap.running == len(owners)
        assert snap.queued == sum(v.queued for v in snap.slots)
        for v in snap.slots:
            assert v.owner is not None, f"busy slot {v.slot!r} without an owner"
            assert v.state in (tv.SlotState.RUNNING, tv.SlotState.TERMINATING)
            assert int(v.owner) in by_id
            assert self.tracked[int(v.owner)].slot == v.slot
        for info in listed:
            owned = self.tracked[int(info.id)].slot
            if owned is not None:
                view = views.get(owned)
                assert view is not None, f"{info} registered but slot {owned!r} is idle"
                assert view.owner == info.id, f"{info} registered but not owning {owned!r}"
        if self.max_concurrent is not None:
            assert len(self.live()) <= self.max_concurrent

    # ------------------------------------------------------------------ the end

    def teardown(self) -> None:
        passed = False
        try:
            if self.sup is not None:
                if not self.closing:
                    plan = Plan(Body.OK, tv.RestartPolicy.NEVER, 0, None, 0.0)
                    self.run(self.shutdown_now("a", plan))
                elif self.report is None:  # `run` shut down by itself: everything finished
                    self.report = self.run(self.s.shutdown())
                if self.run_task is not None:
                    assert self.run(self.run_task) is self.report, "run() returns the report"
                self.consistent()
                self.run(self.after_shutdown())
                self.check_events()
            passed = True
        finally:
            self.close_loop(check=passed)

    async def after_shutdown(self) -> None:
        # Background cancels all finished, with a bool; the events() stream ended.
        assert self.stream_task is not None
        async with asyncio.timeout(GUARD):
            await asyncio.wait([self.stream_task, *self.spawned])
        for task in (self.stream_task, *self.spawned):
            assert task.exception() is None, task
        # No library task left running, except bodies that swallow cancellation until released.
        mine = {t.stubborn_task for t in self.tracked.values() if t.stubborn_task is not None}
        for task in self.created:
            if task.get_name().startswith("taskvisor") and not task.done():
                assert task in mine, f"{task!r} still running after shutdown"
        self.release.set()
        me = asyncio.current_task()
        async with asyncio.timeout(GUARD):
            while left := [t for t in self.created if not t.done() and t is not me]:
                await asyncio.wait(left)
        for task in self.created:
            if task.get_name().startswith("taskvisor") and task.done():
                assert task.cancelled() or task.exception() is None, (
                    f"{task!r} ended with an exception nobody retrieves"
                )
        # Every stop call's True was the only one for its task.
        trues: dict[int, int] = defaultdict(int)
        for call in self.stop_calls:
            if call.target is not None and call.result:
                trues[call.target] += 1
        assert all(n == 1 for n in trues.values()), trues

    def check_events(self) -> None:
        events = self.recorder.events
        assert self.streamed == events, "events() and the subscriber saw different events"
        assert all(a.seq < b.seq for a, b in itertools.pairwise(events))
        assert not [e for e in events if e.is_diagnostic], "the recorder lost events"
        kinds = [e.kind for e in events]
        assert kinds.count(K.SHUTDOWN_REQUESTED) == 1
        assert kinds.count(K.ALL_STOPPED_WITHIN_GRACE) + kinds.count(K.GRACE_EXCEEDED) == 1
        assert self.report is not None
        assert (K.GRACE_EXCEEDED in kinds) is self.report.grace_exceeded
        # Each TASK_ADD_REQUESTED is answered once, by TASK_ADDED or TASK_ADD_FAILED, later.
        asked: dict[str, int] = defaultdict(int)
        for e in events:
            assert e.task is not None or e.kind not in LIFECYCLE
            if e.kind is K.TASK_ADD_REQUESTED:
                asked[e.task or ""] += 1
            elif e.kind in (K.TASK_ADDED, K.TASK_ADD_FAILED):
                asked[e.task or ""] -= 1
                assert asked[e.task or ""] >= 0, f"{e.kind} for {e.task} before it was asked"
        assert all(n == 0 for n in asked.values()), asked
        per_id: dict[int, list[tv.Event]] = defaultdict(list)
        for e in events:
            if e.task_id is not None:
                per_id[int(e.task_id)].append(e)
        for task_id, t in self.tracked.items():
            outcome = t.handle.outcome
            assert outcome is not None
            STATS.outcomes[(outcome.rejection or outcome.kind).value] += 1
            mine = per_id.get(task_id, [])
            if t.slot is not None:
                assert [e.kind for e in mine].count(K.CONTROLLER_SUBMITTED) == 1
            if outcome.kind is O.REJECTED:
                self.check_rejected(t, outcome, mine)
            else:
                self.check_task(t, outcome, [e for e in mine if e.kind in LIFECYCLE])

    def check_rejected(self, t: Tracked, outcome: tv.TaskOutcome, mine: list[tv.Event]) -> None:
        assert outcome.attempts == 0
        assert outcome.rejection is not None
        assert not [e for e in mine if e.kind in LIFECYCLE], "a rejected task has lifecycle events"
        rejected = [e for e in mine if e.kind is K.CONTROLLER_REJECTED]
        assert len(rejected) == 1
        assert rejected[0].rejection is outcome.rejection
        failed = [e for e in mine if e.kind is K.TASK_ADD_FAILED]
        assert len(failed) == (1 if outcome.rejection is RJ.ALREADY_EXISTS else 0)

    def check_task(self, t: Tracked, outcome: tv.TaskOutcome, events: list[tv.Event]) -> None:
        """SPEC §6 order, and the outcome its policy makes of its attempts."""
        plan = t.plan
        batch = isinstance(t.handle, BatchHandle)
        where = f"{t.handle} {plan}: {[(e.kind.value, e.attempt) for e in events]}"
        stopped = any(e.kind is K.TASK_REMOVE_REQUESTED for e in events)
        # Order: ADDED (STARTING terminal BACKOFF?)* [STARTING] FINISHED REMOVED, with at most
        # one REMOVE_REQUESTED before FINISHED. A lone STARTING at the end: abandoned body.
        assert events, where
        assert events[0].kind is K.TASK_ADDED, where
        state = "added"
        attempt = 0
        terminals: list[tv.Event] = []
        backoffs: dict[int, tv.Event] = {}
        for e in events[1:]:
            k = e.kind
            if k is K.TASK_REMOVE_REQUESTED:
                assert state not in ("finished", "removed"), where
            elif k is K.ATTEMPT_STARTING:
                assert state in ("added", "ended", "backoff"), where
                attempt += 1
                assert e.attempt == attempt, where
                state = "started"
            elif k in TERMINAL:
                assert state == "started", where
                assert e.attempt == attempt, where
                terminals.append(e)
                state = "ended"
            elif k is K.BACKOFF_SCHEDULED:
                assert state == "ended", where
                assert e.attempt == attempt, where
                backoffs[attempt] = e
                state = "backoff"
            elif k is K.TASK_FINISHED:
                assert state in ("added", "ended", "backoff") or (
                    state == "started" and outcome.kind is O.FORCE_ABORTED
                ), where
                assert e.outcome is outcome.kind, where
                assert (e.reason, e.exit_code) == (outcome.reason, outcome.exit_code), where
                state = "finished"
            else:
                assert k is K.TASK_REMOVED, where
                assert state == "finished", where
                state = "removed"
        assert state == "removed", where
        assert [e.kind for e in events].count(K.TASK_REMOVE_REQUESTED) <= 1, where
        assert outcome.attempts == attempt, where
        # Each attempt's end is one its body can produce.
        timeout = plan.effective_timeout
        for e in terminals:
            assert e.kind in allowed_ends(plan.body, timeout is not None, stopped), where
            if e.kind is K.ATTEMPT_FAILED:
                assert (e.reason, e.exit_code) == FAILURE_TEXT[plan.body], where
            if e.kind is K.ATTEMPT_TIMED_OUT:
                assert e.timeout == timeout, where
        # Replay the policy over the attempts.
        streak = 0
        verdict: O | None = None
        for i, e in enumerate(terminals, start=1):
            assert verdict is None, f"attempt {i} after a final verdict: {where}"
            k = e.kind
            if k is K.ATTEMPT_SUCCEEDED:
                streak = 0
                if plan.restart.mode is not tv.RestartMode.ALWAYS:
                    verdict = O.COMPLETED
            elif k is K.ATTEMPT_CANCELED:
                verdict = O.CANCELED
            elif k is K.ATTEMPT_FAILED and plan.body is Body.FATAL:
                verdict = O.FATAL
            elif k is K.ATTEMPT_FAILED and plan.body is Body.BASE_EXC:
                verdict = O.FAILED  # never retried
            else:
                streak += 1
                if plan.restart.mode is tv.RestartMode.NEVER or (
                    plan.max_retries is not None and streak > plan.max_retries
                ):
                    verdict = O.FAILED
            b = backoffs.get(i)
            if verdict is not None:
                assert b is None, where
            elif b is not None:
                if k is K.ATTEMPT_SUCCEEDED:
                    assert b.backoff_source is tv.BackoffSource.SUCCESS, where
                    interval = plan.restart.interval
                    assert b.delay is not None
                    assert b.delay == interval if interval is not None else b.delay <= 0.001
                    assert b.reason is None
                else:
                    assert b.backoff_source is tv.BackoffSource.FAILURE, where
                    assert b.delay == BACKOFF, where
                    assert b.reason is not None
            else:
                assert stopped, f"no backoff after attempt {i}: {where}"
                assert i == len(terminals), where
        if stopped:
            assert outcome.kind in (O.CANCELED, O.FORCE_ABORTED), where
            if plan.body not in SLOW_TO_STOP:
                assert outcome.kind is O.CANCELED, where
            assert outcome.error is None
            return
        # Not stopped: the task ended on its own, exactly as its last attempt dictates.
        assert verdict is not None, where
        assert attempt == len(terminals), where
        assert outcome.kind is verdict, where
        last = terminals[-1]
        if verdict is O.COMPLETED or verdict is O.CANCELED:
            assert outcome.error is None, where
        elif last.kind is K.ATTEMPT_TIMED_OUT:
            assert batch or isinstance(outcome.error, TimeoutError), where
            assert outcome.reason is not None
            assert "timed out" in outcome.reason
        else:
            assert batch or isinstance(outcome.error, ERROR_TYPE[plan.body]), where
            assert (outcome.reason, outcome.exit_code) == FAILURE_TEXT[plan.body], where
        assert t.handle.outcome is outcome

    def close_loop(self, *, check: bool) -> None:
        loop = self.loop
        try:
            self.release.set()
            leftovers = [t for t in self.created if not t.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=GUARD))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            supervisor_module.FORCE_WAIT = self.saved_force_wait
            self.created.clear()
            gc.collect()
        if check:
            assert not self.loop_errors, self.loop_errors


FAILURE_TEXT: dict[Body, tuple[str, int | None]] = {
    Body.FAIL: ("boom", 3),
    Body.FATAL: ("doom", 4),
    Body.CRASH: ("ValueError: crash", None),
    Body.BASE_EXC: ("Boom: boom", None),
}
ERROR_TYPE: dict[Body, type[BaseException]] = {
    Body.FAIL: tv.Fail,
    Body.FATAL: tv.Fatal,
    Body.CRASH: ValueError,
    Body.BASE_EXC: Boom,
}


def allowed_ends(body: Body, has_timeout: bool, stopped: bool) -> set[K]:
    """The terminal attempt events ``body`` can produce."""
    ends = {
        Body.OK: {K.ATTEMPT_SUCCEEDED},
        Body.FAIL: {K.ATTEMPT_FAILED},
        Body.FATAL: {K.ATTEMPT_FAILED},
        Body.CRASH: {K.ATTEMPT_FAILED},
        Body.TIMEOUT: set(),
        Body.LONG: {K.ATTEMPT_SUCCEEDED},
        Body.CTX_SLEEP: {K.ATTEMPT_SUCCEEDED},
        Body.LINGER: set(),
        Body.SWALLOW: {K.ATTEMPT_SUCCEEDED} if has_timeout else set(),  # swallows the timeout
        Body.STUBBORN: set(),
        Body.SELF_CANCEL: {K.ATTEMPT_CANCELED},
        Body.BASE_EXC: {K.ATTEMPT_FAILED},
    }[body]
    if has_timeout and body is not Body.SWALLOW:
        ends = ends | {K.ATTEMPT_TIMED_OUT}  # 1 ms can outlast 50 ms when the loop is paused
    if stopped:
        ends = ends | {K.ATTEMPT_CANCELED}
        if body is Body.SWALLOW:
            ends = ends | {K.ATTEMPT_SUCCEEDED}
    return ends


@pytest.mark.timeout(900)  # a failure is shrunk to a minimal sequence: that takes minutes
def test_supervisor_state_machine(capsys: pytest.CaptureFixture[str]) -> None:
    """Random sequences of calls keep every invariant (see the module docstring)."""
    before = Stats(STATS.examples, STATS.steps, STATS.tasks, Counter(STATS.outcomes))
    run_state_machine_as_test(
        SupervisorMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            report_multiple_bugs=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            print_blob=True,
        ),
    )
    with capsys.disabled():
        print(
            f"\n[state machine] {STATS.examples - before.examples} examples, "
            f"{STATS.steps - before.steps} steps, {STATS.tasks - before.tasks} tasks "
            f"(TASKVISOR_STATEFUL_EXAMPLES={EXAMPLES}, TASKVISOR_STATEFUL_STEPS={STEPS}); "
            f"outcomes: {dict((STATS.outcomes - before.outcomes).most_common())}"
        )
