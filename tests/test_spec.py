"""Task specs, defaults and their merge; task bodies; ``TaskContext`` and ``TaskId``; the
errors bodies raise and the API's error tree (SPEC §1, §2, §9)."""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import pickle
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

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
    TaskId,
    TaskSpec,
    TaskTerminationTimeout,
    TaskvisorError,
)
from taskvisor._context import StopSignal, new_task_id
from taskvisor._spec import UNSET


async def body(ctx: TaskContext) -> None:
    """A body that takes the context."""


async def bare() -> None:
    """A body that takes nothing."""


def sync_body(ctx: TaskContext) -> None:
    """Not async: refused."""


def ctx_of(stop: StopSignal | None = None, attempt: int = 1) -> TaskContext:
    return TaskContext(new_task_id(), "t", attempt, stop or StopSignal())


# ---------------------------------------------------------------- named constructors


def test_plain_spec_inherits_everything() -> None:
    spec = TaskSpec("t", body)
    assert (spec.name, spec.fn) == ("t", body)
    assert spec.restart is spec.backoff is spec.timeout is spec.max_retries is UNSET


def test_once_restartable_periodic() -> None:
    assert TaskSpec.once("a", body).restart == RestartPolicy.NEVER
    assert TaskSpec.restartable("b", body).restart == RestartPolicy.ON_FAILURE
    periodic = TaskSpec.periodic("c", body, 0.5)
    assert periodic.restart == RestartPolicy.always(interval=0.5)
    assert TaskSpec.periodic("d", body, every=2).restart == RestartPolicy.always(interval=2.0)
    for spec in (TaskSpec.once("a", body), periodic):
        assert spec.backoff is spec.timeout is spec.max_retries is UNSET


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
    coro = body(ctx_of())
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
    ("fn", "takes_context"),
    [
        (body, True),
        (bare, False),
        (AsyncCallable(), True),
        (AsyncCallableNoCtx(), False),
        (Worker().run, True),
        (Worker().tick, False),
        (functools.partial(with_arg, "x"), True),
        (functools.partial(with_keyword, label="x"), False),
        (functools.partial(functools.partial(with_arg), "x"), True),
    ],
)
def test_both_body_forms_are_accepted(fn: Any, takes_context: bool) -> None:
    assert TaskSpec("t", fn).resolve(TaskDefaults()).takes_context is takes_context


async def test_resolved_body_is_called_in_its_form() -> None:
    seen: list[object] = []

    async def with_ctx(ctx: TaskContext) -> None:
        seen.append(ctx)

    async def without() -> None:
        seen.append("no ctx")

    ctx = ctx_of()
    for fn in (with_ctx, without):
        r = TaskSpec("t", fn).resolve(TaskDefaults())
        call: Callable[..., Awaitable[Any]] = r.fn
        await (call(ctx) if r.takes_context else call())
    assert seen == [ctx, "no ctx"]


# ---------------------------------------------------------------- TaskContext


def test_context_fields() -> None:
    tid = new_task_id()
    ctx = TaskContext(tid, "job", 3, StopSignal())
    assert (ctx.id, ctx.name, ctx.attempt) == (tid, "job", 3)
    assert ctx.is_cancelled() is False
    assert "job" in repr(ctx)


async def test_context_sees_the_stop_request() -> None:
    stop = StopSignal()
    ctx = ctx_of(stop)
    stop.request()
    assert ctx.is_cancelled() is True
    async with asyncio.timeout(5):
        await ctx.cancelled()  # returns at once


async def test_cancelled_returns_once_stop_is_requested() -> None:
    stop = StopSignal()
    ctx = ctx_of(stop)
    waiter = asyncio.ensure_future(ctx.cancelled())
    await asyncio.sleep(0)
    assert not waiter.done()
    stop.request()
    async with asyncio.timeout(5):
        await waiter
    assert ctx.is_cancelled()


async def test_attempts_share_the_stop_signal() -> None:
    stop = StopSignal()
    first, second = ctx_of(stop, 1), ctx_of(stop, 2)
    stop.request()
    assert first.is_cancelled()
    assert second.is_cancelled()


async def test_sleep_returns_after_its_duration_without_stop() -> None:
    ctx = ctx_of()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        await ctx.sleep(0.01)
        await ctx.sleep(0)
        await ctx.sleep(-1)
    assert loop.time() - started >= 0.009


async def test_sleep_ends_early_with_cancelled_error_on_stop() -> None:
    stop = StopSignal()
    ctx = ctx_of(stop)
    sleeper = asyncio.ensure_future(ctx.sleep(3600))
    await asyncio.sleep(0)
    assert not sleeper.done()
    stop.request()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await sleeper


async def test_sleep_forever_until_stopped() -> None:
    stop = StopSignal()
    ctx = ctx_of(stop)
    sleeper = asyncio.ensure_future(ctx.sleep(math.inf))
    await asyncio.sleep(0)
    stop.request()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await sleeper


async def test_sleep_after_stop_raises_at_once() -> None:
    stop = StopSignal()
    stop.request()
    ctx = ctx_of(stop)
    with pytest.raises(asyncio.CancelledError):
        await ctx.sleep(3600)
    with pytest.raises(asyncio.CancelledError):
        await ctx.sleep(0)


async def test_sleep_leaves_no_waiter_behind() -> None:
    stop = StopSignal()
    ctx = ctx_of(stop)
    for _ in range(5):
        await ctx.sleep(0.001)
    waiter = asyncio.ensure_future(ctx.cancelled())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert not stop._waiters  # finished sleeps and cancelled waits unregister themselves


async def test_sleep_argument_validation() -> None:
    ctx = ctx_of()
    with pytest.raises(TypeError, match="seconds"):
        await ctx.sleep("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seconds"):
        await ctx.sleep(math.nan)


# ---------------------------------------------------------------- TaskId


def test_task_id_is_an_int() -> None:
    tid = new_task_id()
    assert isinstance(tid, TaskId)
    assert isinstance(tid, int)
    assert tid == int(tid)
    assert hash(tid) == hash(int(tid))
    assert tid + 1 == int(tid) + 1
    assert str(tid) == f"{tid}" == str(int(tid))
    assert repr(tid) == f"TaskId({int(tid)})"
    assert {int(tid): "x"}[tid] == "x"


def test_task_ids_are_unique_and_increasing() -> None:
    ids = [new_task_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


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


def test_task_id_pickles() -> None:
    tid = new_task_id()
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
