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
from .._spec import TaskDefaults
from ._pending import NOT_APPLIED, read_groups, read_intensity, read_pending
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
    TaskPlan,
    backoff_fields,
    backoff_policy,
    max_retries_value,
    read_task,
    restart_policy,
    timeout_value,
)

__all__ = [
    "FileErrors",
    "Plan",
    "SubscriberPlan",
    "TaskPlan",
    "control_socket",
    "import_subscriber",
    "load",
    "parse_listen",
    "read_toml",
]

SUBSCRIBER_TYPES = ("log", "jsonl", "prometheus")
TOP_KEYS = ("control", "defaults", "group", "run", "status", "subscriber", "supervisor", "task")
CONTROL_KEYS = ("socket",)
RUN_WIDE = ("control", "group", "run", "status", "subscriber", "supervisor")
"""Tables a reload cannot apply to a running supervisor (it says so)."""
SOCKET_MAX = 107
"""Longest Unix socket path Linux accepts (``sun_path`` less its final NUL)."""
SUPERVISOR_KEYS = ("grace", "intensity", "max_concurrent", "subscriber_shutdown_timeout")
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
    tasks: list[TaskPlan]
    subscribers: list[SubscriberPlan] = field(default_factory=list)
    status: tuple[str, int] | None = None
    stop_after: float | None = None
    warnings: list[str] = field(default_factory=list)
    socket: str = ""
    """The control socket's path (``[control] socket``, or the file's with ``.sock``)."""
    run_wide: dict[str, Any] = field(default_factory=dict)
    """The run-wide tables as written, to tell a reload what it cannot change."""
    intensity: tuple[int, float] | None = None
    """``[supervisor] intensity``, checked; not applied yet (``_pending.py``)."""
    groups: list[dict[str, Any]] = field(default_factory=list)
    """``[[group]]`` tables, checked; not applied yet (``_pending.py``)."""


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


