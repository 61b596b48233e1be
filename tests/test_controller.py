"""The per-key admission controller: slots, queue / replace / drop-if-running, rejections.

Every wait is on an event, a handle or a snapshot condition, under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import taskvisor as tv
from taskvisor._actor import stopped_outcome
from taskvisor._controller import Controller, _Slot

GUARD = 10.0
Body = Callable[[tv.TaskContext], Awaitable[None]]
AnyBody = Body | Callable[[], Awaitable[None]]
K = tv.EventKind
R = tv.RejectionKind
S = tv.SlotState


class Events(tv.Subscriber):
    """Keeps every event; read it after shutdown, when every queue has been drained."""

    queue_capacity = 1_000_000

    def __init__(self) -> None:
        self.events: list[tv.Event] = []

    def on_event(self, event: tv.Event) -> None:
        self.events.append(event)

    def of(self, kind: tv.EventKind, **fields: Any) -> list[tv.Event]:
        return [
            e
            for e in self.events
            if e.kind is kind and all(getattr(e, k) == v for k, v in fields.items())
        ]

    def transitions(self, slot: str) -> list[str | None]:
        return [e.reason for e in self.of(K.CONTROLLER_SLOT_TRANSITION, slot=slot)]


class Probe:
    """Task bodies that record when they start and end, per slot, and block on a gate."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[str] = []
        self.active: collections.Counter[str] = collections.Counter()
        self.peak: collections.Counter[str] = collections.Counter()
        self.gates: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.starts: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)

    def body(self, label: str, slot: str, gate: str | None = None) -> Body:
        async def fn(ctx: tv.TaskContext) -> None:
            self.started.append(label)
            self.active[slot] += 1
            self.peak[slot] = max(self.peak[slot], self.active[slot])
            self.starts[label].set()
            try:
                if gate is not None:
                    await self.gates[gate].wait()
            finally:
                self.active[slot] -= 1
                self.ended.append(label)

        return fn

    async def started_(self, label: str) -> None:
        async with asyncio.timeout(GUARD):
            await self.starts[label].wait()


def once(name: str, fn: AnyBody) -> tv.TaskSpec:
    return tv.TaskSpec.once(name, fn)


def queue(name: str, fn: AnyBody, slot: str | None = None) -> tv.ControllerSpec:
    return tv.ControllerSpec.queue(once(name, fn), slot=slot)


def replace(name: str, fn: AnyBody, slot: str | None = None) -> tv.ControllerSpec:
    return tv.ControllerSpec.replace(once(name, fn), slot=slot)


def drop(name: str, fn: AnyBody, slot: str | None = None) -> tv.ControllerSpec:
    return tv.ControllerSpec.drop_if_running(once(name, fn), slot=slot)


async def outcomes(*handles: tv.TaskHandle) -> list[tv.TaskOutcome]:
    async with asyncio.timeout(GUARD):
        return [await h for h in handles]


def rejected(outcome: tv.TaskOutcome, kind: tv.RejectionKind) -> bool:
    return outcome.kind is tv.OutcomeKind.REJECTED and outcome.rejection is kind and not outcome.ok


def controller(sup: tv.Supervisor) -> Controller:
    ctrl = sup._controller
    assert ctrl is not None
    return ctrl


def slot_views(sup: tv.Supervisor) -> dict[str, tuple[tv.SlotState, int | None, int]]:
    snap = sup.controller_snapshot()
    assert snap is not None
    return {v.slot: (v.state, v.owner, v.queued) for v in snap.slots}


def assert_no_leftovers(sup: tv.Supervisor, *names: str) -> None:
    """No slot is left (an idle slot is forgotten) and nothing runs or waits; none of
    ``names`` is still known to the supervisor, as a task or as a queued submission."""
    assert sup.controller_snapshot() == tv.ControllerSnapshot([], 0, 0)
    for name in names:
        assert sup.get(name) is None
        assert sup.remove(name) is False


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def sup(events: Events) -> AsyncIterator[tv.Supervisor]:
    """A started supervisor with a controller (queue limit 100) and an event recorder."""
    s = tv.Supervisor(
        tv.SupervisorConfig(grace=2.0, handle_signals=False),
        subscribers=[events],
        controller=tv.ControllerConfig(),
    )
    await s.start()
    yield s
    async with asyncio.timeout(GUARD * 2):
        await s.shutdown()


def make_sup(events: Events | None = None, **controller_kw: Any) -> tv.Supervisor:
    return tv.Supervisor(
        tv.SupervisorConfig(grace=2.0, handle_signals=False),
        subscribers=[] if events is None else [events],
        controller=tv.ControllerConfig(**controller_kw),
    )


# ---------------------------------------------------------------------------- admission


async def test_idle_slot_admits_at_once(sup: tv.Supervisor, probe: Probe) -> None:
    h = sup.submit(queue("job", probe.body("job", "job", gate="g")))
    assert sup.is_alive("job")
    info = sup.get(h.id)
    assert info is not None
    assert info.id == h.id
    assert info.name == h.name == "job"
    assert slot_views(sup) == {"job": (S.RUNNING, h.id, 0)}
    probe.gates["g"].set()
    [out] = await outcomes(h)
    assert out.ok
    assert out.attempts == 1
    assert_no_leftovers(sup)


async def test_slot_defaults_to_task_name() -> None:
    async def body() -> None:
        pass

    spec = once("alpha", body)
    assert tv.ControllerSpec.queue(spec).slot == "alpha"
    assert tv.ControllerSpec.replace(spec, slot="k").slot == "k"
    cs = tv.ControllerSpec.drop_if_running(spec)
    assert (cs.policy, cs.slot, cs.spec) == (tv.AdmissionPolicy.DROP_IF_RUNNING, "alpha", spec)


