"""Task specs, defaults and their merge; task bodies; ``TaskContext`` and ``TaskId``; the
errors bodies raise and the API's error tree (SPEC §1, §2, §9)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import gc
import math
import pickle
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from conftest import GUARD
from taskvisor import (
    AlreadyRunning,
    BackoffPolicy,
    ControllerNotConfigured,
    Fail,
    Fatal,
    RestartPolicy,
    Supervisor,
    SupervisorClosed,
    SupervisorConfig,
    TaskAlreadyExists,
    TaskContext,
    TaskDefaults,
    TaskError,
    TaskHandle,
    TaskId,
    TaskSpec,
    TaskTerminationTimeout,
    TaskvisorError,
)
from taskvisor import EventKind as E
from taskvisor import OutcomeKind as O
from taskvisor.testing import EventRecorder


async def body(ctx: TaskContext) -> None:
    """A body that takes the context."""


async def bare() -> None:
    """A body that takes nothing."""


def sync_body(ctx: TaskContext) -> None:
    """Not async: refused."""


def quiet() -> SupervisorConfig:
    return SupervisorConfig(handle_signals=False, grace=1.0)


@contextlib.asynccontextmanager
async def live_context() -> AsyncIterator[tuple[Supervisor, TaskHandle, TaskContext]]:
    """The context of a real task named ``job`` (attempt 1), which runs until it is stopped
    (``sup.remove("job")``)."""
    got: asyncio.Future[TaskContext] = asyncio.get_running_loop().create_future()

    async def hold(ctx: TaskContext) -> None:
        got.set_result(ctx)
        await asyncio.Event().wait()

    async with asyncio.timeout(GUARD), Supervisor(quiet()) as sup:
        handle = sup.add(TaskSpec.once("job", hold))
        yield sup, handle, await got


async def not_done_within(fut: asyncio.Future[Any], seconds: float = 0.02) -> bool:
    """Whether ``fut`` is still pending after a short wait (a check that it did not return
    early; never a synchronisation)."""
    done, _ = await asyncio.wait({fut}, timeout=seconds)
    return not done


# ---------------------------------------------------------------- named constructors


def test_plain_spec_inherits_everything() -> None:
    spec = TaskSpec("t", body)
    assert (spec.name, spec.fn) == ("t", body)
    # One "not set" marker for every keyword left out, distinct from None, named in the repr.
    assert spec.restart is spec.backoff is spec.timeout is spec.max_retries
    assert spec.timeout is not None
    assert repr(spec.timeout) == "UNSET"
    assert "restart=UNSET, backoff=UNSET, timeout=UNSET, max_retries=UNSET" in repr(spec)


async def test_a_spec_without_keywords_runs_by_the_defaults() -> None:
    # Every keyword inherited at admission: retried (ON_FAILURE), each attempt timed out after
    # the defaults' timeout, a constant backoff between, and one retry allowed.
    defaults = TaskDefaults(
        restart=RestartPolicy.ON_FAILURE,
        backoff=BackoffPolicy.constant(0.002),
        timeout=0.01,
        max_retries=1,
    )

    async def slow() -> None:
        await asyncio.Event().wait()

    rec = EventRecorder()
    async with asyncio.timeout(GUARD):
        await Supervisor(quiet(), defaults=defaults, subscribers=[rec]).run(
            [TaskSpec("inherits", slow)]
        )
    timed_out = rec.select(E.ATTEMPT_TIMED_OUT, task="inherits")
    assert [e.timeout for e in timed_out] == [0.01, 0.01]
    assert [e.delay for e in rec.select(E.BACKOFF_SCHEDULED)] == [0.002]
    finished = rec.select(E.TASK_FINISHED)[0]
    assert finished.outcome is O.FAILED


def test_once_restartable_periodic() -> None:
    assert TaskSpec.once("a", body).restart == RestartPolicy.NEVER
    assert TaskSpec.restartable("b", body).restart == RestartPolicy.ON_FAILURE
    periodic = TaskSpec.periodic("c", body, 0.5)
    assert periodic.restart == RestartPolicy.always(interval=0.5)
    assert TaskSpec.periodic("d", body, every=2).restart == RestartPolicy.always(interval=2.0)
    for spec in (TaskSpec.once("a", body), periodic):
        assert spec.backoff is spec.timeout is spec.max_retries is TaskSpec("x", body).timeout
        assert "backoff=UNSET, timeout=UNSET, max_retries=UNSET" in repr(spec)


def test_named_constructors_take_the_same_keywords() -> None:
    backoff = BackoffPolicy.constant(0.01)
    for spec in (
        TaskSpec.once("a", body, backoff=backoff, timeout=1.0, max_retries=2),
        TaskSpec.restartable("a", body, backoff=backoff, timeout=1.0, max_retries=2),
        TaskSpec.periodic("a", body, 1.0, backoff=backoff, timeout=1.0, max_retries=2),
    ):
        assert (spec.backoff, spec.timeout, spec.max_retries) == (backoff, 1.0, 2)


def test_spec_is_frozen() -> None:
    spec = TaskSpec.once("t", body)
    with pytest.raises(AttributeError):
        spec.name = "u"  # type: ignore[misc]


def test_spec_equality_is_by_value() -> None:
    assert TaskSpec.once("t", body, timeout=1) == TaskSpec.once("t", body, timeout=1.0)
    assert TaskSpec.once("t", body) != TaskSpec.restartable("t", body)


# ---------------------------------------------------------------- inherit vs explicit


DEFAULTS = TaskDefaults(
    restart=RestartPolicy.always(interval=1.0),
    backoff=BackoffPolicy.constant(0.5),
    timeout=3.0,
    max_retries=4,
)


def test_left_out_keywords_inherit_the_defaults() -> None:
    r = TaskSpec("t", body).resolve(DEFAULTS)
    assert (r.restart, r.backoff, r.timeout, r.max_retries) == (
        DEFAULTS.restart,
        DEFAULTS.backoff,
        3.0,
        4,
    )


def test_explicit_keywords_override_the_defaults() -> None:
    backoff = BackoffPolicy.constant(0.01)
    spec = TaskSpec(
        "t", body, restart=RestartPolicy.NEVER, backoff=backoff, timeout=9.0, max_retries=0
    )
    r = spec.resolve(DEFAULTS)
    assert (r.restart, r.backoff, r.timeout, r.max_retries) == (
        RestartPolicy.NEVER,
        backoff,
        9.0,
        0,
    )


def test_timeout_none_disables_an_inherited_timeout() -> None:
    assert TaskSpec("t", body, timeout=None).resolve(DEFAULTS).timeout is None
    assert TaskSpec("t", body).resolve(DEFAULTS).timeout == 3.0


def test_timeout_zero_means_none_and_is_not_inherited() -> None:
    spec = TaskSpec("t", body, timeout=0)
    assert spec.timeout is None
    assert spec.resolve(DEFAULTS).timeout is None
    assert TaskDefaults(timeout=0).timeout is None


def test_max_retries_none_means_unlimited_not_inherited() -> None:
    assert TaskSpec("t", body, max_retries=None).resolve(DEFAULTS).max_retries is None
    assert TaskSpec("t", body).resolve(DEFAULTS).max_retries == 4


def test_named_constructor_keeps_its_restart_over_the_default() -> None:
    assert TaskSpec.once("t", body).resolve(DEFAULTS).restart == RestartPolicy.NEVER


def test_default_defaults_match_the_spec() -> None:
    d = TaskDefaults()
    assert d.restart == RestartPolicy.ON_FAILURE
    assert d.backoff == BackoffPolicy()
    assert d.timeout is None
    assert d.max_retries is None


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(("name", "exc"), [("", ValueError), (None, TypeError), (1, TypeError)])
def test_name_validation(name: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="name"):
        TaskSpec(name, body)
    with pytest.raises(exc, match="name"):
        TaskSpec.once(name, body)


def test_sync_function_is_refused() -> None:
    with pytest.raises(TypeError, match="async"):
        TaskSpec("t", sync_body)  # type: ignore[arg-type]


def test_coroutine_object_is_refused_with_a_hint() -> None:
    coro = bare()
    try:
        with pytest.raises(TypeError, match="coroutine object"):
            TaskSpec("t", coro)  # type: ignore[arg-type]
    finally:
        coro.close()


@pytest.mark.parametrize("fn", [None, 42, "body", object()])
def test_non_callable_is_refused(fn: Any) -> None:
    with pytest.raises(TypeError, match="fn must be an async callable"):
        TaskSpec("t", fn)


def test_lambda_returning_a_coroutine_is_refused() -> None:
    with pytest.raises(TypeError, match="sync callable"):
        TaskSpec("t", lambda: bare())


def test_async_generator_and_class_are_refused() -> None:
    async def agen() -> Any:
        yield 1

    class Work:
        pass

    with pytest.raises(TypeError, match="async"):
        TaskSpec("t", agen)
    with pytest.raises(TypeError, match="async"):
        TaskSpec("t", Work)  # type: ignore[arg-type]


def test_sync_partial_is_refused() -> None:
    with pytest.raises(TypeError, match="async"):
        TaskSpec("t", functools.partial(sync_body))  # type: ignore[arg-type]


@pytest.mark.parametrize("every", [0, -1.0, math.nan, math.inf])
def test_every_validation(every: float) -> None:
    with pytest.raises(ValueError, match="every"):
        TaskSpec.periodic("t", body, every)


def test_every_wrong_type() -> None:
    with pytest.raises(TypeError, match="every"):
        TaskSpec.periodic("t", body, "1")  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [-1.0, math.nan, math.inf, -math.inf])
def test_timeout_validation(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        TaskSpec("t", body, timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        TaskDefaults(timeout=timeout)


@pytest.mark.parametrize("timeout", ["1", True, [1.0]])
def test_timeout_wrong_type(timeout: Any) -> None:
    with pytest.raises(TypeError, match="timeout"):
        TaskSpec("t", body, timeout=timeout)


@pytest.mark.parametrize(
    ("max_retries", "exc"),
    [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_max_retries_validation(max_retries: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="max_retries"):
        TaskSpec("t", body, max_retries=max_retries)
    with pytest.raises(exc, match="max_retries"):
        TaskDefaults(max_retries=max_retries)


def test_restart_and_backoff_types() -> None:
    with pytest.raises(TypeError, match="restart"):
        TaskSpec("t", body, restart="never")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backoff"):
        TaskSpec("t", body, backoff=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="restart"):
        TaskDefaults(restart=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backoff"):
        TaskDefaults(backoff=None)  # type: ignore[arg-type]


def test_max_retries_zero_is_valid() -> None:
    assert TaskSpec("t", body, max_retries=0).max_retries == 0
    assert TaskDefaults(max_retries=0).max_retries == 0


# ---------------------------------------------------------------- body forms


class AsyncCallable:
    """An object whose ``__call__`` is ``async def``."""

    async def __call__(self, ctx: TaskContext) -> None:
        pass


class AsyncCallableNoCtx:
    async def __call__(self) -> None:
        pass


class Worker:
    async def run(self, ctx: TaskContext) -> None:
        pass

    async def tick(self) -> None:
        pass


async def with_arg(label: str, ctx: TaskContext) -> None:
    pass


async def with_keyword(*, label: str) -> None:
    pass


@pytest.mark.parametrize(
    "fn",
    [
        body,
        bare,
        AsyncCallable(),
        AsyncCallableNoCtx(),
        Worker().run,
        Worker().tick,
        functools.partial(with_arg, "x"),
        functools.partial(with_keyword, label="x"),
        functools.partial(functools.partial(with_arg), "x"),
    ],
)
async def test_both_body_forms_are_accepted(fn: Any) -> None:
    # Called in the wrong form, a body would fail with TypeError: each one completes.
    async with asyncio.timeout(GUARD):
        async with Supervisor(quiet()) as sup:
            outcome = await sup.add(TaskSpec.once("t", fn))
    assert outcome.ok, outcome.reason


async def test_each_body_is_called_in_its_form() -> None:
    seen: list[object] = []

    async def with_ctx(ctx: TaskContext) -> None:
        seen.append((ctx.name, ctx.attempt))

    async def without() -> None:
        seen.append("no ctx")

    async with asyncio.timeout(GUARD), Supervisor(quiet()) as sup:
        assert (await sup.add(TaskSpec.once("with", with_ctx))).ok
        assert (await sup.add(TaskSpec.once("without", without))).ok
    assert seen == [("with", 1), "no ctx"]


# ---------------------------------------------------------------- TaskContext


async def test_context_fields() -> None:
    async with live_context() as (_, handle, ctx):
        assert (ctx.id, ctx.name, ctx.attempt) == (handle.id, "job", 1)
        assert type(ctx.id) is TaskId
        assert ctx.is_cancelled() is False
        assert "job" in repr(ctx)


async def test_context_sees_the_stop_request() -> None:
    async with live_context() as (sup, _, ctx):
        assert sup.remove("job")
        assert ctx.is_cancelled() is True
        async with asyncio.timeout(GUARD):
            await ctx.cancelled()  # returns at once


async def test_cancelled_returns_once_stop_is_requested() -> None:
    async with live_context() as (sup, _, ctx):
        waiter = asyncio.ensure_future(ctx.cancelled())
        assert await not_done_within(waiter)
        sup.remove("job")
        async with asyncio.timeout(GUARD):
            await waiter
        assert ctx.is_cancelled()


async def test_attempts_share_the_stop_signal() -> None:
    # The context of a finished attempt still learns of the task's stop, as the current one.
    contexts: list[TaskContext] = []
    second: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def fails_first(ctx: TaskContext) -> None:
        contexts.append(ctx)
        if ctx.attempt == 1:
            raise Fail("first")
        second.set_result(None)
        await asyncio.Event().wait()

    spec = TaskSpec.restartable("job", fails_first, backoff=BackoffPolicy.constant(0.001))
    async with asyncio.timeout(GUARD), Supervisor(quiet()) as sup:
        handle = sup.add(spec)
        await second
        first, current = contexts
        assert (first.attempt, current.attempt) == (1, 2)
        assert first.id == current.id == handle.id
        assert not first.is_cancelled()
        sup.remove("job")
        assert first.is_cancelled()
        assert current.is_cancelled()
        assert (await handle).kind is O.CANCELED


async def test_sleep_returns_after_its_duration_without_stop() -> None:
    async with live_context() as (_, _, ctx):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ctx.sleep(0.01)
        await ctx.sleep(0)
        await ctx.sleep(-1)
        assert loop.time() - started >= 0.009
        assert not ctx.is_cancelled()


async def test_sleep_ends_early_with_cancelled_error_on_stop() -> None:
    async with live_context() as (sup, _, ctx):
        sleeper = asyncio.ensure_future(ctx.sleep(3600))
        assert await not_done_within(sleeper)
        sup.remove("job")
        with pytest.raises(asyncio.CancelledError):
            await sleeper


async def test_sleep_forever_until_stopped() -> None:
    async with live_context() as (sup, _, ctx):
        sleeper = asyncio.ensure_future(ctx.sleep(math.inf))
        assert await not_done_within(sleeper)
        sup.remove("job")
        with pytest.raises(asyncio.CancelledError):
            await sleeper


async def test_sleep_after_stop_raises_at_once() -> None:
    async with live_context() as (sup, _, ctx):
        sup.remove("job")
        with pytest.raises(asyncio.CancelledError):
            await ctx.sleep(3600)
        with pytest.raises(asyncio.CancelledError):
            await ctx.sleep(0)


async def test_sleep_inside_the_body_ends_the_attempt_on_stop() -> None:
    # The way a body uses it: its sleep raises, the attempt ends canceled, the task CANCELED.
    sleeping: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def naps(ctx: TaskContext) -> None:
        sleeping.set_result(None)
        await ctx.sleep(3600)

    rec = EventRecorder()
    async with asyncio.timeout(GUARD), Supervisor(quiet(), subscribers=[rec]) as sup:
        handle = sup.add(TaskSpec.once("napper", naps))
        await sleeping
        assert await sup.cancel("napper")
        assert (await handle).kind is O.CANCELED
    assert rec.select(E.ATTEMPT_CANCELED, task="napper")


def live_futures() -> int:
    """How many asyncio futures (tasks left out) are alive in the process."""
    gc.collect()
    return sum(
        1
        for o in gc.get_objects()
        if isinstance(o, asyncio.Future) and not isinstance(o, asyncio.Task)
    )


async def test_sleeps_and_abandoned_waits_leave_nothing_behind() -> None:
    # A long-lived task that sleeps in a loop, and waits it gives up on, must not pile up
    # waiters on its context for as long as the task lives.
    async with live_context() as (_, _, ctx):
        before = live_futures()
        for _ in range(300):
            await ctx.sleep(0.0001)
        for _ in range(300):
            waiter = asyncio.ensure_future(ctx.cancelled())
            await asyncio.wait({waiter}, timeout=0)  # let it start waiting, then give up
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        assert live_futures() - before < 50
        assert not ctx.is_cancelled()


async def test_sleep_argument_validation() -> None:
    async with live_context() as (_, _, ctx):
        with pytest.raises(TypeError, match="seconds"):
            await ctx.sleep("1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="seconds"):
            await ctx.sleep(math.nan)


# ---------------------------------------------------------------- TaskId


async def task_ids(n: int) -> list[TaskId]:
    """The ids of ``n`` tasks added one after the other."""
    async with asyncio.timeout(GUARD), Supervisor(quiet()) as sup:
        handles = [sup.add(TaskSpec.once(f"t{i}", bare)) for i in range(n)]
        for h in handles:
            await h
    return [h.id for h in handles]


async def test_task_id_is_an_int() -> None:
    (tid,) = await task_ids(1)
    assert isinstance(tid, TaskId)
    assert isinstance(tid, int)
    assert tid == int(tid)
    assert hash(tid) == hash(int(tid))
    assert tid + 1 == int(tid) + 1
    assert str(tid) == f"{tid}" == str(int(tid))
    assert repr(tid) == f"TaskId({int(tid)})"
    assert {int(tid): "x"}[tid] == "x"


async def test_task_ids_are_unique_and_increasing() -> None:
    ids = await task_ids(2_000)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    again = await task_ids(3)  # never reused, by a later supervisor either
    assert min(again) > max(ids)


async def test_task_ids_are_unique_across_supervisors() -> None:
    config = SupervisorConfig(handle_signals=False, grace=1.0)
    async with Supervisor(config=config) as a, Supervisor(config=config) as b:
        handles = [sup.add(TaskSpec.once(f"t{i}", bare)) for i in range(3) for sup in (a, b)]
        async with asyncio.timeout(5):
            outcomes = [await h for h in handles]
    assert all(o.ok for o in outcomes)
    ids = [h.id for h in handles]
    assert all(type(i) is TaskId for i in ids)
    assert len(set(ids)) == len(ids)


async def test_task_id_pickles() -> None:
    (tid,) = await task_ids(1)
    clone = pickle.loads(pickle.dumps(tid))
    assert clone == tid
    assert type(clone) is TaskId


# ---------------------------------------------------------------- errors raised by bodies


def test_task_error_reason_and_exit_code() -> None:
    for cls in (Fail, Fatal):
        err = cls("db down", exit_code=3)
        assert isinstance(err, TaskError)
        assert isinstance(err, Exception)
        assert not isinstance(err, TaskvisorError)
        assert (err.reason, err.exit_code, str(err)) == ("db down", 3, "db down")
        assert cls("x").exit_code is None
        assert cls().reason == ""


def test_fail_from_keeps_the_cause() -> None:
    cause = ConnectionError("refused")

    def connect() -> None:
        try:
            raise cause
        except ConnectionError as err:
            raise Fail("db down") from err

    with pytest.raises(Fail) as info:
        connect()
    assert info.value.__cause__ is cause
    assert info.value.reason == "db down"


def test_task_error_validation() -> None:
    with pytest.raises(TypeError, match="reason"):
        Fail(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exit_code"):
        Fatal("x", exit_code="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exit_code"):
        Fatal("x", exit_code=True)


@pytest.mark.parametrize(
    "err",
    [
        Fail("a", exit_code=2),
        Fatal("b"),
        TaskAlreadyExists("job"),
        TaskTerminationTimeout(TaskId(7), 1.5),
        SupervisorClosed("closed"),
    ],
)
def test_errors_survive_pickle_and_copy(err: Exception) -> None:
    for clone in (pickle.loads(pickle.dumps(err)), copy.copy(err)):
        assert type(clone) is type(err)
        assert str(clone) == str(err)
        assert vars(clone) == vars(err)


# ---------------------------------------------------------------- the API's error tree


def test_api_errors_share_one_base() -> None:
    for cls in (
        TaskAlreadyExists,
        SupervisorClosed,
        AlreadyRunning,
        TaskTerminationTimeout,
        ControllerNotConfigured,
    ):
        assert issubclass(cls, TaskvisorError)
        assert not issubclass(cls, TaskError)
    assert issubclass(TaskvisorError, Exception)


def test_api_error_attributes() -> None:
    exists = TaskAlreadyExists("job")
    assert exists.name == "job"
    assert "job" in str(exists)
    timeout = TaskTerminationTimeout(TaskId(7), 1.5)
    assert (timeout.task_id, timeout.timeout) == (7, 1.5)
    assert "7" in str(timeout)
    assert "TaskId" not in str(timeout)


# ---------------------------------------------------------------- §13: signatures checked


async def two_args(a: Any, b: Any) -> None:
    pass


async def required_keyword(ctx: TaskContext, *, key: str) -> None:
    pass


async def ctx_and_more(ctx: TaskContext, extra: int, *, flag: bool = False) -> None:
    pass


class TwoArgCallable:
    async def __call__(self, a: Any, b: Any) -> None:
        pass


class Service:
    async def handle(self, request: Any, response: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("fn", "shown"),
    [
        (two_args, "two_args(a: 'Any', b: 'Any')"),
        (required_keyword, "required_keyword(ctx: 'TaskContext', *, key: 'str')"),
        (ctx_and_more, "ctx_and_more(ctx: 'TaskContext', extra: 'int', *, flag: 'bool' = False)"),
        (TwoArgCallable(), "(a: 'Any', b: 'Any')"),
        (Service().handle, "Service.handle(request: 'Any', response: 'Any')"),
        (functools.partial(two_args), "(a: 'Any', b: 'Any')"),
        (functools.partial(with_keyword), "(*, label: 'str')"),
    ],
)
def test_a_body_not_callable_with_ctx_or_nothing_is_refused_naming_its_signature(
    fn: Any, shown: str
) -> None:
    builds: list[Callable[[], TaskSpec]] = [
        lambda: TaskSpec("t", fn),
        lambda: TaskSpec.once("t", fn),
        lambda: TaskSpec.periodic("t", fn, 1.0),
    ]
    for build in builds:
        with pytest.raises(TypeError) as refused:
            build()
        assert shown in str(refused.value), str(refused.value)
        assert "fn(ctx) or fn()" in str(refused.value)


async def optional_positional(a: Any = None, b: Any = None) -> None:
    pass


async def star_args(*args: Any) -> None:
    pass


async def star_kwargs(**kwargs: Any) -> None:
    pass


async def ctx_with_optional_keyword(ctx: TaskContext, *, label: str = "x") -> None:
    pass


@pytest.mark.parametrize(
    ("fn", "takes_context"),
    [
        (optional_positional, True),
        (star_args, True),
        (star_kwargs, False),
        (ctx_with_optional_keyword, True),
        (functools.partial(two_args, 1), True),
        (functools.partial(two_args, 1, 2), False),
    ],
)
async def test_bodies_callable_with_ctx_or_nothing_are_accepted_and_called_so(
    fn: Any, takes_context: bool
) -> None:
    spec = TaskSpec.once("t", fn)
    assert spec.takes_context is takes_context
    async with asyncio.timeout(GUARD), Supervisor(quiet()) as sup:
        outcome = await sup.add(spec)
    assert outcome.ok, outcome.reason  # called in the wrong form it would fail with TypeError


async def test_the_context_reaches_a_star_args_body() -> None:
    got: list[Any] = []

    async def collect(*args: Any) -> None:
        got.extend(args)

    async with asyncio.timeout(GUARD), Supervisor(quiet()) as sup:
        assert (await sup.add(TaskSpec.once("t", collect))).ok
    assert len(got) == 1
    assert isinstance(got[0], TaskContext)


# ---------------------------------------------------------------- §13: new keywords checked


@pytest.mark.parametrize(
    ("value", "exc"),
    [
        (0, ValueError),
        (0.0, ValueError),
        (-1.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("5", TypeError),
        (True, TypeError),
    ],
)
def test_reset_after_validation(value: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="reset_after"):
        TaskSpec("t", body, reset_after=value)
    with pytest.raises(exc, match="reset_after"):
        TaskSpec.periodic("t", body, 1.0, reset_after=value)
    with pytest.raises(exc, match="reset_after"):
        TaskDefaults(reset_after=value)


def test_reset_after_valid_values() -> None:
    assert TaskSpec("t", body, reset_after=2).reset_after == 2.0
    assert TaskSpec("t", body, reset_after=None).reset_after is None
    assert TaskDefaults().reset_after is None
    assert TaskDefaults(reset_after=0.5).reset_after == 0.5


@pytest.mark.parametrize(
    "value",
    ["ValueError", ValueError("x"), (ValueError, "KeyError"), (int,), [object], 42],
)
def test_retry_on_validation(value: Any) -> None:
    with pytest.raises(TypeError, match="retry_on"):
        TaskSpec("t", body, retry_on=value)
    with pytest.raises(TypeError, match="retry_on"):
        TaskSpec.restartable("t", body, retry_on=value)
    with pytest.raises(TypeError, match="retry_on"):
        TaskDefaults(retry_on=value)


def test_retry_on_valid_values() -> None:
    assert TaskSpec("t", body, retry_on=(OSError, ValueError)).retry_on == (OSError, ValueError)
    assert TaskSpec("t", body, retry_on=()).retry_on == ()
    assert TaskSpec("t", body, retry_on=None).retry_on is None
    assert TaskDefaults().retry_on is None
    # A spec is a frozen value: a list given is kept as a tuple.
    spec = TaskSpec("t", body, retry_on=[OSError])  # type: ignore[arg-type]
    assert spec.retry_on == (OSError,)
    assert hash(spec) == hash(TaskSpec("t", body, retry_on=(OSError,)))


@pytest.mark.parametrize(
    ("keyword", "value", "exc"),
    [
        ("jitter", -1.0, ValueError),
        ("jitter", math.nan, ValueError),
        ("jitter", math.inf, ValueError),
        ("jitter", "1", TypeError),
        ("first_delay", -0.5, ValueError),
        ("first_delay", math.inf, ValueError),
        ("first_delay", "1", TypeError),
        ("fixed_rate", "yes", TypeError),
        ("fixed_rate", 1, TypeError),
    ],
)
def test_schedule_keywords_validation(keyword: str, value: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=keyword):
        TaskSpec.periodic("t", body, 1.0, **{keyword: value})


@pytest.mark.parametrize(
    ("tz", "exc"),
    [("Not/AZone", ValueError), ("", ValueError), (5, TypeError), (b"UTC", TypeError)],
)
def test_tz_validation(tz: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="tz"):
        TaskSpec.cron("t", body, "* * * * *", tz=tz)


def test_schedules_are_part_of_the_spec_value() -> None:
    plain = TaskSpec.periodic("t", body, 1.0)
    assert plain.restart == RestartPolicy.always(interval=1.0)
    assert plain == TaskSpec.periodic("t", body, 1.0, jitter=0.0, first_delay=0.0)
    assert plain != TaskSpec.periodic("t", body, 1.0, fixed_rate=True)
    assert plain != TaskSpec.periodic("t", body, 1.0, jitter=0.5)
    assert TaskSpec.cron("t", body, "*/5 * * * *", tz="UTC") == TaskSpec.cron(
        "t", body, "*/5 * * * *", tz="UTC"
    )
    assert TaskSpec.cron("t", body, "*/5 * * * *", tz="UTC") != TaskSpec.cron(
        "t", body, "*/5 * * * *", tz="Europe/Paris"
    )
