"""What to run and how: ``TaskSpec``, the supervisor-wide ``TaskDefaults``, and their merge."""

# No ``from __future__ import annotations`` here: the exported classes' ``__module__`` reads
# ``taskvisor``, so their field annotations must be real objects for ``get_type_hints``.

import enum
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from types import CodeType, FunctionType
from typing import Any, Final, NamedTuple, Self
from zoneinfo import ZoneInfo

from ._context import TaskContext
from ._policies import BackoffPolicy, RestartPolicy
from ._schedule import Schedule, check_tz
from ._validate import check_duration, check_int, check_name

TaskFn = Callable[[TaskContext], Awaitable[Any]] | Callable[[], Awaitable[Any]]
"""A task body: an ``async def`` taking a ``TaskContext`` or nothing."""

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | None
"""``retry_on``: the exception types worth a retry (``None``: every exception)."""


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET
"""Sentinel for a ``TaskSpec`` keyword left out: the value is inherited from ``TaskDefaults``."""


def _is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - we need the type's __call__
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def _takes_context(fn: Callable[..., Any]) -> bool:
    """Whether the body is called with the ``TaskContext`` (else with no argument).

    It is when it can be called with one positional argument; else it must be callable with
    none. Anything else is refused with a ``TypeError`` naming its signature.
    """
    code = getattr(fn, "__code__", None)
    if code is not None and inspect.isfunction(fn):
        # Plain functions: read from the code object (inspect.signature is much slower).
        defaults = len(fn.__defaults__ or ())
        required = code.co_argcount - defaults
        varargs = bool(code.co_flags & inspect.CO_VARARGS)
        kwonly = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
        missing_kwonly = [n for n in kwonly if n not in (fn.__kwdefaults__ or {})]
        one = required <= 1 and (code.co_argcount >= 1 or varargs)
        if not missing_kwonly and (one or required == 0):
            return one
        raise _uncallable(fn)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: pass the context
        return True
    for args in ((None,), ()):
        try:
            sig.bind(*args)
        except TypeError:
            continue
        return bool(args)
    raise _uncallable(fn)


def _uncallable(fn: Callable[..., Any]) -> TypeError:
    try:
        shown = f"{getattr(fn, '__qualname__', type(fn).__name__)}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        shown = repr(fn)
    return TypeError(
        f"fn must be callable as fn(ctx) or fn(), but its signature is {shown}: the "
        "supervisor passes the TaskContext as the only argument, or nothing"
    )


_CHECKED: dict[CodeType, bool] = {}
"""``check_fn``'s verdicts on plain functions it accepted, by code object: a body is checked
once, not once per spec (closures made by one ``def`` share their code)."""

_CHECKED_MAX = 4096


def check_fn(fn: object) -> bool:
    """Refuse anything but an async callable; return whether it takes a context."""
    code = fn.__code__ if type(fn) is FunctionType else None
    if code is not None:
        verdict = _CHECKED.get(code)
        if verdict is not None:
            return verdict
    verdict = _check_fn(fn)
    if code is not None:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[code] = verdict
    return verdict


def _check_fn(fn: object) -> bool:
    if inspect.iscoroutine(fn) or inspect.isawaitable(fn):
        raise TypeError(
            "fn must be an async function, not a coroutine object: pass `work`, not `work()`"
        )
    if not callable(fn):
        raise TypeError(f"fn must be an async callable, got {type(fn).__name__}")
    if not _is_async_callable(fn):
        raise TypeError(f"fn must be an async function (async def), got the sync callable {fn!r}")
    return _takes_context(fn)


def _check_restart(value: object) -> RestartPolicy:
    if not isinstance(value, RestartPolicy):
        raise TypeError(f"restart must be a RestartPolicy, got {type(value).__name__}")
    return value


def _check_backoff(value: object) -> BackoffPolicy:
    if not isinstance(value, BackoffPolicy):
        raise TypeError(f"backoff must be a BackoffPolicy, got {type(value).__name__}")
    return value


def _check_timeout(value: object) -> float | None:
    t = check_duration("timeout", value, allow_none=True)
    return None if t == 0 else t  # a timeout of 0 means "no timeout"


def _check_reset_after(value: object) -> float | None:
    if value is None:
        return None
    return check_duration("reset_after", value, positive=True)


def _check_retry_on(value: object) -> tuple[type[BaseException], ...] | None:
    """``None`` (retry every exception), an exception type, or a collection of them."""
    if value is None:
        return None
    items = (value,) if isinstance(value, type) else value
    if isinstance(items, str | bytes) or not isinstance(items, tuple | list | set | frozenset):
        raise TypeError(f"retry_on must be a tuple of exception types, got {type(value).__name__}")
    kinds = tuple(items)
    for kind in kinds:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"retry_on must hold exception types, got {kind!r}")
    return kinds