def read_toml(file: str) -> dict[str, Any]:
    """The file's TOML as a dict; ``FileErrors`` with one line saying why it cannot be read."""
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise FileErrors([f"{file}: cannot read it: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise FileErrors(
            [
                f"{file}: not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} "
                "cannot be decoded; TOML files must be saved as UTF-8"
            ]
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FileErrors([f"{file}: not valid TOML: {exc}"]) from None


def control_socket(errors: list[str], file: str, base: Path, data: dict[str, Any]) -> str:
    """The control socket path: ``[control] socket``, or the file's path ending ``.sock``.

    A relative ``socket`` is relative to the file's directory.
    """
    t = top_table(errors, file, data, "control")
    path = str(Path(file).resolve().with_suffix(".sock"))
    where = f"{file}: control: socket"
    if t is not None:
        t.only(CONTROL_KEYS)
        value = t.string("socket", "a file path")
        if value is not MISSING:
            path = resolve_path(base, value)
            where = f"{file}: [control]: socket"
    if len(os.fsencode(path)) > SOCKET_MAX:
        errors.append(
            f"{where}: {path} is {len(os.fsencode(path))} bytes long; a Unix socket path may "
            f'have at most {SOCKET_MAX}: set a shorter one with [control] socket = "…"'
        )
    return path


def _check_after(errors: list[str], file: str, tasks: list[TaskPlan]) -> None:
    """Every ``after`` name exists, and no chain of them comes back to where it started."""
    by_name = {task.name: task for task in tasks}
    ok = True
    for task in tasks:
        for dep in task.after:
            if dep not in by_name:
                close = difflib.get_close_matches(dep, list(by_name), n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                errors.append(
                    f'{file}: task "{task.name}" (#{task.index}): after: expected names of '
                    f'tasks in this file, got unknown "{dep}"{hint}'
                )
                ok = False
    if not ok:
        return
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in tasks:
        if state.get(root.name):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root.name, 0)]
        while stack:
            name, i = stack.pop()
            deps = by_name[name].after
            if i == 0:
                state[name] = 1
                path.append(name)
            if i < len(deps):
                stack.append((name, i + 1))
                dep = deps[i]
                if state.get(dep) == 1:
                    cycle = [*path[path.index(dep) :], dep]
                    first = by_name[cycle[0]]
                    errors.append(
                        f'{file}: task "{first.name}" (#{first.index}): after: a cycle: '
                        + " -> ".join(cycle)
                        + "; expected tasks that can start one after another"
                    )
                    return
                if not state.get(dep):
                    stack.append((dep, 0))
            else:
                state[name] = 2
                path.pop()


def load(path: str | os.PathLike[str]) -> Plan:
    """Read and check the file at ``path``; raise ``FileErrors`` listing every problem."""
    file = os.fspath(path)
    data = read_toml(file)
    base = Path(file).resolve().parent
    for directory in (os.getcwd(), str(base)):  # `python -m` puts the cwd first too
        if directory not in sys.path:
            sys.path.insert(0, directory)
    errors: list[str] = []
    warnings: list[str] = []
    top = Table(errors, file, data)
    top.only(TOP_KEYS)

    # The command narrates on the terminal itself (``_narrate.py``): no default log beside it.
    config = SupervisorConfig(log=False)
    intensity: Any = MISSING
    default_pending: dict[str, Any] = {}
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
        config = SupervisorConfig(log=False, **kwargs)
        intensity = read_intensity(sup)

    stop_after = None
    run = top_table(errors, file, data, "run")
    if run is not None:
        run.only(RUN_KEYS)
        v = run.number("stop_after", positive=True)
        if v is not MISSING:
            stop_after = v

    defaults = TaskDefaults()
    default_backoff: dict[str, Any] = {}
    defaults_raw = data.get("defaults")
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
        default_pending = read_pending(d, interval=defaults.restart.interval is not None)

    tasks_plan: list[TaskPlan] = []
    names: dict[str, int] = {}
    tasks = array_of_tables(errors, file, data, "task")
    if not tasks and "task" not in data:
        errors.append(
            f"{file}: task: expected at least one [[task]] table, with a name and a command or call"
        )
    for i, item in enumerate(tasks, 1):
        task = read_task(
            errors,
            file,
            base,
            i,
            item,
            defaults,
            default_backoff,
            names,
            warnings,
            defaults_raw if isinstance(defaults_raw, dict) else None,
            default_pending,
        )
        if task is not None:
            tasks_plan.append(task)
    if not errors:
        _check_after(errors, file, tasks_plan)
    groups = read_groups(errors, file, data, {task.name for task in tasks_plan})
    for task in tasks_plan:
        unapplied = sorted(set(task.pending) & NOT_APPLIED)
        if unapplied:
            keys = ", ".join(unapplied)
            warnings.append(
                f'{file}: task "{task.name}" (#{task.index}): {keys}: checked, but not applied '
                "by this version of taskvisor"
            )
    if intensity is not MISSING:
        warnings.append(f"{file}: [supervisor]: intensity: checked, but not applied yet")
    if groups:
        warnings.append(f"{file}: group: [[group]] tables are checked, but not applied yet")

    subs: list[SubscriberPlan] = []
    for i, item in enumerate(array_of_tables(errors, file, data, "subscriber"), 1):
        sub_plan = _subscriber(errors, file, base, i, item)
        if sub_plan is not None:
            subs.append(sub_plan)

    status = _status(errors, file, data)
    socket = control_socket(errors, file, base, data)
    if errors:
        raise FileErrors(errors)
    run_wide = {key: data[key] for key in RUN_WIDE if key in data}
    return Plan(
        Path(file),
        config,
        defaults,
        tasks_plan,
        subs,
        status,
        stop_after,
        warnings,
        socket,
        run_wide,
        None if intensity is MISSING else intensity,
        groups,
    )
