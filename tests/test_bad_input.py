"""Bad input: every public constructor and method refuses it clearly, and harms nothing.

Each row feeds one wrong value (wrong type, NaN, infinity, negative, empty, zero where zero
is meaningless) to one public entry point, next to a running supervisor with a live task.
The call must raise ``TypeError`` or ``ValueError`` whose message names the parameter, publish
nothing, and leave the supervisor as it was: the live task still running, ``list()``
unchanged, and a good ``add`` still accepted. Huge but valid values (``max_retries=10**18``,
``grace=1e308``, ``factor=1e308``) are accepted and work; backoff delays never overflow.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

import taskvisor as tv
from conftest import GUARD, Recorder
from taskvisor import EventKind as K
from taskvisor import OutcomeKind as O

NAN = math.nan
INF = math.inf


async def body() -> None:
    """A valid task body."""


def sync_body() -> None:
    """Not async: refused as a body."""


async def agen() -> Any:
    """An async generator function: not a coroutine function, refused as a body."""
    yield None


SPEC = tv.TaskSpec("spec", body)


@dataclass
class Live:
    """A running supervisor with one live task, and a recorder of its events."""

    sup: tv.Supervisor
    handle: tv.TaskHandle
    recorder: Recorder


@pytest.fixture
async def live(recorder: Recorder) -> AsyncIterator[Live]:
    sup = tv.Supervisor(
        tv.SupervisorConfig(grace=1.0, handle_signals=False),
        subscribers=[recorder],
        controller=tv.ControllerConfig(),
    )
    started = asyncio.Event()

    async def forever(ctx: tv.TaskContext) -> None:
        started.set()
        await ctx.cancelled()

    async with sup:
        handle = sup.add(tv.TaskSpec("live", forever))
        async with asyncio.timeout(GUARD):
            await started.wait()
        yield Live(sup, handle, recorder)


def coroutine_object(_: tv.Supervisor) -> object:
    """``TaskSpec(name, work())``: a coroutine object, not a function (closed afterwards)."""
    coro = body()
    spec: Any = tv.TaskSpec
    try:
        return spec("x", coro)
    finally:
        coro.close()


class NotASubscriber:
    pass


class BadName(tv.Subscriber):
    name = 5  # type: ignore[assignment]

    def on_event(self, event: tv.Event) -> None:
        pass


class EmptyName(tv.Subscriber):
    name = ""

    def on_event(self, event: tv.Event) -> None:
        pass


class BadCapacity(tv.Subscriber):
    queue_capacity = "big"  # type: ignore[assignment]

    def on_event(self, event: tv.Event) -> None:
        pass


class BadBlocking(tv.Subscriber):
    blocking = "yes"  # type: ignore[assignment]

    def on_event(self, event: tv.Event) -> None:
        pass


class AsyncBlocking(tv.Subscriber):
    blocking = True

    async def on_event(self, event: tv.Event) -> None:
        pass


class NoOverride(tv.Subscriber):
    pass


# Untyped aliases: the rows pass wrong types on purpose.
Call = Callable[[Any], object]
A: Any = tv
R: Any = tv.RestartPolicy
B: Any = tv.BackoffPolicy
Q: Any = tv.ControllerSpec


def case(ident: str, call: Call, error: type[Exception], names: str) -> Any:
    return pytest.param(call, error, names, id=ident)


# One row per wrong value. ``names``: the parameter the message must name.
CASES = [
    # TaskSpec and its named constructors
    case("TaskSpec-name-int", lambda s: A.TaskSpec(42, body), TypeError, "name"),
    case("TaskSpec-name-None", lambda s: A.TaskSpec(None, body), TypeError, "name"),
    case("TaskSpec-name-bytes", lambda s: A.TaskSpec(b"x", body), TypeError, "name"),
    case("TaskSpec-name-empty", lambda s: A.TaskSpec("", body), ValueError, "name"),
    case("TaskSpec-fn-sync", lambda s: A.TaskSpec("x", sync_body), TypeError, "fn"),
    case("TaskSpec-fn-coroutine-object", coroutine_object, TypeError, "fn"),
    case("TaskSpec-fn-None", lambda s: A.TaskSpec("x", None), TypeError, "fn"),
    case("TaskSpec-fn-int", lambda s: A.TaskSpec("x", 3), TypeError, "fn"),
    case("TaskSpec-fn-async-generator", lambda s: A.TaskSpec("x", agen), TypeError, "fn"),
    case(
        "TaskSpec-fn-lambda-returning-coro",
        lambda s: A.TaskSpec("x", lambda: body()),
        TypeError,
        "fn",
    ),
    case(
        "TaskSpec-restart-str",
        lambda s: A.TaskSpec("x", body, restart="never"),
        TypeError,
        "restart",
    ),
    case(
        "TaskSpec-restart-None", lambda s: A.TaskSpec("x", body, restart=None), TypeError, "restart"
    ),
    case(
        "TaskSpec-backoff-float", lambda s: A.TaskSpec("x", body, backoff=0.1), TypeError, "backoff"
    ),
    case(
        "TaskSpec-timeout-negative",
        lambda s: A.TaskSpec("x", body, timeout=-1),
        ValueError,
        "timeout",
    ),
    case(
        "TaskSpec-timeout-nan", lambda s: A.TaskSpec("x", body, timeout=NAN), ValueError, "timeout"
    ),
    case(
        "TaskSpec-timeout-inf", lambda s: A.TaskSpec("x", body, timeout=INF), ValueError, "timeout"
    ),
    case(
        "TaskSpec-timeout-str", lambda s: A.TaskSpec("x", body, timeout="1"), TypeError, "timeout"
    ),
    case(
        "TaskSpec-timeout-bool", lambda s: A.TaskSpec("x", body, timeout=True), TypeError, "timeout"
    ),
    case(
        "TaskSpec-max_retries-negative",
        lambda s: A.TaskSpec("x", body, max_retries=-1),
        ValueError,
        "max_retries",
    ),
    case(
        "TaskSpec-max_retries-float",
        lambda s: A.TaskSpec("x", body, max_retries=1.5),
        TypeError,
        "max_retries",
    ),
    case(
        "TaskSpec-max_retries-bool",
        lambda s: A.TaskSpec("x", body, max_retries=True),
        TypeError,
        "max_retries",
    ),
    case(
        "TaskSpec-max_retries-str",
        lambda s: A.TaskSpec("x", body, max_retries="3"),
        TypeError,
        "max_retries",
    ),
    case(
        "TaskSpec-unknown-keyword", lambda s: A.TaskSpec("x", body, retries=3), TypeError, "retries"
    ),
    case("once-name-empty", lambda s: A.TaskSpec.once("", body), ValueError, "name"),
    case("once-fn-sync", lambda s: A.TaskSpec.once("x", sync_body), TypeError, "fn"),
    case(
        "once-restart-keyword",
        lambda s: A.TaskSpec.once("x", body, restart=R.NEVER),
        TypeError,
        "restart",
    ),
    case(
        "restartable-timeout-nan",
        lambda s: A.TaskSpec.restartable("x", body, timeout=NAN),
        ValueError,
        "timeout",
    ),
    case(
        "restartable-max_retries-negative",
        lambda s: A.TaskSpec.restartable("x", body, max_retries=-5),
        ValueError,
        "max_retries",
    ),
    case("periodic-every-zero", lambda s: A.TaskSpec.periodic("x", body, 0), ValueError, "every"),
    case(
        "periodic-every-negative", lambda s: A.TaskSpec.periodic("x", body, -1), ValueError, "every"
    ),
    case("periodic-every-nan", lambda s: A.TaskSpec.periodic("x", body, NAN), ValueError, "every"),
    case("periodic-every-inf", lambda s: A.TaskSpec.periodic("x", body, INF), ValueError, "every"),
    case("periodic-every-str", lambda s: A.TaskSpec.periodic("x", body, "1"), TypeError, "every"),
    case("periodic-every-None", lambda s: A.TaskSpec.periodic("x", body, None), TypeError, "every"),
    case("periodic-name-int", lambda s: A.TaskSpec.periodic(1, body, 1.0), TypeError, "name"),
    # RestartPolicy
    case("always-interval-zero", lambda s: R.always(interval=0), ValueError, "interval"),
    case("always-interval-negative", lambda s: R.always(interval=-1), ValueError, "interval"),
    case("always-interval-nan", lambda s: R.always(interval=NAN), ValueError, "interval"),
    case("always-interval-inf", lambda s: R.always(interval=INF), ValueError, "interval"),
    case("always-interval-str", lambda s: R.always(interval="1"), TypeError, "interval"),
    case("RestartPolicy-mode-str", lambda s: R("never"), TypeError, "mode"),
    case(
        "RestartPolicy-interval-not-always",
        lambda s: R(A.RestartMode.NEVER, 1.0),
        ValueError,
        "interval",
    ),
    # BackoffPolicy and its constructors
    case("Backoff-first-negative", lambda s: B(first=-1), ValueError, "first"),
    case("Backoff-first-nan", lambda s: B(first=NAN), ValueError, "first"),
    case("Backoff-first-inf", lambda s: B(first=INF), ValueError, "first"),
    case("Backoff-first-str", lambda s: B(first="0.1"), TypeError, "first"),
    case("Backoff-first-None", lambda s: B(first=None), TypeError, "first"),
    case("Backoff-max-negative", lambda s: B(first=0, max=-1), ValueError, "max"),
    case("Backoff-max-nan", lambda s: B(max=NAN), ValueError, "max"),
    case("Backoff-max-inf", lambda s: B(max=INF), ValueError, "max"),
    case("Backoff-first-above-max", lambda s: B(first=5, max=1), ValueError, "first"),
    case("Backoff-factor-below-one", lambda s: B(factor=0.5), ValueError, "factor"),
    case("Backoff-factor-negative", lambda s: B(factor=-2), ValueError, "factor"),
    case("Backoff-factor-nan", lambda s: B(factor=NAN), ValueError, "factor"),
    case("Backoff-factor-inf", lambda s: B(factor=INF), ValueError, "factor"),
    case("Backoff-factor-str", lambda s: B(factor="2"), TypeError, "factor"),
    case("Backoff-factor-bool", lambda s: B(factor=True), TypeError, "factor"),
    case("Backoff-jitter-str", lambda s: B(jitter="equal"), TypeError, "jitter"),
    case("Backoff-jitter-None", lambda s: B(jitter=None), TypeError, "jitter"),
    case("constant-delay-negative", lambda s: B.constant(-0.1), ValueError, "delay"),
    case("constant-delay-nan", lambda s: B.constant(NAN), ValueError, "delay"),
    case("constant-delay-inf", lambda s: B.constant(INF), ValueError, "delay"),
    case("constant-delay-str", lambda s: B.constant("1"), TypeError, "delay"),
    case("constant-delay-None", lambda s: B.constant(None), TypeError, "delay"),
    case("exponential-first-negative", lambda s: B.exponential(-1), ValueError, "first"),
    case(
        "exponential-factor-below-one",
        lambda s: B.exponential(0.1, factor=0.9),
        ValueError,
        "factor",
    ),
    case("exponential-max-nan", lambda s: B.exponential(0.1, max=NAN), ValueError, "max"),
    case("exponential-jitter-int", lambda s: B.exponential(0.1, jitter=1), TypeError, "jitter"),
    case("delay-retry-negative", lambda s: B().delay(-1), ValueError, "retry"),
    case("delay-retry-float", lambda s: B().delay(1.5), TypeError, "retry"),
    case("delay-retry-bool", lambda s: B().delay(True), TypeError, "retry"),
    case("delay-retry-str", lambda s: B().delay("1"), TypeError, "retry"),
    case("delay-previous-negative", lambda s: B().delay(0, previous=-1), ValueError, "previous"),
    case("delay-previous-nan", lambda s: B().delay(0, previous=NAN), ValueError, "previous"),
    case("delay-previous-inf", lambda s: B().delay(0, previous=INF), ValueError, "previous"),
    case("delay-rng-module", lambda s: B().delay(0, rng=random), TypeError, "rng"),
    case("delay-rng-int", lambda s: B().delay(0, rng=42), TypeError, "rng"),
    # TaskDefaults
    case(
        "TaskDefaults-restart-str", lambda s: A.TaskDefaults(restart="always"), TypeError, "restart"
    ),
    case("TaskDefaults-backoff-int", lambda s: A.TaskDefaults(backoff=1), TypeError, "backoff"),
    case(
        "TaskDefaults-timeout-negative", lambda s: A.TaskDefaults(timeout=-1), ValueError, "timeout"
    ),
    case("TaskDefaults-timeout-nan", lambda s: A.TaskDefaults(timeout=NAN), ValueError, "timeout"),
    case(
        "TaskDefaults-max_retries-negative",
        lambda s: A.TaskDefaults(max_retries=-1),
        ValueError,
        "max_retries",
    ),
    case(
        "TaskDefaults-max_retries-float",
        lambda s: A.TaskDefaults(max_retries=2.0),
        TypeError,
        "max_retries",
    ),
    # SupervisorConfig
    case("Config-grace-negative", lambda s: A.SupervisorConfig(grace=-1), ValueError, "grace"),
    case("Config-grace-nan", lambda s: A.SupervisorConfig(grace=NAN), ValueError, "grace"),
    case("Config-grace-inf", lambda s: A.SupervisorConfig(grace=INF), ValueError, "grace"),
    case("Config-grace-str", lambda s: A.SupervisorConfig(grace="60"), TypeError, "grace"),
    case("Config-grace-None", lambda s: A.SupervisorConfig(grace=None), TypeError, "grace"),
    case(
        "Config-sub-timeout-negative",
        lambda s: A.SupervisorConfig(subscriber_shutdown_timeout=-1),
        ValueError,
        "subscriber_shutdown_timeout",
    ),
    case(
        "Config-sub-timeout-nan",
        lambda s: A.SupervisorConfig(subscriber_shutdown_timeout=NAN),
        ValueError,
        "subscriber_shutdown_timeout",
    ),
    case(
        "Config-sub-timeout-inf",
        lambda s: A.SupervisorConfig(subscriber_shutdown_timeout=INF),
        ValueError,
        "subscriber_shutdown_timeout",
    ),
    case(
        "Config-max_concurrent-zero",
        lambda s: A.SupervisorConfig(max_concurrent=0),
        ValueError,
        "max_concurrent",
    ),
    case(
        "Config-max_concurrent-negative",
        lambda s: A.SupervisorConfig(max_concurrent=-3),
        ValueError,
        "max_concurrent",
    ),
    case(
        "Config-max_concurrent-float",
        lambda s: A.SupervisorConfig(max_concurrent=1.5),
        TypeError,
        "max_concurrent",
    ),
    case(
        "Config-max_concurrent-bool",
        lambda s: A.SupervisorConfig(max_concurrent=True),
        TypeError,
        "max_concurrent",
    ),
    case(
        "Config-handle_signals-int",
        lambda s: A.SupervisorConfig(handle_signals=1),
        TypeError,
        "handle_signals",
    ),
    case(
        "Config-handle_signals-str",
        lambda s: A.SupervisorConfig(handle_signals="no"),
        TypeError,
        "handle_signals",
    ),
    # ControllerConfig, ControllerSpec
    case(
        "ControllerConfig-negative",
        lambda s: A.ControllerConfig(max_slot_queue=-1),
        ValueError,
        "max_slot_queue",
    ),
    case(
        "ControllerConfig-float",
        lambda s: A.ControllerConfig(max_slot_queue=1.5),
        TypeError,
        "max_slot_queue",
    ),
    case(
        "ControllerConfig-None",
        lambda s: A.ControllerConfig(max_slot_queue=None),
        TypeError,
        "max_slot_queue",
    ),
    case("queue-spec-str", lambda s: Q.queue("x"), TypeError, "spec"),
    case("queue-slot-empty", lambda s: Q.queue(SPEC, slot=""), ValueError, "slot"),
    case("queue-slot-int", lambda s: Q.queue(SPEC, slot=1), TypeError, "slot"),
    case("replace-spec-None", lambda s: Q.replace(None), TypeError, "spec"),
    case("replace-slot-empty", lambda s: Q.replace(SPEC, slot=""), ValueError, "slot"),
    case("drop-spec-dict", lambda s: Q.drop_if_running({}), TypeError, "spec"),
    case("drop-slot-bytes", lambda s: Q.drop_if_running(SPEC, slot=b"s"), TypeError, "slot"),
    case("ControllerSpec-policy-str", lambda s: Q(SPEC, "queue", "s"), TypeError, "policy"),
    # Supervisor(...)
    case("Supervisor-config-str", lambda s: A.Supervisor("x"), TypeError, "config"),
    case("Supervisor-config-dict", lambda s: A.Supervisor({"grace": 1}), TypeError, "config"),
    case("Supervisor-defaults-int", lambda s: A.Supervisor(defaults=1), TypeError, "defaults"),
    case(
        "Supervisor-subscribers-str",
        lambda s: A.Supervisor(subscribers="abc"),
        TypeError,
        "subscribers",
    ),
    case(
        "Supervisor-subscribers-None",
        lambda s: A.Supervisor(subscribers=None),
        TypeError,
        "subscribers",
    ),
    case(
        "Supervisor-subscriber-plain-object",
        lambda s: A.Supervisor(subscribers=[NotASubscriber()]),
        TypeError,
        "on_event",
    ),
    case(
        "Supervisor-subscriber-class",
        lambda s: A.Supervisor(subscribers=[Recorder]),
        TypeError,
        "subscriber",
    ),
    case(
        "Supervisor-subscriber-no-override",
        lambda s: A.Supervisor(subscribers=[NoOverride()]),
        TypeError,
        "on_event",
    ),
    case(
        "Supervisor-subscriber-name-int",
        lambda s: A.Supervisor(subscribers=[BadName()]),
        TypeError,
        "name",
    ),
    case(
        "Supervisor-subscriber-name-empty",
        lambda s: A.Supervisor(subscribers=[EmptyName()]),
        ValueError,
        "name",
    ),
    case(
        "Supervisor-subscriber-capacity-str",
        lambda s: A.Supervisor(subscribers=[BadCapacity()]),
        TypeError,
        "queue_capacity",
    ),
    case(
        "Supervisor-subscriber-blocking-str",
        lambda s: A.Supervisor(subscribers=[BadBlocking()]),
        TypeError,
        "blocking",
    ),
    case(
        "Supervisor-subscriber-blocking-async",
        lambda s: A.Supervisor(subscribers=[AsyncBlocking()]),
        TypeError,
        "blocking",
    ),
    case(
        "Supervisor-controller-str", lambda s: A.Supervisor(controller="x"), TypeError, "controller"
    ),
    # the running supervisor's methods
    case("add-str", lambda s: s.add("live"), TypeError, "spec"),
    case("add-None", lambda s: s.add(None), TypeError, "spec"),
    case("add-ControllerSpec", lambda s: s.add(Q.queue(SPEC)), TypeError, "spec"),
    case("cancel-None", lambda s: s.cancel(None), TypeError, "id_or_name"),
    case("cancel-float", lambda s: s.cancel(1.0), TypeError, "id_or_name"),
    case("cancel-bool", lambda s: s.cancel(True), TypeError, "id_or_name"),
    case("cancel-timeout-negative", lambda s: s.cancel("live", timeout=-1), ValueError, "timeout"),
    case("cancel-timeout-nan", lambda s: s.cancel("live", timeout=NAN), ValueError, "timeout"),
    case("cancel-timeout-inf", lambda s: s.cancel("live", timeout=INF), ValueError, "timeout"),
    case("cancel-timeout-str", lambda s: s.cancel("live", timeout="1"), TypeError, "timeout"),
    case("remove-None", lambda s: s.remove(None), TypeError, "id_or_name"),
    case("remove-list", lambda s: s.remove(["live"]), TypeError, "id_or_name"),
    case("remove-bool", lambda s: s.remove(False), TypeError, "id_or_name"),
    case("get-None", lambda s: s.get(None), TypeError, "id_or_name"),
    case("get-float", lambda s: s.get(2.5), TypeError, "id_or_name"),
    case("is_alive-int", lambda s: s.is_alive(1), TypeError, "name"),
    case("is_alive-None", lambda s: s.is_alive(None), TypeError, "name"),
    case("events-zero", lambda s: s.events(0), ValueError, "capacity"),
    case("events-negative", lambda s: s.events(-1), ValueError, "capacity"),
    case("events-float", lambda s: s.events(1.5), TypeError, "capacity"),
    case("events-str", lambda s: s.events("10"), TypeError, "capacity"),
    case("submit-TaskSpec", lambda s: s.submit(SPEC), TypeError, "spec"),
    case("submit-None", lambda s: s.submit(None), TypeError, "spec"),
    case("run-str", lambda s: s.run("abc"), TypeError, "specs"),
    case("run-single-spec", lambda s: s.run(SPEC), TypeError, "specs"),
    case("run-None", lambda s: s.run(None), TypeError, "specs"),
    case("run-item-str", lambda s: s.run([SPEC, "x"]), TypeError, "specs[1]"),
    # Fail / Fatal
    case("Fail-reason-int", lambda s: A.Fail(5), TypeError, "reason"),
    case("Fail-exit_code-str", lambda s: A.Fail("x", exit_code="1"), TypeError, "exit_code"),
    case("Fail-exit_code-float", lambda s: A.Fail("x", exit_code=1.0), TypeError, "exit_code"),
    case("Fail-exit_code-bool", lambda s: A.Fail("x", exit_code=True), TypeError, "exit_code"),
    case("Fatal-reason-None", lambda s: A.Fatal(None), TypeError, "reason"),
    case("Fatal-exit_code-str", lambda s: A.Fatal("x", exit_code="2"), TypeError, "exit_code"),
]


async def assert_intact(live: Live, before: list[tv.TaskInfo], seen: int) -> None:
    """The live task still runs, ``list()`` is unchanged, nothing was published, a good add
    still works (and finishes)."""
    sup = live.sup
    assert sup.list() == before
    assert not live.handle.done()
    info = sup.get("live")
    assert info is not None
    assert info.state is tv.TaskState.RUNNING
    assert sup.is_alive("live")
    probe = sup.add(tv.TaskSpec.once("probe", body))
    async with asyncio.timeout(GUARD):
        outcome = await probe
    assert outcome.kind is O.COMPLETED
    # Subscribers see events in publish order: the probe's request comes right after what
    # was published before the bad call, so the bad call published nothing.
    first = await live.recorder.wait_for(K.TASK_ADD_REQUESTED, task="probe")
    assert live.recorder.events.index(first) == seen
    assert sup.list() == before


@pytest.mark.parametrize(("call", "error", "names"), CASES)
async def test_bad_input_is_refused_clearly_and_harms_nothing(
    live: Live, call: Call, error: type[Exception], names: str
) -> None:
    sup = live.sup
    before = sup.list()
    assert [i.name for i in before] == ["live"]
    await live.recorder.wait_for(K.ATTEMPT_STARTING, task="live")
    seen = len(live.recorder.events)

    async def attempt() -> None:
        result = call(sup)
        if inspect.isawaitable(result):
            await result

    with pytest.raises(error) as info:
        await attempt()
    assert not isinstance(info.value, tv.TaskvisorError)
    assert names in str(info.value), f"the message should name {names!r}: {info.value}"
    await assert_intact(live, before, seen)


def test_every_case_id_is_unique() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- huge but valid


async def test_huge_retry_budget_and_durations_are_accepted(live: Live) -> None:
    sup = live.sup
    attempts = 0

    async def twice_then_ok() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise tv.Fail("again")

    spec = tv.TaskSpec.restartable(
        "huge",
        twice_then_ok,
        max_retries=10**18,
        timeout=1e308,
        backoff=B.exponential(0.001, factor=1e308, max=0.002),
    )
    async with asyncio.timeout(GUARD):
        outcome = await sup.add(spec)
    assert (outcome.kind, outcome.attempts) == (O.COMPLETED, 3)
    periodic = tv.TaskSpec.periodic("p", body, every=1e308).restart
    assert isinstance(periodic, tv.RestartPolicy)
    assert periodic.interval == 1e308
    assert R.always(interval=1e308).interval == 1e308
    assert tv.TaskDefaults(max_retries=10**18, timeout=1e308).max_retries == 10**18
    assert tv.ControllerConfig(max_slot_queue=10**18).max_slot_queue == 10**18


async def test_huge_grace_and_drain_timeout_still_stop_promptly(recorder: Recorder) -> None:
    """``grace=1e308`` arms timers a loop can hold; a prompt task still stops at once."""
    config = tv.SupervisorConfig(
        grace=1e308, subscriber_shutdown_timeout=1e308, max_concurrent=10**18, handle_signals=False
    )
    sup = tv.Supervisor(config, subscribers=[recorder], controller=tv.ControllerConfig(10**18))
    started = asyncio.Event()

    async def forever(ctx: tv.TaskContext) -> None:
        started.set()
        await ctx.cancelled()

    async with asyncio.timeout(GUARD):
        async with sup:
            handle = sup.add(tv.TaskSpec("forever", forever))
            await started.wait()
            assert await sup.cancel("forever", timeout=1e308) is True
            assert (await handle).kind is O.CANCELED
            queued = sup.submit(tv.ControllerSpec.queue(tv.TaskSpec.once("q", body)))
            assert (await queued).kind is O.COMPLETED
            stream = sup.events(capacity=10**18)
            sup.add(tv.TaskSpec("left", forever))
        report = await sup.shutdown()  # the report of the shutdown `async with` ran
        assert not report.grace_exceeded
        assert report.grace == 1e308
        assert [e.kind async for e in stream][-1] is K.ALL_STOPPED_WITHIN_GRACE


JITTERS = list(tv.JitterPolicy)


@pytest.mark.parametrize("jitter", JITTERS, ids=[j.name for j in JITTERS])
@pytest.mark.parametrize(
    ("first", "factor", "maximum"),
    [
        (1.0, 1e308, 1e308),
        (1e-300, 2.0, 1e308),
        (1e-300, 1e308, 1e308),
        (0.2, 1.0000001, 30.0),
        (0.0, 1e308, 1e308),
        (1e308, 1e308, 1e308),
        (5e-324, 1.5, 5e-324),
    ],
    ids=[
        "factor-1e308",
        "tiny-first",
        "tiny-first-huge",
        "slow-growth",
        "zero",
        "huge",
        "subnormal",
    ],
)
@pytest.mark.parametrize("retry", [0, 1, 2, 10, 1100, 10**6, 10**18])
def test_backoff_delay_never_overflows(
    jitter: tv.JitterPolicy, first: float, factor: float, maximum: float, retry: int
) -> None:
    """``min(first * factor**retry, max)``, jittered, is finite and within bounds for every
    retry number, however large, and for every previous delay."""
    policy = B(first=first, max=maximum, factor=factor, jitter=jitter)
    rng = random.Random(retry)
    exact = _exact_base(first, factor, maximum, retry)
    base = policy.base(retry)
    assert math.isfinite(base)
    assert base == pytest.approx(exact, rel=1e-9)
    for previous in (None, 0.0, first, maximum, 1e308):
        delay = policy.delay(retry, previous, rng)
        assert math.isfinite(delay)
        assert 0.0 <= delay <= maximum
        if jitter is tv.JitterPolicy.NONE:
            assert delay == base
        elif jitter is tv.JitterPolicy.EQUAL:
            assert base / 2 <= delay <= base
        elif jitter is tv.JitterPolicy.FULL:
            assert delay <= base
        else:
            assert delay >= first


def _exact_base(first: float, factor: float, maximum: float, retry: int) -> float:
    """The base delay computed in logarithms (no float overflow possible)."""
    if first == 0.0 or retry == 0 or factor == 1.0:
        return min(first, maximum)
    log_grown = math.log(first) + retry * math.log(factor)
    return maximum if log_grown >= math.log(maximum) else math.exp(log_grown)
