"""``[defaults]`` and ``[[task]]``: policies, commands and ``call`` targets, checked.

A command's default working directory is the file's directory; a relative ``cwd`` is
resolved against it. ``call`` targets are imported (a plain function runs in a thread).
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._policies import BackoffPolicy, JitterPolicy, RestartPolicy
from .._schedule import Schedule
from .._spec import TaskDefaults, TaskSpec, _is_async_callable
from .._threaded import threaded
from ..process import command
from ._limits import Limits, read_limits
from ._output import OutputPlan, read_output
from ._pending import PENDING_KEYS, read_pending
from ._probes import Probe, read_probe
from ._table import MISSING, Table, resolve_path, show

RESTARTS = ("never", "on_failure", "always")
JITTERS = tuple(j.value for j in JitterPolicy)
BACKOFF_KEYS = ("factor", "first", "jitter", "max")
POLICY_KEYS = ("backoff", "interval", "max_retries", "restart", "timeout")
DEFAULT_KEYS = (*POLICY_KEYS, *PENDING_KEYS)
COMMAND_KEYS = (
    "backups",
    "cwd",
    "env",
    "fatal_exit_codes",
    "health",
    "limits",
    "max_bytes",
    "ready",
    "stderr",
    "stdout",
    "stop_signal",
    "stop_timeout",
    "success_exit_codes",
)
TASK_KEYS = ("after", "call", "command", "name", *POLICY_KEYS, *PENDING_KEYS, *COMMAND_KEYS)
RESERVED_NAME = "(taskvisor)"
"""The name of the run's own internal task (``_runtime``); no file task may take it."""

Body = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """One ``[[task]]``, checked; ``_runtime`` builds its ``TaskSpec`` with ``spec(body)``."""

    name: str
    index: int
    policies: dict[str, Any]
    """``TaskSpec`` keywords given in the table (left out: inherited from ``[defaults]``)."""
    body: Body | None = None
    """A ``call`` task's body."""
    argv: tuple[str, ...] = ()
    command_options: dict[str, Any] = field(default_factory=dict)
    """``process.command`` keywords of a command task (``cwd`` always set)."""
    after: tuple[str, ...] = ()
    ready: Probe | None = None
    health: Probe | None = None
    limits: Limits | None = None
    output: OutputPlan = field(default_factory=OutputPlan)
    once: bool = False
    """Restart ``never`` (its own or inherited): ready means completed."""
    fingerprint: str = ""
    """The task's table and ``[defaults]`` as written: a reload restarts it when this changes."""
    pending: dict[str, Any] = field(default_factory=dict)
    """``TaskSpec`` keywords of SPEC §10/§13 read from the file (its own, then ``[defaults]``)
    that this version's ``TaskSpec`` does not take yet (``_pending.py``)."""

    @property
    def is_command(self) -> bool:
        """Whether this task runs a program (else it calls a function)."""
        return bool(self.argv)

    def spec(self, body: Body) -> TaskSpec:
        """The ``TaskSpec`` of this task, running ``body``.

        The one place where the file's keywords become ``TaskSpec`` keywords (those of
        ``_pending.NOT_APPLIED`` are not taken yet).
        """
        kw = dict(self.policies)
        p = self.pending
        for key in ("reset_after", "retry_on"):
            if key in p:
                kw[key] = p[key]
        if "cron" in p:
            kw.pop("restart", None)
            return TaskSpec.cron(
                self.name,
                body,
                p["cron"],
                tz=p.get("tz"),
                jitter=p.get("jitter", 0.0),
                first_delay=p.get("first_delay", 0.0),
                **kw,
            )
        if any(key in p for key in ("fixed_rate", "jitter", "first_delay")):
            kw["schedule"] = Schedule(
                first_delay=p.get("first_delay", 0.0),
                jitter=p.get("jitter", 0.0),
                fixed_rate=p.get("fixed_rate", False),
            )
        return TaskSpec(self.name, body, **kw)


# ---------------------------------------------------------------------- policies