_DEFAULT_BACKOFF = BackoffPolicy()
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """What every ``TaskSpec`` inherits for the keywords it leaves out."""

    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    backoff: BackoffPolicy = _DEFAULT_BACKOFF
    timeout: float | None = None
    max_retries: int | None = None
    reset_after: float | None = None
    retry_on: tuple[type[BaseException], ...] | None = None

    def __post_init__(self) -> None:
        _check_restart(self.restart)
        _check_backoff(self.backoff)
        object.__setattr__(self, "timeout", _check_timeout(self.timeout))
        check_int("max_retries", self.max_retries, minimum=0, allow_none=True)
        object.__setattr__(self, "reset_after", _check_reset_after(self.reset_after))
        object.__setattr__(self, "retry_on", _check_retry_on(self.retry_on))


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A named async body plus its policies; keywords left out inherit ``TaskDefaults``.

    ``reset_after``: a failed attempt that ran at least this long starts a new failure
    streak (budget and backoff start over). ``retry_on``: the exception types worth a retry
    (``Fail`` always is, ``Fatal`` never); any other ends the task as ``Fatal`` would.
    ``schedule`` is set by ``periodic`` (``fixed_rate``, ``jitter``, ``first_delay``) and
    ``cron``.
    """

    name: str
    fn: TaskFn
    restart: RestartPolicy | _Unset = UNSET
    backoff: BackoffPolicy | _Unset = UNSET
    timeout: float | _Unset | None = UNSET
    max_retries: int | _Unset | None = UNSET
    reset_after: float | _Unset | None = UNSET
    retry_on: tuple[type[BaseException], ...] | _Unset | None = UNSET
    schedule: Schedule | None = None
    _takes_context: bool = field(init=False, repr=False, compare=False, default=False)

    def __init__(
        self,
        name: str,
        fn: TaskFn,
        *,
        restart: RestartPolicy | _Unset = UNSET,
        backoff: BackoffPolicy | _Unset = UNSET,
        timeout: float | _Unset | None = UNSET,
        max_retries: int | _Unset | None = UNSET,
        reset_after: float | _Unset | None = UNSET,
        retry_on: RetryOn | _Unset = UNSET,
        schedule: Schedule | None = None,
    ) -> None:
        # Each check's common case is tested inline; the full check (and its error) otherwise.
        if type(name) is not str or not name:
            check_name("name", name)
        takes_context = check_fn(fn)
        if restart is not UNSET and type(restart) is not RestartPolicy:
            _check_restart(restart)
        if backoff is not UNSET and type(backoff) is not BackoffPolicy:
            _check_backoff(backoff)
        if timeout is not UNSET and not (type(timeout) is float and 0.0 < timeout < _INF):
            timeout = _check_timeout(timeout)
        if max_retries is not UNSET and not (type(max_retries) is int and max_retries >= 0):
            check_int("max_retries", max_retries, minimum=0, allow_none=True)
        if reset_after is not UNSET:
            reset_after = _check_reset_after(reset_after)
        if retry_on is not UNSET:
            retry_on = _check_retry_on(retry_on)
        if schedule is not None:
            if not isinstance(schedule, Schedule):
                raise TypeError(
                    "schedule is set by TaskSpec.periodic or TaskSpec.cron, "
                    f"got {type(schedule).__name__}"
                )
            periodic = isinstance(restart, RestartPolicy) and restart.interval is not None
            if schedule.cron is None and (schedule.fixed_rate or schedule.jitter) and not periodic:
                raise ValueError(
                    "fixed_rate and jitter need a period: TaskSpec.periodic(name, fn, every, ...)"
                )
        _set_name(self, name)
        _set_fn(self, fn)
        _set_restart(self, restart)
        _set_backoff(self, backoff)
        _set_timeout(self, timeout)
        _set_max_retries(self, max_retries)
        _set_reset_after(self, reset_after)
        _set_retry_on(self, retry_on)
        _set_schedule(self, schedule)
        _set_takes_context(self, takes_context)

    @classmethod
    def once(
        cls,
        name: str,
        fn: TaskFn,
        *,
        backoff: BackoffPolicy | _Unset = UNSET,
        timeout: float | _Unset | None = UNSET,
        max_retries: int | _Unset | None = UNSET,
        reset_after: float | _Unset | None = UNSET,
        retry_on: RetryOn | _Unset = UNSET,
    ) -> Self:
        """A task that runs one attempt (restart ``NEVER``)."""
        return cls(
            name,
            fn,
            restart=RestartPolicy.NEVER,
            backoff=backoff,
            timeout=timeout,
            max_retries=max_retries,
            reset_after=reset_after,
            retry_on=retry_on,
        )

    @classmethod
    def restartable(
        cls,
        name: str,
        fn: TaskFn,
        *,
        backoff: BackoffPolicy | _Unset = UNSET,
        timeout: float | _Unset | None = UNSET,
        max_retries: int | _Unset | None = UNSET,
        reset_after: float | _Unset | None = UNSET,
        retry_on: RetryOn | _Unset = UNSET,
    ) -> Self:
        """A task retried after failures until it succeeds (restart ``ON_FAILURE``)."""
        return cls(
            name,
            fn,
            restart=RestartPolicy.ON_FAILURE,
            backoff=backoff,
            timeout=timeout,
            max_retries=max_retries,
            reset_after=reset_after,
            retry_on=retry_on,
        )

    @classmethod
    def periodic(
        cls,
        name: str,
        fn: TaskFn,
        every: float,
        *,
        fixed_rate: bool = False,
        jitter: float = 0.0,
        first_delay: float = 0.0,
        backoff: BackoffPolicy | _Unset = UNSET,
        timeout: float | _Unset | None = UNSET,
        max_retries: int | _Unset | None = UNSET,
        reset_after: float | _Unset | None = UNSET,
        retry_on: RetryOn | _Unset = UNSET,
    ) -> Self:
        """A task run again ``every`` seconds after each success (restart ``always``).

        ``fixed_rate=True``: runs start on the grid first start + k × ``every`` (a run that
        overran skips the ticks it missed). ``jitter``: a uniform ``[0, jitter]`` seconds
        added to each wait. ``first_delay``: seconds before the first run.
        """
        interval = check_duration("every", every, positive=True)
        schedule = None
        if fixed_rate is not False or jitter != 0.0 or first_delay != 0.0:  # None is checked too
            schedule = Schedule(first_delay=first_delay, jitter=jitter, fixed_rate=fixed_rate)
        return cls(
            name,
            fn,
            restart=RestartPolicy.always(interval=interval),
            backoff=backoff,
            timeout=timeout,
            max_retries=max_retries,
            reset_after=reset_after,
            retry_on=retry_on,
            schedule=schedule,
        )

    @classmethod
    def cron(
        cls,
        name: str,
        fn: TaskFn,
        expression: str,
        *,
        tz: ZoneInfo | str | None = None,
        jitter: float = 0.0,
        first_delay: float = 0.0,
        backoff: BackoffPolicy | _Unset = UNSET,
        timeout: float | _Unset | None = UNSET,
        max_retries: int | _Unset | None = UNSET,
        reset_after: float | _Unset | None = UNSET,
        retry_on: RetryOn | _Unset = UNSET,
    ) -> Self:
        """A task run on a five-field cron schedule (extra ``taskvisor[cron]``).

        The first run is at the first matching time after the task is added; after a
        success the next is at the next matching time; a failure is retried by backoff.
        ``tz``: a ``zoneinfo.ZoneInfo``, a zone name, or ``None`` (local time). A bad
        expression raises ``ValueError`` naming it.
        """
        schedule = Schedule(
            first_delay=first_delay, jitter=jitter, cron=expression, tz=check_tz(tz)
        )
        return cls(
            name,
            fn,
            restart=RestartPolicy.always(),
            backoff=backoff,
            timeout=timeout,
            max_retries=max_retries,
            reset_after=reset_after,
            retry_on=retry_on,
            schedule=schedule,
        )

    @property
    def takes_context(self) -> bool:
        """Whether ``fn`` is called with the ``TaskContext`` (it accepts a positional argument)."""
        return self._takes_context

    def resolve(self, defaults: TaskDefaults) -> Self:
        """This spec with every left-out keyword replaced by its value in ``defaults``."""
        if not isinstance(defaults, TaskDefaults):
            raise TypeError(f"defaults must be a TaskDefaults, got {type(defaults).__name__}")
        p = policies(self, defaults)
        return type(self)(
            self.name,
            self.fn,
            restart=p.restart,
            backoff=p.backoff,
            timeout=p.timeout,
            max_retries=p.max_retries,
            reset_after=p.reset_after,
            retry_on=p.retry_on,
            schedule=self.schedule,
        )


# Each field's slot setter: a frozen instance is filled through them (object.__setattr__ per
# field would cost about as much as all the checks).
(
    _set_name,
    _set_fn,
    _set_restart,
    _set_backoff,
    _set_timeout,
    _set_max_retries,
    _set_reset_after,
    _set_retry_on,
    _set_schedule,
    _set_takes_context,
) = (TaskSpec.__dict__[f.name].__set__ for f in fields(TaskSpec))


class Policies(NamedTuple):
    """A spec's policies with the supervisor's defaults merged in (internal).

    A named tuple: one is made per task run, and a tuple is the cheapest value to make.
    """

    restart: RestartPolicy
    backoff: BackoffPolicy
    timeout: float | None
    max_retries: int | None
    reset_after: float | None
    retry_on: tuple[type[BaseException], ...] | None


def policies(spec: TaskSpec, defaults: TaskDefaults) -> Policies:
    """The one merge of a spec's keywords with ``defaults``: a left-out keyword inherits."""
    # tuple.__new__ directly: the named tuple's own __new__ is a Python function (half the cost).
    return _new_policies(
        Policies,
        (
            defaults.restart if spec.restart is UNSET else spec.restart,
            defaults.backoff if spec.backoff is UNSET else spec.backoff,
            defaults.timeout if spec.timeout is UNSET else spec.timeout,
            defaults.max_retries if spec.max_retries is UNSET else spec.max_retries,
            defaults.reset_after if spec.reset_after is UNSET else spec.reset_after,
            defaults.retry_on if spec.retry_on is UNSET else spec.retry_on,
        ),
    )


_new_policies = tuple.__new__