async def test_queue_runs_fifo_one_at_a_time(sup: tv.Supervisor, probe: Probe) -> None:
    first = sup.submit(queue("t0", probe.body("t0", "s", gate="g"), slot="s"))
    rest = [sup.submit(queue(f"t{i}", probe.body(f"t{i}", "s"), slot="s")) for i in range(1, 6)]
    await probe.started_("t0")
    assert slot_views(sup) == {"s": (S.RUNNING, first.id, 5)}
    assert probe.started == ["t0"]
    probe.gates["g"].set()
    outs = await outcomes(first, *rest)
    assert all(o.ok for o in outs)
    assert probe.started == [f"t{i}" for i in range(6)]
    assert probe.peak["s"] == 1
    assert_no_leftovers(sup)


async def test_same_name_queued_reuses_the_name_after_each_cleanup(
    sup: tv.Supervisor, events: Events
) -> None:
    seen: list[tuple[int, bool]] = []

    async def body(ctx: tv.TaskContext) -> None:
        seen.append((ctx.id, sup.is_alive("job")))

    handles = [sup.submit(queue("job", body)) for _ in range(5)]
    outs = await outcomes(*handles)
    assert all(o.ok for o in outs)
    assert [i for i, _ in seen] == [h.id for h in handles]
    assert len({h.id for h in handles}) == 5
    assert all(alive for _, alive in seen)
    await sup.shutdown()
    assert events.of(K.TASK_ADD_FAILED) == []
    assert [e.task_id for e in events.of(K.TASK_ADDED, task="job")] == [h.id for h in handles]


async def test_body_can_queue_into_its_own_slot(sup: tv.Supervisor, probe: Probe) -> None:
    later: list[tv.TaskHandle] = []

    async def first(ctx: tv.TaskContext) -> None:
        later.append(sup.submit(queue("second", probe.body("second", "s"), slot="s")))
        assert slot_views(sup)["s"] == (S.RUNNING, ctx.id, 1)

    h = sup.submit(queue("first", first, slot="s"))
    outs = await outcomes(h)
    outs += await outcomes(*later)
    assert [o.ok for o in outs] == [True, True]
    assert probe.started == ["second"]
    assert_no_leftovers(sup)


async def test_resubmit_right_after_the_owners_cleanup(sup: tv.Supervisor, probe: Probe) -> None:
    h1 = sup.submit(queue("job", probe.body("a", "job")))
    [out] = await outcomes(h1)
    assert out.ok
    # Same step as the outcome: the name is released and the slot is idle already.
    h2 = sup.submit(drop("job", probe.body("b", "job", gate="g")))
    assert sup.is_alive("job")
    assert slot_views(sup) == {"job": (S.RUNNING, h2.id, 0)}
    probe.gates["g"].set()
    [out2] = await outcomes(h2)
    assert out2.ok
    assert probe.started == ["a", "b"]


async def test_resubmit_on_task_removed_event(sup: tv.Supervisor, probe: Probe) -> None:
    stream = sup.events()
    h1 = sup.submit(queue("job", probe.body("a", "job")))
    handles: list[tv.TaskHandle] = []
    async with asyncio.timeout(GUARD):
        async for e in stream:
            if e.kind is K.TASK_REMOVED and e.task_id == h1.id:
                handles.append(sup.submit(drop("job", probe.body("b", "job"))))
                break
    await stream.aclose()
    outs = await outcomes(h1, *handles)
    assert [o.ok for o in outs] == [True, True]
    assert probe.started == ["a", "b"]


async def test_run_waits_for_queued_controller_work(probe: Probe) -> None:
    sup = make_sup()
    handles: list[tv.TaskHandle] = []

    async def starter() -> None:
        for i in range(3):
            handles.append(sup.submit(queue(f"q{i}", probe.body(f"q{i}", "s"), slot="s")))

    async with asyncio.timeout(GUARD):
        report = await sup.run([once("starter", starter)])
    assert not report.grace_exceeded
    assert probe.started == ["q0", "q1", "q2"]
    assert all(h.outcome is not None and h.outcome.ok for h in handles)


# ---------------------------------------------------------------------------- events


async def test_admission_and_slot_transition_events(sup: tv.Supervisor, events: Events) -> None:
    async def body() -> None:
        pass

    h = sup.submit(queue("job", body, slot="k"))
    await outcomes(h)
    await sup.shutdown()
    [submitted] = events.of(K.CONTROLLER_SUBMITTED)
    assert (submitted.task, submitted.task_id, submitted.slot) == ("job", h.id, "k")
    assert events.transitions("k") == ["idle→admitting", "admitting→running", "running→idle"]
    mine = [
        e.kind
        for e in events.events
        if e.task == "job" or (e.kind is K.CONTROLLER_SLOT_TRANSITION and e.slot == "k")
    ]
    assert mine == [
        K.CONTROLLER_SUBMITTED,
        K.CONTROLLER_SLOT_TRANSITION,
        K.TASK_ADD_REQUESTED,
        K.TASK_ADDED,
        K.CONTROLLER_SLOT_TRANSITION,
        K.ATTEMPT_STARTING,
        K.ATTEMPT_SUCCEEDED,
        K.TASK_FINISHED,
        K.TASK_REMOVED,
        K.CONTROLLER_SLOT_TRANSITION,
    ]
    [added] = events.of(K.TASK_ADDED, task="job")
    assert added.task_id == h.id