def restart_policy(t: Table, interval_allowed_by_default: bool) -> Any:
    """The ``restart`` and ``interval`` keys as a ``RestartPolicy`` (``MISSING`` if absent)."""
    mode = t.choice("restart", RESTARTS)
    interval = t.number("interval", positive=True)
    if t.has("interval") and interval is not MISSING:
        always = mode == "always" if t.has("restart") else interval_allowed_by_default
        if not always:
            t.error("interval", 'only valid with restart = "always"; remove it or set restart')
            return MISSING
    if mode is MISSING:
        if interval is not MISSING:
            return RestartPolicy.always(interval=interval)
        return MISSING
    if mode == "always":
        return RestartPolicy.always(interval=None if interval is MISSING else interval)
    return RestartPolicy.NEVER if mode == "never" else RestartPolicy.ON_FAILURE


def backoff_policy(t: Table, base: Mapping[str, Any]) -> Any:
    """The ``backoff`` table as a ``BackoffPolicy``; keys it leaves out come from ``base``."""
    sub = t.sub("backoff")
    if sub is None:
        return MISSING
    sub.only(BACKOFF_KEYS)
    errors_before = len(t.errors)
    values = dict(base)
    for key in ("first", "max"):
        v = sub.number(key)
        if v is not MISSING:
            values[key] = v
    factor = sub.raw("factor")
    if factor is not MISSING:
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor >= 1:
            sub.error("factor", f"expected a number >= 1, got {show(factor)}")
        elif not math.isfinite(float(factor)):
            sub.error("factor", f"expected a finite number >= 1, got {show(factor)}")
        else:
            values["factor"] = float(factor)
    jitter = sub.choice("jitter", JITTERS)
    if jitter is not MISSING:
        values["jitter"] = jitter
    if len(t.errors) > errors_before:
        return MISSING
    kwargs = dict(values)
    if "jitter" in kwargs:
        kwargs["jitter"] = JitterPolicy(kwargs["jitter"])
    try:
        return BackoffPolicy(**kwargs)
    except (TypeError, ValueError) as exc:
        t.error("backoff", f"{exc}")
        return MISSING


def timeout_value(t: Table) -> Any:
    """``timeout``: seconds, with 0 meaning none."""
    value = t.number("timeout")
    if value is MISSING:
        return MISSING
    return None if value == 0 else value


def max_retries_value(t: Table) -> Any:
    """``max_retries``: an integer >= 0, or ``"unlimited"`` (``None``)."""
    value = t.raw("max_retries")
    if value is MISSING:
        return MISSING
    if value == "unlimited":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        t.error("max_retries", f'expected an integer >= 0 or "unlimited", got {show(value)}')
        return MISSING
    return value


def backoff_fields(t: Table) -> dict[str, Any]:
    """The raw keys of a (valid) backoff table, for tasks to fall back on."""
    value = t.raw("backoff")
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if k in BACKOFF_KEYS}


# ---------------------------------------------------------------------- tasks


def _signal(t: Table, key: str) -> Any:
    value = t.raw(key)
    if value is MISSING:
        return MISSING
    expected = 'a signal name like "SIGTERM" or "INT", or a signal number'
    if isinstance(value, str):
        name = value.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            sig = signal.Signals[name]
        except KeyError:
            t.error(key, f"expected {expected}, got {show(value)}")
            return MISSING
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            sig = signal.Signals(value)
        except ValueError:
            t.error(key, f"expected {expected}, got {show(value)}")
            return MISSING
    else:
        t.error(key, f"expected {expected}, got {show(value)}")
        return MISSING
    if sig is signal.SIGSTOP:
        t.error(key, "expected a signal that ends a program, got SIGSTOP")
        return MISSING
    return sig


def _codes(t: Table, key: str) -> Any:
    value = t.raw(key)
    if value is MISSING:
        return MISSING
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        t.error(key, f"expected an array of integers, like [1, 2], got {show(value)}")
        return MISSING
    return tuple(value)


def _argv(t: Table) -> Any:
    value = t.raw("command")
    expected = 'a non-empty array of strings, like ["python3", "-m", "http.server"]'
    if isinstance(value, str):
        t.error(
            "command",
            f"expected {expected} (no shell is used; to use one, write "
            f'["sh", "-c", {json.dumps(value)}]), got {show(value)}',
        )
        return MISSING
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) for v in value)
        or not value[0]
    ):
        t.error("command", f"expected {expected}, got {show(value)}")
        return MISSING
    return list(value)


