"""Keys of SPEC §10 and §13: read and checked here, applied by ``TaskPlan.spec``.

Each error names the file, the task, the key and what was expected; the values become a
mapping of ``TaskSpec`` keywords (``TaskPlan.pending``). The §13 keys (``reset_after``,
``retry_on``, ``fixed_rate``, ``jitter``, ``first_delay``, ``cron``, ``tz``) are applied; those
in ``NOT_APPLIED`` (§10: readiness and heartbeats, intensity, groups) are checked, and ``run``
warns that this version does not apply them yet.

Keys (``[[task]]`` and ``[defaults]``): ``ready_timeout``, ``heartbeat`` (seconds, 0 = none),
``reset_after`` (seconds > 0), ``retry_on`` (exception names: a builtin like
``"ConnectionError"`` or ``"package.module.Error"``), ``fixed_rate`` (bool), ``jitter``,
``first_delay`` (seconds), ``cron`` (five fields), ``tz`` (a zone name). ``[supervisor]
intensity = { max_restarts, within }``. ``[[group]]``: ``name``, ``children`` (task names),
``strategy``, ``intensity``, ``auto_shutdown``.
"""

from __future__ import annotations

import builtins
import importlib
import json
from typing import Any

from ._table import MISSING, Table, array_of_tables, show

__all__ = [
    "GROUP_KEYS",
    "NOT_APPLIED",
    "PENDING_KEYS",
    "read_groups",
    "read_intensity",
    "read_pending",
]