async def test_replace_transition_events(sup: tv.Supervisor, events: Events, probe: Probe) -> None:
    old = sup.submit(queue("a", probe.body("a", "k", gate="never"), slot="k"))
    await probe.started_("a")
    new = sup.submit(replace("b", probe.body("b", "k"), slot="k"))
    outs = await outcomes(old, new)
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert outs[1].ok
    await sup.shutdown()
    assert events.transitions("k") == [
        "idle→admitting",
        "admitting→running",
        "running→terminating",
        "terminating→admitting",
        "admitting→running",
        "running→idle",
    ]
    assert all(e.task is None for e in events.of(K.CONTROLLER_SLOT_TRANSITION))


# ---------------------------------------------------------------------------- replace


async def test_replace_stops_the_owner_and_starts_after_its_cleanup(
    sup: tv.Supervisor, probe: Probe
) -> None:
    old = sup.submit(queue("job", probe.body("old", "job", gate="never")))
    await probe.started_("old")
    checks: list[bool] = []

    async def newer() -> None:
        checks.append(old.done() and "old" in probe.ended)

    new = sup.submit(replace("job", newer))
    assert slot_views(sup) == {"job": (S.TERMINATING, old.id, 1)}
    outs = await outcomes(old, new)
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert outs[1].ok
    assert checks == [True]
    assert_no_leftovers(sup)


async def test_replace_into_an_idle_slot_is_a_plain_admission(
    sup: tv.Supervisor, probe: Probe
) -> None:
    h = sup.submit(replace("job", probe.body("job", "job")))
    assert slot_views(sup) == {"job": (S.RUNNING, h.id, 0)}
    [out] = await outcomes(h)
    assert out.ok
    assert probe.started == ["job"]


async def test_replace_supersedes_only_the_queue_head(sup: tv.Supervisor, probe: Probe) -> None:
    owner = sup.submit(queue("o", probe.body("o", "s", gate="never"), slot="s"))
    q1 = sup.submit(queue("q1", probe.body("q1", "s"), slot="s"))
    q2 = sup.submit(queue("q2", probe.body("q2", "s"), slot="s"))
    await probe.started_("o")
    r = sup.submit(replace("r", probe.body("r", "s"), slot="s"))
    assert q1.outcome is not None
    assert rejected(q1.outcome, R.SUPERSEDED)
    assert slot_views(sup) == {"s": (S.TERMINATING, owner.id, 2)}
    outs = await outcomes(owner, r, q2)
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert outs[1].ok
    assert outs[2].ok
    assert probe.started == ["o", "r", "q2"]


async def test_replace_storm_in_one_burst(sup: tv.Supervisor, probe: Probe) -> None:
    owner = sup.submit(queue("job", probe.body("owner", "job", gate="never")))
    await probe.started_("owner")
    storm = [sup.submit(replace("job", probe.body(f"r{i}", "job"))) for i in range(50)]
    outs = await outcomes(owner, *storm)
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert all(rejected(o, R.SUPERSEDED) for o in outs[1:-1])
    assert outs[-1].ok
    assert probe.started == ["owner", "r49"]
    assert probe.peak["job"] == 1
    assert_no_leftovers(sup)


async def test_replace_storm_from_concurrent_tasks(sup: tv.Supervisor, probe: Probe) -> None:
    go = asyncio.Event()
    order: list[tv.TaskHandle] = []

    async def submitter(i: int) -> None:
        await go.wait()
        for _ in range(i % 7):  # spread the storm over loop steps, among owners' cleanups
            await asyncio.sleep(0)
        order.append(sup.submit(replace("job", probe.body(f"r{i}", "job", gate="end"))))

    tasks = [asyncio.create_task(submitter(i)) for i in range(50)]
    go.set()
    async with asyncio.timeout(GUARD):
        await asyncio.gather(*tasks)
    outs = await outcomes(*order[:-1])  # all but the last resolve without the gate
    assert all(o.kind in (tv.OutcomeKind.REJECTED, tv.OutcomeKind.CANCELED) for o in outs)
    assert all(o.rejection is R.SUPERSEDED for o in outs if o.kind is tv.OutcomeKind.REJECTED)
    probe.gates["end"].set()
    [survivor] = await outcomes(order[-1])
    assert survivor.ok
    assert probe.peak["job"] == 1
    assert probe.ended == probe.started  # one at a time, each ended before the next began
    assert_no_leftovers(sup)


async def test_replace_storm_into_an_idle_slot_runs_one_body(
    sup: tv.Supervisor, probe: Probe
) -> None:
    storm = [sup.submit(replace("job", probe.body(f"r{i}", "job"))) for i in range(50)]
    outs = await outcomes(*storm)
    # The first was admitted at once, then stopped before its body ever ran.
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert outs[0].attempts == 0
    assert all(rejected(o, R.SUPERSEDED) for o in outs[1:-1])
    assert outs[-1].ok
    assert probe.started == ["r49"]
    assert_no_leftovers(sup)


async def test_replace_with_a_zero_queue_limit_still_takes_the_head(probe: Probe) -> None:
    async with make_sup(max_slot_queue=0) as sup:
        owner = sup.submit(queue("o", probe.body("o", "s", gate="never"), slot="s"))
        q = sup.submit(queue("q", probe.body("q", "s"), slot="s"))
        r = sup.submit(replace("r", probe.body("r", "s"), slot="s"))
        outs = await outcomes(owner, q, r)
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert rejected(outs[1], R.QUEUE_FULL)
    assert outs[2].ok


# ------------------------------------------------- replace while the owner finishes by itself


