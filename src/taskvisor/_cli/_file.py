"""Reading a ``taskvisor run`` file: TOML in, a checked ``Plan`` out, or every error found.

Every error names the file, the table or task, the field, and what was expected; nothing
here raises anything but ``FileErrors`` for a bad file. Relative paths in the file (a task's
``cwd``, a subscriber's ``path``) are resolved against the file's directory, which is also a
command's default working directory and the first place ``call`` modules are imported from.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import SupervisorConfig
from .._events import EventKind
from .._outcome import OutcomeKind
from .._spec import TaskDefaults, TaskSpec
from ._table import (
    MISSING,
    FileErrors,
    Table,
    array_of_tables,
    choices,
    resolve_path,
    show,
    top_table,
)
from ._tasks import (
    DEFAULT_KEYS,
    backoff_fields,
    backoff_policy,
    max_retries_value,
    read_task,
    restart_policy,
    timeout_value,
)

__all__ = ["FileErrors", "Plan", "SubscriberPlan", "import_subscriber", "load", "parse_listen"]

SUBSCRIBER_TYPES = ("log", "jsonl", "prometheus")
TOP_KEYS = ("defaults", "run", "status", "subscriber", "supervisor", "task")
SUPERVISOR_KEYS = ("grace", "max_concurrent", "subscriber_shutdown_timeout")
RUN_KEYS = ("stop_after",)
SUBSCRIBER_KEYS: dict[str, tuple[str, ...]] = {
    "log": ("level_map", "logger", "type"),
    "jsonl": ("path", "type"),
    "prometheus": ("buckets", "namespace", "task_label", "type"),
}
STATUS_KEYS = ("listen",)
DEFAULT_LISTEN = "127.0.0.1:8765"


@dataclass(frozen=True)
class SubscriberPlan:
    """One ``[[subscriber]]``: its type and checked options (built when the run starts)."""

    type: str
    options: dict[str, Any]
    where: str


@dataclass(frozen=True)
class Plan:
    """Everything ``taskvisor run`` needs, checked."""

    path: Path
    config: SupervisorConfig
    defaults: TaskDefaults
    specs: list[TaskSpec]
    subscribers: list[SubscriberPlan] = field(default_factory=list)
    status: tuple[str, int] | None = None
    stop_after: float | None = None
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- subscribers


def _subscriber(
    errors: list[str], file: str, base: Path, index: int, data: dict[str, Any]
) -> SubscriberPlan | None:
    kind = data.get("type")
    label = f"subscriber #{index}" + (f" ({kind})" if isinstance(kind, str) else "")
    t = Table(errors, f"{file}: {label}", data)
    if not t.has("type"):
        t.error("type", f"required; expected {choices(SUBSCRIBER_TYPES)}")
        return None
    kind = t.choice("type", SUBSCRIBER_TYPES)
    if kind is MISSING:
        return None
    before = len(errors)
    t.only(SUBSCRIBER_KEYS[kind])
    options: dict[str, Any] = {}
    if kind == "log":
        logger = t.string("logger", "a logger name")
        if logger is not MISSING:
            options["logger"] = logger
        levels = t.sub("level_map")
        if levels is not None:
            options["level_map"] = _level_map(levels)
    elif kind == "jsonl":
        if not t.has("path"):
            t.error("path", "required; expected the path of the file to append events to")
        else:
            path = t.string("path", "a file path")
            if path is not MISSING:
                options["path"] = resolve_path(base, path)
    else:
        task_label = t.boolean("task_label")
        if task_label is not MISSING:
            options["task_label"] = task_label
        namespace = t.string("namespace", "a metric name prefix")
        if namespace is not MISSING:
            options["namespace"] = namespace
        buckets = t.raw("buckets")
        if buckets is not MISSING:
            if not isinstance(buckets, list) or not all(
                isinstance(b, int | float) and not isinstance(b, bool) for b in buckets
            ):
                t.error("buckets", f"expected an array of numbers of seconds, got {show(buckets)}")
            else:
                options["buckets"] = [float(b) for b in buckets]
    if len(errors) > before:
        return None
    try:
        import_subscriber(kind)
    except ImportError as exc:
        t.error("type", f"{kind} needs an optional dependency: {exc}")
        return None
    return SubscriberPlan(kind, options, label)


def _level_map(t: Table) -> dict[Any, Any]:
    """``level_map`` keys are event kind or outcome labels; values, level names or numbers."""
    out: dict[Any, Any] = {}
    kinds = {k.value: k for k in EventKind} | {o.value: o for o in OutcomeKind}
    names = logging.getLevelNamesMapping()
    for key, level in t.data.items():
        target = kinds.get(key)
        if target is None:
            close = difflib.get_close_matches(key, list(kinds), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            t.error(key, f"expected an event kind or outcome label, like attempt_failed{hint}")
            continue
        if isinstance(level, str) and level.upper() in names:
            out[target] = level.upper()
        elif isinstance(level, int) and not isinstance(level, bool) and level >= 0:
            out[target] = level
        else:
            t.error(key, f'expected a logging level like "INFO" or "ERROR", got {show(level)}')
    return out


def import_subscriber(kind: str) -> type[Any]:
    """The subscriber class for ``kind``, imported only now (its extra may be missing)."""
    if kind == "prometheus":
        from ..contrib.prometheus import PrometheusSubscriber

        return PrometheusSubscriber
    from .. import subscribers

    return subscribers.JsonLinesSubscriber if kind == "jsonl" else subscribers.LogSubscriber


# ---------------------------------------------------------------------- the file


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8765"``, ``"[::1]:0"``, ``"localhost:80"`` → ``(host, port)``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT, like 127.0.0.1:8765")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("expected [IPV6]:PORT, like [::1]:8765")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("expected an IPv6 address in brackets, like [::1]:8765")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("expected a port from 0 to 65535 after the colon")
    return host, int(port_text)


def _status(errors: list[str], file: str, data: dict[str, Any]) -> tuple[str, int] | None:
    t = top_table(errors, file, data, "status")
    if t is None:
        return None
    t.only(STATUS_KEYS)
    listen = DEFAULT_LISTEN
    if t.has("listen"):
        value = t.string("listen", 'HOST:PORT, like "127.0.0.1:8765"')
        if value is MISSING:
            return None
        listen = value
    try:
        address = parse_listen(listen)
    except ValueError as exc:
        t.error("listen", f"{exc}, got {show(listen)}")
        return None
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        t.error("listen", "the status page needs aiohttp: pip install 'taskvisor[status]'")
        return None
    return address


def load(path: str | os.PathLike[str]) -> Plan:
    """Read and check the file at ``path``; raise ``FileErrors`` listing every problem."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise FileErrors([f"{file}: cannot read it: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise FileErrors([f"{file}: not valid TOML: {exc}"]) from None
    base = Path(file).resolve().parent
    for directory in (os.getcwd(), str(base)):  # `python -m` puts the cwd first too
        if directory not in sys.path:
            sys.path.insert(0, directory)
    errors: list[str] = []
    warnings: list[str] = []
    top = Table(errors, file, data)
    top.only(TOP_KEYS)

    config = SupervisorConfig()
    sup = top_table(errors, file, data, "supervisor")
    if sup is not None:
        sup.only(SUPERVISOR_KEYS, {"stop_after": "it belongs in [run]"})
        kwargs = {}
        for key in ("grace", "subscriber_shutdown_timeout"):
            v = sup.number(key)
            if v is not MISSING:
                kwargs[key] = v
        mc = sup.integer("max_concurrent", minimum=1)
        if mc is not MISSING:
            kwargs["max_concurrent"] = mc
        config = SupervisorConfig(**kwargs)

    stop_after = None
    run = top_table(errors, file, data, "run")
    if run is not None:
        run.only(RUN_KEYS)
        v = run.number("stop_after", positive=True)
        if v is not MISSING:
            stop_after = v

    defaults = TaskDefaults()
    default_backoff: dict[str, Any] = {}
    d = top_table(errors, file, data, "defaults")
    if d is not None:
        d.only(DEFAULT_KEYS)
        kwargs = {}
        restart = restart_policy(d, False)
        if restart is not MISSING:
            kwargs["restart"] = restart
        backoff = backoff_policy(d, {})
        if backoff is not MISSING:
            kwargs["backoff"] = backoff
            default_backoff = backoff_fields(d)
        timeout = timeout_value(d)
        if timeout is not MISSING:
            kwargs["timeout"] = timeout
        retries = max_retries_value(d)
        if retries is not MISSING:
            kwargs["max_retries"] = retries
        defaults = TaskDefaults(**kwargs)

    specs: list[TaskSpec] = []
    names: dict[str, int] = {}
    tasks = array_of_tables(errors, file, data, "task")
    if not tasks and "task" not in data:
        errors.append(
            f"{file}: task: expected at least one [[task]] table, with a name and a command or call"
        )
    for i, item in enumerate(tasks, 1):
        spec = read_task(errors, file, base, i, item, defaults, default_backoff, names, warnings)
        if spec is not None:
            specs.append(spec)

    subs: list[SubscriberPlan] = []
    for i, item in enumerate(array_of_tables(errors, file, data, "subscriber"), 1):
        sub_plan = _subscriber(errors, file, base, i, item)
        if sub_plan is not None:
            subs.append(sub_plan)

    status = _status(errors, file, data)
    if errors:
        raise FileErrors(errors)
    return Plan(Path(file), config, defaults, specs, subs, status, stop_after, warnings)