PENDING_KEYS = (
    "cron",
    "first_delay",
    "fixed_rate",
    "heartbeat",
    "jitter",
    "ready_timeout",
    "reset_after",
    "retry_on",
    "tz",
)
NOT_APPLIED = frozenset({"ready_timeout", "heartbeat"})
"""Pending keys the core does not take yet (SPEC §10)."""
GROUP_KEYS = ("auto_shutdown", "children", "intensity", "name", "strategy")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
AUTO_SHUTDOWN = ("all_done", "any_done")
_CRON_CHARS = frozenset("0123456789*/,-?LW#abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _exception(name: str) -> type[BaseException] | str:
    """The exception class ``name`` names, or why it names none."""
    if "." not in name:
        found = getattr(builtins, name, None)
        if isinstance(found, type) and issubclass(found, Exception):
            return found
        return f"{json.dumps(name)} is not a built-in exception"
    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return f"cannot import {module_name!r} for {json.dumps(name)}: {exc}"
    found = getattr(module, attr, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return f"{json.dumps(name)} is not an exception class"


def _cron(t: Table) -> Any:
    value = t.raw("cron")
    if value is MISSING:
        return MISSING
    expected = 'five fields "minute hour day-of-month month day-of-week", like "*/5 * * * *"'
    if not isinstance(value, str):
        t.error("cron", f"expected {expected}, got {show(value)}")
        return MISSING
    fields = value.split()
    if len(fields) != 5 or not all(set(f) <= _CRON_CHARS for f in fields):
        t.error("cron", f"expected {expected}, got {show(value)}")
        return MISSING
    return value


def read_pending(t: Table, *, interval: bool) -> dict[str, Any]:
    """The §10/§13 keys of a ``[[task]]`` or ``[defaults]`` table, checked, as spec keywords.

    ``interval``: whether the task runs again after a success (``restart = "always"`` with an
    ``interval``), which ``fixed_rate`` and ``jitter`` need.
    """
    out: dict[str, Any] = {}
    for key in ("ready_timeout", "heartbeat"):
        v = t.number(key)
        if v is not MISSING:
            out[key] = None if v == 0 else v
    v = t.number("reset_after", positive=True)
    if v is not MISSING:
        out["reset_after"] = v
    retry_on = t.raw("retry_on")
    if retry_on is not MISSING:
        if not isinstance(retry_on, list) or not all(isinstance(n, str) and n for n in retry_on):
            t.error(
                "retry_on",
                'expected an array of exception names, like ["ConnectionError"], '
                f"got {show(retry_on)}",
            )
        else:
            classes = []
            for name in retry_on:
                found = _exception(name)
                if isinstance(found, str):
                    t.error("retry_on", f"expected exception names: {found}")
                else:
                    classes.append(found)
            if len(classes) == len(retry_on):
                out["retry_on"] = tuple(classes)
    fixed = t.boolean("fixed_rate")
    jitter = t.number("jitter")
    first_delay = t.number("first_delay")
    cron = _cron(t)
    if cron is not MISSING:
        out["cron"] = cron
        if interval:
            t.error("cron", "expected either cron or an interval, not both")
    tz = t.string("tz", 'a time zone name, like "Europe/Paris"')
    if tz is not MISSING:
        if not t.has("cron"):
            t.error("tz", "only valid with cron")
        else:
            try:
                import zoneinfo

                zoneinfo.ZoneInfo(tz)
            except (ValueError, zoneinfo.ZoneInfoNotFoundError):
                t.error("tz", f'expected a time zone name, like "Europe/Paris", got {show(tz)}')
            else:
                out["tz"] = tz
    for key, value in (("fixed_rate", fixed), ("jitter", jitter)):
        if value is MISSING:
            continue
        if not interval:
            t.error(key, 'only valid with restart = "always" and an interval')
        else:
            out[key] = value
    if first_delay is not MISSING:
        if not interval and cron is MISSING:
            t.error("first_delay", 'only valid with restart = "always" and an interval, or cron')
        else:
            out["first_delay"] = first_delay
    return out


def read_intensity(parent: Table, key: str = "intensity") -> Any:
    """``intensity = { max_restarts = 3, within = 5.0 }`` as ``(max_restarts, within)``."""
    t = parent.sub(key)
    if t is None:
        return MISSING
    t.only(("max_restarts", "within"))
    before = len(t.errors)
    for needed in ("max_restarts", "within"):
        if not t.has(needed):
            t.error(needed, "required")
    restarts = t.integer("max_restarts", minimum=0)
    within = t.number("within", positive=True)
    if len(t.errors) > before:
        return MISSING
    return (restarts, within)


def read_groups(
    errors: list[str], file: str, data: dict[str, Any], tasks: set[str]
) -> list[dict[str, Any]]:
    """Every ``[[group]]``, checked against the file's task names."""
    groups: list[dict[str, Any]] = []
    owner: dict[str, str] = {}
    names: set[str] = set()
    for i, item in enumerate(array_of_tables(errors, file, data, "group"), 1):
        raw_name = item.get("name")
        label = (
            f"group {json.dumps(raw_name)} (#{i})" if isinstance(raw_name, str) else f"group #{i}"
        )
        t = Table(errors, f"{file}: {label}", item)
        before = len(errors)
        t.only(GROUP_KEYS)
        if not t.has("name"):
            t.error("name", "required; expected a non-empty string")
        name = t.string("name")
        if name is not MISSING:
            if "/" in name:
                t.error("name", f"expected a name without '/', got {show(name)}")
            elif name in tasks or name in names:
                t.error("name", f"expected a name no task or group has, got {show(name)}")
            names.add(name)
        children = t.raw("children")
        if (
            children is MISSING
            or not isinstance(children, list)
            or not children
            or not all(isinstance(c, str) for c in children)
        ):
            got = "nothing" if children is MISSING else show(children)
            t.error(
                "children",
                f'expected a non-empty array of task names, like ["db", "web"], got {got}',
            )
        else:
            for child in children:
                if child not in tasks:
                    t.error(
                        "children",
                        f"expected names of tasks in this file, got unknown {json.dumps(child)}",
                    )
                elif child in owner:
                    t.error(
                        "children",
                        f"{json.dumps(child)} is already a child of group "
                        + json.dumps(owner[child]),
                    )
                elif name is not MISSING:
                    owner[child] = name
        strategy = t.choice("strategy", STRATEGIES)
        auto = t.choice("auto_shutdown", AUTO_SHUTDOWN)
        intensity = read_intensity(t)
        if len(errors) == before:
            groups.append(
                {
                    "name": name,
                    "children": tuple(children),
                    "strategy": "one_for_one" if strategy is MISSING else strategy,
                    "auto_shutdown": "all_done" if auto is MISSING else auto,
                    "intensity": None if intensity is MISSING else intensity,
                }
            )
    return groups