async def test_replace_in_the_step_the_owner_is_released(sup: tv.Supervisor, probe: Probe) -> None:
    old = sup.submit(queue("job", probe.body("old", "job", gate="g")))
    await probe.started_("old")
    probe.gates["g"].set()  # the owner may now finish by itself...
    new = sup.submit(replace("job", probe.body("new", "job")))  # ...but the Replace is first
    outs = await outcomes(old, new)
    assert outs[0].kind in (tv.OutcomeKind.CANCELED, tv.OutcomeKind.COMPLETED)
    assert outs[1].ok
    assert probe.started == ["old", "new"]
    assert probe.ended == ["old", "new"]
    assert probe.peak["job"] == 1
    assert_no_leftovers(sup)


async def test_replace_while_the_owner_runs_its_own_teardown(
    sup: tv.Supervisor, events: Events
) -> None:
    loop = asyncio.get_running_loop()
    teardown: asyncio.Future[None] = loop.create_future()
    in_teardown = asyncio.Event()
    stop_seen = asyncio.Event()
    log: list[str] = []

    async def owner() -> None:
        in_teardown.set()
        try:
            await asyncio.shield(teardown)
        except asyncio.CancelledError:
            log.append("stop seen")
            stop_seen.set()
            await teardown  # finish the teardown anyway, then return normally
        log.append("owner returned")

    async def newer() -> None:
        log.append(f"new started; old done={old.done()} alive={sup.get(old.id) is not None}")

    old = sup.submit(queue("job", owner))
    async with asyncio.timeout(GUARD):
        await in_teardown.wait()
    first = sup.submit(replace("job", newer))
    second = sup.submit(replace("job", newer))
    assert first.outcome is not None
    assert rejected(first.outcome, R.SUPERSEDED)
    assert slot_views(sup) == {"job": (S.TERMINATING, old.id, 1)}
    # Let the owner see its stop; it keeps finishing its teardown, and nothing new starts.
    async with asyncio.timeout(GUARD):
        await stop_seen.wait()
    assert log == ["stop seen"]
    assert slot_views(sup) == {"job": (S.TERMINATING, old.id, 1)}
    teardown.set_result(None)
    outs = await outcomes(old, second)
    assert outs[0].kind is tv.OutcomeKind.CANCELED  # returned normally after a stop request
    assert outs[1].ok
    assert log == ["stop seen", "owner returned", "new started; old done=True alive=False"]
    await sup.shutdown()
    assert len(events.of(K.ATTEMPT_SUCCEEDED, task_id=old.id)) == 1


async def test_replace_after_the_owner_was_cancelled_by_the_user(
    sup: tv.Supervisor, probe: Probe
) -> None:
    loop = asyncio.get_running_loop()
    release: asyncio.Future[None] = loop.create_future()
    stopping = asyncio.Event()

    running = asyncio.Event()

    async def owner(ctx: tv.TaskContext) -> None:
        running.set()
        try:
            await ctx.cancelled()
        finally:
            stopping.set()
            await asyncio.shield(release)

    old = sup.submit(queue("job", owner))
    async with asyncio.timeout(GUARD):
        await running.wait()
    assert sup.remove("job") is True  # the user stops the owner: the slot stays RUNNING
    async with asyncio.timeout(GUARD):
        await stopping.wait()
    assert slot_views(sup) == {"job": (S.RUNNING, old.id, 0)}
    new = sup.submit(replace("job", probe.body("new", "job")))
    assert slot_views(sup) == {"job": (S.TERMINATING, old.id, 1)}
    assert probe.started == []
    release.set_result(None)
    outs = await outcomes(old, new)
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert outs[1].ok
    assert probe.started == ["new"]


async def test_replace_of_an_owner_that_swallows_cancellation(probe: Probe) -> None:
    # The supervisor gives up on the old body a short while (about 1 s) after forcing it.
    release = asyncio.Event()
    exited = asyncio.Event()
    started = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while True:
            try:
                await release.wait()
                break
            except asyncio.CancelledError:
                continue
        exited.set()

    sup = tv.Supervisor(
        tv.SupervisorConfig(grace=0.05, handle_signals=False),
        controller=tv.ControllerConfig(),
    )
    async with sup:
        old = sup.submit(queue("job", stubborn))
        async with asyncio.timeout(GUARD):
            await started.wait()
        new = sup.submit(replace("job", probe.body("new", "job")))
        outs = await outcomes(old, new)
        # The slot moved on once the supervisor gave up on the old body.
        assert outs[0].kind is tv.OutcomeKind.FORCE_ABORTED
        assert outs[1].ok
        assert not exited.is_set()
        release.set()
        async with asyncio.timeout(GUARD):
            await exited.wait()
        assert_no_leftovers(sup)


# ---------------------------------------------------------------------------- drop if running


async def test_drop_if_running_storm_runs_one_body(sup: tv.Supervisor, probe: Probe) -> None:
    storm = [sup.submit(drop("job", probe.body(f"d{i}", "job"))) for i in range(50)]
    outs = await outcomes(*storm)
    assert outs[0].ok
    assert all(rejected(o, R.SLOT_BUSY) for o in outs[1:])
    assert probe.started == ["d0"]
    assert_no_leftovers(sup)


async def test_drop_if_running_is_refused_while_work_is_queued(
    sup: tv.Supervisor, probe: Probe
) -> None:
    owner = sup.submit(queue("o", probe.body("o", "s", gate="g"), slot="s"))
    queued = sup.submit(queue("q", probe.body("q", "s"), slot="s"))
    busy = sup.submit(drop("d", probe.body("d", "s"), slot="s"))
    assert busy.outcome is not None
    assert rejected(busy.outcome, R.SLOT_BUSY)
    assert busy.outcome.attempts == 0
    probe.gates["g"].set()
    await outcomes(owner, queued)
    later = sup.submit(drop("d", probe.body("d", "s"), slot="s"))
    [out] = await outcomes(later)
    assert out.ok
    assert probe.started == ["o", "q", "d"]