def _env(t: Table) -> Any:
    value = t.raw("env")
    if value is MISSING:
        return MISSING
    if not isinstance(value, dict):
        t.error(
            "env", f'expected a table of strings, like env = {{ PORT = "8000" }}, got {show(value)}'
        )
        return MISSING
    ok = True
    for key, v in value.items():
        if not isinstance(v, str):
            t.error(f"env.{key}", f'expected a string (quote it: {key} = "{v}"), got {show(v)}')
            ok = False
    return dict(value) if ok else MISSING


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (``function`` may be a dotted attribute path).

    Raises ``ValueError`` with a message for people when it cannot.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f'expected "package.module:function", got {json.dumps(spec)}')
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise ValueError(
                f'cannot import module "{module_name}" ({exc}); expected '
                '"package.module:function" naming a module on the Python path'
            ) from None
        raise ValueError(f'importing "{module_name}" failed: {type(exc).__name__}: {exc}') from None
    except Exception as exc:
        raise ValueError(f'importing "{module_name}" failed: {type(exc).__name__}: {exc}') from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f'"{module_name}" has no attribute "{attr_path}"; expected '
                '"package.module:function" naming a function'
            ) from None
    if inspect.isclass(obj):
        raise ValueError(f'"{spec}" is a class; expected a function')
    if not callable(obj):
        raise ValueError(f'"{spec}" is not callable (a {type(obj).__name__}); expected a function')
    return obj  # type: ignore[no-any-return]


