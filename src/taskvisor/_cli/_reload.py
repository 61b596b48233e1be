"""What a reload changes: the difference between the running tasks and the file's new ones.

A task is *unchanged* when its table and ``[defaults]`` are as they were (``TaskPlan.
fingerprint``): it is not touched, and its program keeps its PID. Changing ``[defaults]``
therefore restarts every task (each one may inherit from it). The run-wide tables
(``[supervisor]``, ``[run]``, ``[status]``, ``[control]``, ``[[subscriber]]``) cannot change
under a running supervisor: a reload leaves them as they were and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._tasks import TaskPlan

__all__ = ["Diff", "diff"]


@dataclass(frozen=True)
class Diff:
    """The tasks a reload adds, removes, restarts, and leaves alone (names, file order)."""

    added: tuple[TaskPlan, ...]
    removed: tuple[str, ...]
    changed: tuple[TaskPlan, ...]
    unchanged: tuple[str, ...]
    ignored: tuple[str, ...] = ()
    """Run-wide tables that changed in the file but are not applied."""

    def summary(self) -> str:
        """``added a, b; removed c; restarted d; 97 unchanged``."""
        parts = []
        for label, names in (
            ("added", [p.name for p in self.added]),
            ("removed", list(self.removed)),
            ("restarted", [p.name for p in self.changed]),
        ):
            if names:
                parts.append(f"{label} {', '.join(names)}")
        parts.append(f"{len(self.unchanged)} unchanged")
        text = "; ".join(parts)
        if self.ignored:
            tables = ", ".join(self.ignored)
            text += f" ({tables} changed: restart taskvisor to apply)"
        return text


def diff(
    running: Mapping[str, TaskPlan],
    new: Iterable[TaskPlan],
    old_run_wide: Mapping[str, Any],
    new_run_wide: Mapping[str, Any],
) -> Diff:
    """Compare the running tasks (by name) with the file's new list."""
    new_list = list(new)
    names = {plan.name for plan in new_list}
    added: list[TaskPlan] = []
    changed: list[TaskPlan] = []
    unchanged: list[str] = []
    for plan in new_list:
        old = running.get(plan.name)
        if old is None:
            added.append(plan)
        elif old.fingerprint != plan.fingerprint:
            changed.append(plan)
        else:
            unchanged.append(plan.name)
    removed = tuple(name for name in running if name not in names)
    ignored = tuple(
        f"[{key}]" if key != "subscriber" else "[[subscriber]]"
        for key in sorted(set(old_run_wide) | set(new_run_wide))
        if old_run_wide.get(key) != new_run_wide.get(key)
    )
    return Diff(tuple(added), removed, tuple(changed), tuple(unchanged), ignored)