# ---------------------------------------------------------------------------- queue limits


async def test_queue_full(events: Events, probe: Probe) -> None:
    async with make_sup(events, max_slot_queue=2) as sup:
        owner = sup.submit(queue("o", probe.body("o", "s", gate="g"), slot="s"))
        ok = [sup.submit(queue(f"q{i}", probe.body(f"q{i}", "s"), slot="s")) for i in range(2)]
        full = sup.submit(queue("q2", probe.body("q2", "s"), slot="s"))
        assert full.outcome is not None
        assert rejected(full.outcome, R.QUEUE_FULL)
        assert slot_views(sup) == {"s": (S.RUNNING, owner.id, 2)}
        probe.gates["g"].set()
        outs = await outcomes(owner, *ok)
        assert all(o.ok for o in outs)
    assert probe.started == ["o", "q0", "q1"]
    [ev] = events.of(K.CONTROLLER_REJECTED)
    assert (ev.task, ev.task_id, ev.slot, ev.rejection, ev.outcome) == (
        "q2",
        full.id,
        "s",
        R.QUEUE_FULL,
        tv.OutcomeKind.REJECTED,
    )
    assert events.of(K.TASK_ADD_REQUESTED, task="q2") == []


async def test_queue_limit_zero_rejects_any_queueing(probe: Probe) -> None:
    async with make_sup(max_slot_queue=0) as sup:
        owner = sup.submit(queue("o", probe.body("o", "s", gate="g"), slot="s"))
        full = sup.submit(queue("q", probe.body("q", "s"), slot="s"))
        assert full.outcome is not None
        assert rejected(full.outcome, R.QUEUE_FULL)
        probe.gates["g"].set()
        await outcomes(owner)
    assert probe.started == ["o"]


# ---------------------------------------------------------------------------- removal


Remover = Callable[[tv.Supervisor, tv.TaskHandle], Awaitable[bool]]


async def _handle_cancel(sup: tv.Supervisor, h: tv.TaskHandle) -> bool:
    return await h.cancel()


async def _cancel_by_id(sup: tv.Supervisor, h: tv.TaskHandle) -> bool:
    return await sup.cancel(int(h.id))


async def _cancel_by_name(sup: tv.Supervisor, h: tv.TaskHandle) -> bool:
    return await sup.cancel(h.name, timeout=1.0)


async def _remove_by_id(sup: tv.Supervisor, h: tv.TaskHandle) -> bool:
    return sup.remove(h.id)


async def _remove_by_name(sup: tv.Supervisor, h: tv.TaskHandle) -> bool:
    return sup.remove(h.name)


@pytest.mark.parametrize(
    "remover",
    [_handle_cancel, _cancel_by_id, _cancel_by_name, _remove_by_id, _remove_by_name],
)
async def test_removed_from_queue(
    sup: tv.Supervisor, events: Events, probe: Probe, remover: Remover
) -> None:
    owner = sup.submit(queue("o", probe.body("o", "s", gate="g"), slot="s"))
    a = sup.submit(queue("a", probe.body("a", "s"), slot="s"))
    b = sup.submit(queue("b", probe.body("b", "s"), slot="s"))
    c = sup.submit(queue("c", probe.body("c", "s"), slot="s"))
    assert await remover(sup, b) is True
    assert b.outcome is not None
    assert rejected(b.outcome, R.REMOVED_FROM_QUEUE)
    assert await remover(sup, b) is False  # gone: nothing left to remove
    assert slot_views(sup) == {"s": (S.RUNNING, owner.id, 2)}
    probe.gates["g"].set()
    outs = await outcomes(owner, a, c)
    assert all(o.ok for o in outs)
    assert probe.started == ["o", "a", "c"]
    assert_no_leftovers(sup, "o", "a", "b", "c")
    await sup.shutdown()
    [ev] = events.of(K.CONTROLLER_REJECTED)
    assert (ev.task_id, ev.rejection, ev.slot) == (b.id, R.REMOVED_FROM_QUEUE, "s")


async def test_remove_by_name_finds_the_registered_owner_first(
    sup: tv.Supervisor, probe: Probe
) -> None:
    owner = sup.submit(queue("x", probe.body("x1", "s", gate="never"), slot="s"))
    queued = sup.submit(queue("x", probe.body("x2", "s"), slot="s"))
    await probe.started_("x1")
    assert sup.remove("x") is True
    outs = await outcomes(owner, queued)
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert outs[1].ok
    assert probe.started == ["x1", "x2"]


async def test_remove_by_name_takes_the_oldest_queued(sup: tv.Supervisor, probe: Probe) -> None:
    owners = [
        sup.submit(queue(f"o{i}", probe.body(f"o{i}", f"s{i}", gate="g"), slot=f"s{i}"))
        for i in range(2)
    ]
    older = sup.submit(queue("x", probe.body("x-older", "s1"), slot="s1"))
    newer = sup.submit(queue("x", probe.body("x-newer", "s0"), slot="s0"))
    assert sup.remove("x") is True
    assert older.outcome is not None
    assert rejected(older.outcome, R.REMOVED_FROM_QUEUE)
    assert not newer.done()
    probe.gates["g"].set()
    outs = await outcomes(*owners, newer)
    assert all(o.ok for o in outs)
    assert "x-older" not in probe.started


async def test_unknown_keys_are_not_found(sup: tv.Supervisor) -> None:
    assert sup.remove("nobody") is False
    assert sup.remove(10**12) is False
    assert await sup.cancel("nobody") is False


# ---------------------------------------------------------------------------- duplicate names


