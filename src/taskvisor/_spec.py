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

from ._context import TaskContext
from ._policies import BackoffPolicy, RestartPolicy
from ._validate import check_duration, check_int, check_name

TaskFn = Callable[[TaskContext], Awaitable[Any]] | Callable[[], Awaitable[Any]]
"""A task body: an ``async def`` taking a ``TaskContext`` or nothing."""


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
    """Whether the body wants the ``TaskContext`` (it accepts a positional parameter)."""
    code = getattr(fn, "__code__", None)
    if code is not None and inspect.isfunction(fn):
        # Plain functions: read from the code object (inspect.signature is much slower).
        return code.co_argcount > 0 or bool(code.co_flags & inspect.CO_VARARGS)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: pass the context
        return True
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL):
            return True
    return False


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


_DEFAULT_BACKOFF = BackoffPolicy()
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """What every ``TaskSpec`` inherits for the keywords it leaves out."""

    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    backoff: BackoffPolicy = _DEFAULT_BACKOFF
    timeout: float | None = None
    max_retries: int | None = None

    def __post_init__(self) -> None:
        _check_restart(self.restart)
        _check_backoff(self.backoff)
        object.__setattr__(self, "timeout", _check_timeout(self.timeout))
        check_int("max_retries", self.max_retries, minimum=0, allow_none=True)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A named async body plus its policies; keywords left out inherit ``TaskDefaults``."""

    name: str
    fn: TaskFn
    restart: RestartPolicy | _Unset = UNSET
    backoff: BackoffPolicy | _Unset = UNSET
    timeout: float | _Unset | None = UNSET
    max_retries: int | _Unset | None = UNSET
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
        _set_name(self, name)
        _set_fn(self, fn)
        _set_restart(self, restart)
        _set_backoff(self, backoff)
        _set_timeout(self, timeout)
        _set_max_retries(self, max_retries)
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
    ) -> Self:
        """A task that runs one attempt (restart ``NEVER``)."""
        return cls(
            name,
            fn,
            restart=RestartPolicy.NEVER,
            backoff=backoff,
            timeout=timeout,
            max_retries=max_retries,
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
    ) -> Self:
        """A task retried after failures until it succeeds (restart ``ON_FAILURE``)."""
        return cls(
            name,
            fn,
            restart=RestartPolicy.ON_FAILURE,
            backoff=backoff,
            timeout=timeout,
            max_retries=max_retries,
        )

    @classmethod
    def periodic(
        cls,
        name: str,
        fn: TaskFn,
        every: float,
        *,
        backoff: BackoffPolicy | _Unset = UNSET,
        timeout: float | _Unset | None = UNSET,
        max_retries: int | _Unset | None = UNSET,
    ) -> Self:
        """A task run again ``every`` seconds after each success (restart ``always``)."""
        interval = check_duration("every", every, positive=True)
        return cls(
            name,
            fn,
            restart=RestartPolicy.always(interval=interval),
            backoff=backoff,
            timeout=timeout,
            max_retries=max_retries,
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
        ),
    )


_new_policies = tuple.__new__