def _body(t: Table, spec: str) -> Any:
    """The task body for ``call``: an async function as is, a plain one in a thread."""
    try:
        fn = load_callable(spec)
    except ValueError as exc:
        t.error("call", str(exc))
        return MISSING
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        t.error("call", f'"{spec}" is a generator function; expected a function')
        return MISSING
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        required = [
            p
            for p in sig.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        kw_required = [
            p for p in sig.parameters.values() if p.default is p.empty and p.kind is p.KEYWORD_ONLY
        ]
        if len(required) > 1 or kw_required:
            t.error("call", f'"{spec}" takes {sig}; expected a function taking (ctx) or nothing')
            return MISSING
    return fn if _is_async_callable(fn) else threaded(fn)


def _after(t: Table, name: Any) -> Any:
    value = t.raw("after")
    if value is MISSING:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        t.error("after", f'expected an array of task names, like ["db"], got {show(value)}')
        return MISSING
    if name in value:
        t.error("after", f"a task cannot wait for itself: remove {json.dumps(name)}")
        return MISSING
    return tuple(dict.fromkeys(value))


def _which(argv0: str, cwd: str, env: Mapping[str, str] | None) -> bool:
    """Whether ``argv0`` would be found when the program starts (in ``cwd``, on ``PATH``)."""
    if "/" in argv0:
        path = argv0 if os.path.isabs(argv0) else os.path.join(cwd, argv0)
        return os.path.isfile(path) and os.access(path, os.X_OK)
    search = (env or {}).get("PATH", os.environ.get("PATH", os.defpath))
    for directory in search.split(os.pathsep):
        path = os.path.join(directory or ".", argv0)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return True
    return False


def read_task(
    errors: list[str],
    file: str,
    base: Path,
    index: int,
    data: dict[str, Any],
    defaults: TaskDefaults,
    default_backoff: Mapping[str, Any],
    names: dict[str, int],
    warnings: list[str],
    defaults_raw: Mapping[str, Any] | None = None,
    default_pending: Mapping[str, Any] | None = None,
) -> TaskPlan | None:
    """One ``[[task]]`` as a ``TaskPlan``; ``None`` once its errors are recorded.

    ``names`` maps the names seen so far to their position (for duplicates); keys left out
    are left out of the spec too, so ``TaskDefaults`` fills them in at admission.
    """
    raw_name = data.get("name")
    label = (
        f"task {json.dumps(raw_name)} (#{index})"
        if isinstance(raw_name, str) and raw_name
        else f"task #{index}"
    )
    t = Table(errors, f"{file}: {label}", data)
    before = len(errors)
    t.only(TASK_KEYS, {"args": "arguments belong in the command array"})
    name = t.raw("name")
    if name is MISSING:
        t.error("name", "required; expected a non-empty string")
    else:
        name = t.string("name")
        if name is not MISSING:
            if name == RESERVED_NAME:
                t.error(
                    "name", f"{json.dumps(name)} is reserved for taskvisor itself; pick another"
                )
            elif name in names:
                t.error(
                    "name",
                    f"expected a unique name, but task #{names[name]} is also {json.dumps(name)}",
                )
            else:
                names[name] = index
    has_cmd, has_call = t.has("command"), t.has("call")
    if has_cmd == has_call:
        which = "both" if has_cmd else "neither"
        t.error(
            "command",
            f'expected exactly one of command = [...] or call = "module:function", got {which}',
        )
    policies: dict[str, Any] = {
        "restart": restart_policy(t, defaults.restart.mode.value == "always"),
        "backoff": backoff_policy(t, default_backoff),
        "timeout": timeout_value(t),
        "max_retries": max_retries_value(t),
    }
    after = _after(t, name)
    restart = policies["restart"]
    if restart is MISSING:
        restart = defaults.restart
    pending = {
        **(default_pending or {}),
        **read_pending(t, interval=restart.interval is not None),
    }
    extra: dict[str, Any] = {}
    body: Any = MISSING
    if has_cmd and not has_call:
        argv = _argv(t)
        cwd = t.string("cwd", "a directory path")
        env = _env(t)
        stop_signal = _signal(t, "stop_signal")
        stop_timeout = t.number("stop_timeout")
        fatal = _codes(t, "fatal_exit_codes")
        success = _codes(t, "success_exit_codes")
        ready = read_probe(t, "ready")
        health = read_probe(t, "health")
        limits = read_limits(t)
        output = read_output(t, base)
        if fatal is not MISSING:
            both = set(fatal) & set((0,) if success is MISSING else success)
            if both:
                t.error(
                    "fatal_exit_codes",
                    f"expected codes that are not also success_exit_codes, got {sorted(both)}",
                )
        if len(errors) == before:
            kwargs: dict[str, Any] = {
                "cwd": resolve_path(base, cwd) if cwd is not MISSING else str(base)
            }
            for key, value in (
                ("env", env),
                ("stop_signal", stop_signal),
                ("stop_timeout", stop_timeout),
                ("fatal_exit_codes", fatal),
                ("success_exit_codes", success),
            ):
                if value is not MISSING:
                    kwargs[key] = value
            try:
                body = command(argv, **kwargs)
            except (TypeError, ValueError) as exc:
                t.error("command", str(exc))
            directory = Path(kwargs["cwd"])
            if not directory.is_dir():
                warnings.append(f"{file}: {label}: cwd: {directory} is not a directory (yet)")
            elif not _which(argv[0], kwargs["cwd"], kwargs.get("env")):
                warnings.append(
                    f"{file}: {label}: command: {json.dumps(argv[0])} is not found "
                    + ("(relative to cwd)" if "/" in argv[0] else "on PATH")
                    + "; the task will fail to start unless it is installed first"
                )
            extra = {
                "argv": tuple(argv),
                "command_options": kwargs,
                "ready": None if ready is MISSING else ready,
                "health": None if health is MISSING else health,
                "limits": None if limits is MISSING else limits,
                "output": output,
            }
    elif has_call and not has_cmd:
        for key in COMMAND_KEYS:
            if t.has(key):
                t.error(key, "only valid for a command task; remove it, or use command = [...]")
        call = t.string("call", '"package.module:function"')
        if call is not MISSING:
            body = _body(t, call)
            if body is not MISSING:
                extra = {"body": body}
    if len(errors) > before or body is MISSING or after is MISSING:
        return None
    kwargs = {k: v for k, v in policies.items() if v is not MISSING}
    try:
        TaskSpec(name, body, **kwargs)  # every check the spec makes, now
    except (TypeError, ValueError) as exc:
        t.error("task", str(exc))
        return None
    fingerprint = json.dumps([data, defaults_raw or {}], sort_keys=True, default=str)
    return TaskPlan(
        name,
        index,
        kwargs,
        after=after,
        once=restart.mode.value == "never",
        fingerprint=fingerprint,
        pending=pending,
        **extra,
    )