async def test_duplicate_name_at_submit_is_rejected(sup: tv.Supervisor, events: Events) -> None:
    added = sup.add(tv.TaskSpec.once("x", _forever))
    h = sup.submit(queue("x", _forever, slot="other"))
    assert h.outcome is not None
    assert rejected(h.outcome, R.ALREADY_EXISTS)
    assert h.outcome.attempts == 0
    assert_no_leftovers(sup)
    assert sup.get("x") is not None
    assert sup.get("x").id == added.id  # type: ignore[union-attr]
    await sup.shutdown()
    failed = events.of(K.TASK_ADD_FAILED, task_id=h.id)
    assert [(e.task, e.rejection, e.outcome) for e in failed] == [
        ("x", R.ALREADY_EXISTS, tv.OutcomeKind.REJECTED)
    ]
    [rej] = events.of(K.CONTROLLER_REJECTED)
    assert (rej.task, rej.task_id, rej.slot, rej.rejection) == (
        "x",
        h.id,
        "other",
        R.ALREADY_EXISTS,
    )
    [added_event] = events.of(K.TASK_ADDED, task="x")
    submission_kinds = {
        K.CONTROLLER_SUBMITTED,
        K.TASK_ADD_REQUESTED,
        K.TASK_ADD_FAILED,
        K.CONTROLLER_REJECTED,
    }
    kinds = [
        e.kind
        for e in events.events
        if e.task == "x" and e.seq > added_event.seq and e.kind in submission_kinds
    ]
    assert kinds == [
        K.CONTROLLER_SUBMITTED,
        K.TASK_ADD_REQUESTED,
        K.TASK_ADD_FAILED,
        K.CONTROLLER_REJECTED,
    ]
    assert events.transitions("other") == ["idle→admitting", "admitting→idle"]


async def test_duplicate_name_across_slots_then_the_slot_moves_on(
    sup: tv.Supervisor, probe: Probe
) -> None:
    x_in_a = sup.submit(queue("x", probe.body("x@a", "a", gate="ga"), slot="a"))
    y_in_b = sup.submit(queue("y", probe.body("y@b", "b", gate="gb"), slot="b"))
    x_in_b = sup.submit(queue("x", probe.body("x@b", "b"), slot="b"))
    z_in_b = sup.submit(queue("z", probe.body("z@b", "b", gate="gz"), slot="b"))
    await probe.started_("y@b")
    probe.gates["gb"].set()
    await probe.started_("z@b")
    assert x_in_b.outcome is not None
    assert rejected(x_in_b.outcome, R.ALREADY_EXISTS)
    assert slot_views(sup) == {"a": (S.RUNNING, x_in_a.id, 0), "b": (S.RUNNING, z_in_b.id, 0)}
    probe.gates["ga"].set()
    probe.gates["gz"].set()
    outs = await outcomes(x_in_a, y_in_b, z_in_b)
    assert all(o.ok for o in outs)
    assert "x@b" not in probe.started
    assert_no_leftovers(sup, "x", "y", "z")


async def test_a_queue_of_duplicates_empties_the_slot(sup: tv.Supervisor, probe: Probe) -> None:
    blocker = sup.add(tv.TaskSpec.once("dup", _forever))
    owner = sup.submit(queue("o", probe.body("o", "s", gate="g"), slot="s"))
    dups = [sup.submit(queue("dup", probe.body("dup", "s"), slot="s")) for _ in range(3)]
    probe.gates["g"].set()
    outs = await outcomes(owner, *dups)
    assert outs[0].ok
    assert all(rejected(o, R.ALREADY_EXISTS) for o in outs[1:])
    assert_no_leftovers(sup)
    assert await blocker.cancel() is True
    assert_no_leftovers(sup, "o", "dup")


# ---------------------------------------------------------------------------- shutdown


async def test_shutdown_rejects_queued_work(events: Events, probe: Probe) -> None:
    sup = make_sup(events)
    async with sup:
        owner = sup.submit(queue("o", probe.body("o", "s", gate="never"), slot="s"))
        queued = [sup.submit(queue(f"q{i}", probe.body(f"q{i}", "s"), slot="s")) for i in range(3)]
        await probe.started_("o")
    outs = await outcomes(owner, *queued)
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert all(rejected(o, R.SHUTTING_DOWN) for o in outs[1:])
    assert probe.started == ["o"]
    assert_no_leftovers(sup)
    assert events.transitions("s") == [
        "idle→admitting",
        "admitting→running",
        "running→terminating",
        "terminating→idle",
    ]
    shut = {e.task_id for e in events.of(K.CONTROLLER_REJECTED, rejection=R.SHUTTING_DOWN)}
    assert shut == {h.id for h in queued}
    assert all(events.of(K.TASK_ADD_REQUESTED, task=f"q{i}") == [] for i in range(3))
    with pytest.raises(tv.SupervisorClosed):
        sup.submit(queue("late", probe.body("late", "late")))


async def test_shutdown_while_a_replacement_waits(probe: Probe) -> None:
    loop = asyncio.get_running_loop()
    teardown: asyncio.Future[None] = loop.create_future()
    running = asyncio.Event()
    stop_seen = asyncio.Event()

    async def owner(ctx: tv.TaskContext) -> None:
        running.set()
        try:
            await ctx.cancelled()
        finally:
            stop_seen.set()
            await asyncio.shield(teardown)

    sup = make_sup()
    await sup.start()
    old = sup.submit(queue("job", owner))
    async with asyncio.timeout(GUARD):
        await running.wait()
    new = sup.submit(replace("job", probe.body("new", "job")))
    async with asyncio.timeout(GUARD):
        await stop_seen.wait()
    shutting = asyncio.ensure_future(sup.shutdown())
    [out] = await outcomes(new)  # rejected as soon as shutdown begins, before the owner ends
    assert rejected(out, R.SHUTTING_DOWN)
    assert not old.done()
    teardown.set_result(None)
    async with asyncio.timeout(GUARD):
        await shutting
    [old_out] = await outcomes(old)
    assert old_out.kind is tv.OutcomeKind.CANCELED
    assert probe.started == []
    assert_no_leftovers(sup)


async def test_shutdown_moves_running_slots_to_terminating(
    sup: tv.Supervisor, probe: Probe
) -> None:
    loop = asyncio.get_running_loop()
    release: asyncio.Future[None] = loop.create_future()
    seen: list[dict[str, tuple[tv.SlotState, int | None, int]]] = []
    running = asyncio.Event()
    stopping = asyncio.Event()

    async def owner(ctx: tv.TaskContext) -> None:
        running.set()
        try:
            await ctx.cancelled()
        finally:
            seen.append(slot_views(sup))
            stopping.set()
            await asyncio.shield(release)

    h = sup.submit(queue("o", owner, slot="s"))
    q = sup.submit(queue("q", probe.body("q", "s"), slot="s"))
    async with asyncio.timeout(GUARD):
        await running.wait()
    shutting = asyncio.ensure_future(sup.shutdown())
    async with asyncio.timeout(GUARD):
        await stopping.wait()
    assert seen == [{"s": (S.TERMINATING, h.id, 0)}]
    assert q.outcome is not None
    assert rejected(q.outcome, R.SHUTTING_DOWN)
    release.set_result(None)
    async with asyncio.timeout(GUARD):
        report = await shutting
    assert not report.grace_exceeded
    assert probe.started == []


# ---------------------------------------------------------------------------- snapshot, scale


async def test_snapshot_contents(sup: tv.Supervisor, probe: Probe) -> None:
    assert sup.controller_snapshot() == tv.ControllerSnapshot([], 0, 0)
    a = sup.submit(queue("a", probe.body("a", "a", gate="ga"), slot="a"))
    b = sup.submit(queue("b", probe.body("b", "b", gate="gb"), slot="b"))
    for i in range(3):
        sup.submit(queue(f"b{i}", probe.body(f"b{i}", "b"), slot="b"))
    await probe.started_("b")
    sup.submit(replace("b-new", probe.body("b-new", "b", gate="gnew"), slot="b"))
    snap = sup.controller_snapshot()
    assert snap is not None
    assert snap.slots == [
        tv.SlotView("a", S.RUNNING, a.id, 0),
        tv.SlotView("b", S.TERMINATING, b.id, 3),
    ]
    assert (snap.running, snap.queued) == (2, 3)
    probe.gates["ga"].set()
    await outcomes(a, b)
    snap = sup.controller_snapshot()
    assert snap is not None
    assert [(v.slot, v.state, v.queued) for v in snap.slots] == [("b", S.RUNNING, 2)]
    assert snap.slots[0].owner not in (a.id, b.id)
    assert (snap.running, snap.queued) == (1, 2)


async def test_snapshot_is_none_without_controller() -> None:
    async with tv.Supervisor(tv.SupervisorConfig(handle_signals=False)) as sup:
        assert sup.controller_snapshot() is None


async def test_many_slots_run_in_parallel(sup: tv.Supervisor, probe: Probe) -> None:
    n = 150
    handles: dict[str, list[tv.TaskHandle]] = {}
    for s in range(n):
        slot = f"slot-{s}"
        handles[slot] = [
            sup.submit(queue(f"{slot}/{i}", probe.body(f"{slot}/{i}", slot, gate="go"), slot=slot))
            for i in range(3)
        ]
    async with asyncio.timeout(GUARD):
        for s in range(n):
            await probe.starts[f"slot-{s}/0"].wait()
    snap = sup.controller_snapshot()
    assert snap is not None
    assert (len(snap.slots), snap.running, snap.queued) == (n, n, 2 * n)
    assert sum(probe.active.values()) == n
    probe.gates["go"].set()
    outs = await outcomes(*(h for hs in handles.values() for h in hs))
    assert all(o.ok for o in outs)
    for slot in handles:
        assert [x for x in probe.started if x.startswith(f"{slot}/")] == [
            f"{slot}/{i}" for i in range(3)
        ]
        assert probe.peak[slot] == 1
    assert_no_leftovers(sup)


async def test_many_one_shot_keys_leave_no_slots_behind(sup: tv.Supervisor) -> None:
    async def body() -> None:
        pass

    biggest = 0
    for batch in range(20):
        handles = []
        for i in range(100):
            key = f"k-{batch}-{i}"
            handles.append(sup.submit(queue(key, body)))
            handles.append(sup.submit(queue(key, body)))  # queued behind, same name
            handles.append(sup.submit(drop(key, body)))  # SLOT_BUSY
        snapshot = sup.controller_snapshot()
        assert snapshot is not None
        biggest = max(biggest, len(snapshot.slots))
        outs = await outcomes(*handles)
        assert sum(o.ok for o in outs) == 200
        assert sum(rejected(o, R.SLOT_BUSY) for o in outs) == 100
        assert_no_leftovers(sup)
    assert biggest == 100
    assert len(sup.list()) == 0


# ---------------------------------------------------------------------------- errors, input


async def test_submit_without_a_controller() -> None:
    async def body() -> None:
        pass

    async with tv.Supervisor(tv.SupervisorConfig(handle_signals=False)) as sup:
        with pytest.raises(tv.ControllerNotConfigured):
            sup.submit(queue("x", body))
        assert sup.list() == []


async def test_submit_after_shutdown() -> None:
    async def body() -> None:
        pass

    sup = make_sup()
    await sup.start()
    await sup.shutdown()
    with pytest.raises(tv.SupervisorClosed):
        sup.submit(queue("x", body))


async def _body() -> None:
    pass


async def _forever() -> None:
    await asyncio.Event().wait()


def bad(value: object) -> Any:
    """A wrong-typed argument, passed on purpose."""
    return value


@pytest.mark.parametrize(
    ("make", "error", "param"),
    [
        (lambda: tv.ControllerConfig(max_slot_queue=-1), ValueError, "max_slot_queue"),
        (lambda: tv.ControllerConfig(max_slot_queue=bad(1.5)), TypeError, "max_slot_queue"),
        (lambda: tv.ControllerConfig(max_slot_queue=True), TypeError, "max_slot_queue"),
        (lambda: tv.ControllerSpec.queue(bad("x")), TypeError, "spec"),
        (lambda: tv.ControllerSpec.replace(once("x", _body), slot=""), ValueError, "slot"),
        (
            lambda: tv.ControllerSpec.drop_if_running(once("x", _body), slot=bad(7)),
            TypeError,
            "slot",
        ),
        (lambda: tv.ControllerSpec(once("x", _body), bad("queue"), "s"), TypeError, "policy"),
        (lambda: tv.Supervisor(controller=bad(5)), TypeError, "controller"),
    ],
)
def test_bad_input_names_the_parameter(
    make: Callable[[], object], error: type[Exception], param: str
) -> None:
    with pytest.raises(error, match=param):
        make()


async def test_submit_refuses_anything_but_a_controller_spec(sup: tv.Supervisor) -> None:
    with pytest.raises(TypeError, match="spec"):
        sup.submit(once("x", _body))  # type: ignore[arg-type]
    assert_no_leftovers(sup)


# ---------------------------------------------------------------------------- the state machine


async def test_illegal_transitions_fail_loudly(sup: tv.Supervisor, probe: Probe) -> None:
    ctrl = controller(sup)
    fresh = _Slot("fresh", ctrl)
    ctrl._slots["fresh"] = fresh
    with pytest.raises(RuntimeError, match="illegal transition"):
        ctrl._transition(fresh, S.RUNNING)
    with pytest.raises(RuntimeError, match="illegal transition"):
        ctrl._transition(fresh, S.TERMINATING)
    fresh.state = S.ADMITTING
    with pytest.raises(RuntimeError, match="owner None"):
        ctrl._transition(fresh, S.RUNNING)  # legal move, but no owner was registered
    del ctrl._slots["fresh"]

    h = sup.submit(queue("job", probe.body("job", "job", gate="g")))
    slot = ctrl._slots["job"]
    with pytest.raises(RuntimeError, match="illegal transition"):
        ctrl._transition(slot, S.RUNNING)  # running→running
    other = sup.add(tv.TaskSpec.once("other", _forever))
    rec = sup._registry.lookup(other.id)
    assert rec is not None
    with pytest.raises(RuntimeError, match="does not own"):
        ctrl._owner_done(slot, rec)  # a cleanup can advance only the slot its task owns
    assert slot_views(sup) == {"job": (S.RUNNING, h.id, 0)}
    job = sup._registry.lookup(h.id)
    assert job is not None
    probe.gates["g"].set()
    [out] = await outcomes(h)
    assert out.ok
    with pytest.raises(RuntimeError, match="does not own"):
        ctrl._owner_done(slot, job)  # a second cleanup hook must not advance the slot again
    assert_no_leftovers(sup)
    assert await other.cancel() is True


async def test_cleanup_inside_registration_moves_on(
    sup: tv.Supervisor, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulates an eager task factory: a task whose cleanup runs before `_register` returns.
    original = sup._register

    def eager(*args: Any) -> Any:
        rec = original(*args)
        if rec.name.startswith("instant"):
            sup._request_stop(rec)
            sup._cleanup(rec, stopped_outcome(rec))
        return rec

    monkeypatch.setattr(sup, "_register", eager)
    owner = sup.submit(queue("o", probe.body("o", "s", gate="g"), slot="s"))
    instants = [sup.submit(queue(f"instant{i}", probe.body("i", "s"), slot="s")) for i in range(2)]
    last = sup.submit(queue("last", probe.body("last", "s"), slot="s"))
    alone = sup.submit(queue("instant-alone", probe.body("i", "t"), slot="t"))
    assert alone.done()
    probe.gates["g"].set()
    outs = await outcomes(owner, *instants, last, alone)
    assert [o.kind for o in outs] == [
        tv.OutcomeKind.COMPLETED,
        tv.OutcomeKind.CANCELED,
        tv.OutcomeKind.CANCELED,
        tv.OutcomeKind.COMPLETED,
        tv.OutcomeKind.CANCELED,
    ]
    assert probe.started == ["o", "last"]
    assert_no_leftovers(sup)


async def test_replace_inside_registration_stops_the_new_owner(
    sup: tv.Supervisor, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = sup._register
    late: list[tv.TaskHandle] = []

    def reentrant(*args: Any) -> Any:
        rec = original(*args)
        if rec.name == "victim":
            late.append(sup.submit(replace("winner", probe.body("winner", "s"), slot="s")))
        return rec

    monkeypatch.setattr(sup, "_register", reentrant)
    victim = sup.submit(queue("victim", probe.body("victim", "s"), slot="s"))
    assert slot_views(sup) == {"s": (S.TERMINATING, victim.id, 1)}
    outs = await outcomes(victim, *late)
    assert outs[0].kind is tv.OutcomeKind.CANCELED
    assert outs[1].ok
    assert probe.started == ["winner"]
    assert_no_leftovers(sup)
