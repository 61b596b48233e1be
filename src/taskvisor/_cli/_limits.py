"""``limits = { memory = "512M", cpu = 1.5, nofile = 4096, nproc = 256 }`` of a command task.

Two ways to enforce them, chosen once per run (``detect``):

- **cgroup v2**, where the host lets us: the unified hierarchy is mounted at
  ``/sys/fs/cgroup``, our own cgroup is writable, and it offers the ``memory``/``cpu``/``pids``
  controllers. Each task gets a child group ``taskvisor-<pid>/<task>`` with ``memory.max``
  (and ``memory.swap.max = 0``), ``cpu.max`` and ``pids.max``; the program joins it between
  ``fork`` and ``exec``. The kernel kills a program past ``memory.max`` (exit code -9).
- **setrlimit** otherwise, in the child before ``exec``: ``memory`` as ``RLIMIT_AS`` (the
  address space: allocations past it fail, so a program usually exits with an error;
  runtimes that reserve much more than they use — Go, Java — need a generous figure),
  ``nproc`` as ``RLIMIT_NPROC`` (counted per user, and ignored for root), and no ``cpu``: no
  rlimit limits a rate (``RLIMIT_CPU`` is a total of seconds), so it is not applied and
  ``check`` says so.

``nofile`` is always ``RLIMIT_NOFILE`` (cgroups have no such limit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._table import MISSING, Table, show

__all__ = ["CgroupSupport", "Limits", "detect", "read_limits"]

log = logging.getLogger("taskvisor.cli")

LIMIT_KEYS = ("cpu", "memory", "nofile", "nproc")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
CPU_PERIOD = 100_000
"""``cpu.max`` period in microseconds."""


def parse_size(value: object) -> int:
    """``"512M"``, ``"1.5G"``, ``"64KiB"``, ``1048576`` → bytes (units are powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("expected a size > 0")
        return value
    if not isinstance(value, str):
        raise ValueError('expected a size like "512M", "2G" or a number of bytes')
    m = _SIZE.match(value)
    if m is None:
        raise ValueError('expected a size like "512M", "2G" or a number of bytes')
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size <= 0:
        raise ValueError("expected a size > 0")
    return size


def show_size(size: int) -> str:
    """Bytes for people: ``512M``, ``1.5G``, ``100000``."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit]
        if size >= scale and (size * 10) % scale == 0:
            return f"{size / scale:g}{unit}"
    return str(size)


@dataclass(frozen=True)
class Limits:
    """A task's limits, checked; ``None``: not limited."""

    memory: int | None = None
    cpu: float | None = None
    nofile: int | None = None
    nproc: int | None = None


def read_limits(parent: Table) -> Any:
    """The ``limits`` table of a task as ``Limits``; ``MISSING`` if absent or bad."""
    t = parent.sub("limits")
    if t is None:
        return MISSING
    t.only(LIMIT_KEYS)
    before = len(t.errors)
    memory = None
    if t.has("memory"):
        try:
            memory = parse_size(t.raw("memory"))
        except ValueError as exc:
            t.error("memory", f"{exc}, got {show(t.raw('memory'))}")
    cpu = t.number("cpu", positive=True, what="CPUs")
    nofile = t.integer("nofile", minimum=1)
    nproc = t.integer("nproc", minimum=1)
    if len(t.errors) > before:
        return MISSING
    return Limits(
        memory,
        None if cpu is MISSING else cpu,
        None if nofile is MISSING else nofile,
        None if nproc is MISSING else nproc,
    )


# ---------------------------------------------------------------------- enforcement


@dataclass(frozen=True)
class CgroupSupport:
    """Where child groups can be made (``None`` ``base``: they cannot), and why not."""

    base: Path | None
    controllers: frozenset[str]
    why_not: str

    def describe(self, limits: Limits) -> list[str]:
        """What applies for ``limits``, one phrase per limit (for ``check`` and the log)."""
        out: list[str] = []
        cgroup = self.base is not None
        if limits.memory is not None:
            out.append(
                f"memory {show_size(limits.memory)} as "
                + ("cgroup memory.max" if cgroup else "RLIMIT_AS (address space)")
            )
        if limits.cpu is not None:
            out.append(
                f"cpu {limits.cpu:g} as cgroup cpu.max"
                if cgroup
                else f"cpu {limits.cpu:g}: NOT applied (no rlimit limits a rate; needs cgroup v2)"
            )
        if limits.nofile is not None:
            out.append(f"nofile {limits.nofile} as RLIMIT_NOFILE")
        if limits.nproc is not None:
            out.append(
                f"nproc {limits.nproc} as "
                + ("cgroup pids.max" if cgroup else "RLIMIT_NPROC (per user; root is exempt)")
            )
        return out

    def mechanism(self) -> str:
        """``cgroup v2 (PATH)`` or ``setrlimit (why cgroups are not used)``."""
        if self.base is not None:
            return f"cgroup v2 under {self.base}"
        return f"setrlimit ({self.why_not})"


def detect(
    root: str | os.PathLike[str] = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup"
) -> CgroupSupport:
    """Whether this process may make cgroup v2 child groups with the controllers we use."""
    root_path = Path(root)
    controllers_file = root_path / "cgroup.controllers"
    if not controllers_file.is_file():
        return CgroupSupport(None, frozenset(), "no cgroup v2 hierarchy at " + str(root_path))
    try:
        with open(self_cgroup) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        return CgroupSupport(None, frozenset(), f"cannot read {self_cgroup}: {exc.strerror}")
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is None:
        return CgroupSupport(None, frozenset(), "this process is in no cgroup v2 group")
    base = root_path / own.lstrip("/")
    try:
        available = frozenset((base / "cgroup.controllers").read_text().split())
        enabled = frozenset((base / "cgroup.subtree_control").read_text().split())
    except OSError as exc:
        return CgroupSupport(None, frozenset(), f"cannot read {base}: {exc.strerror}")
    wanted = frozenset({"memory", "cpu", "pids"}) & available
    if "memory" not in wanted:
        return CgroupSupport(None, frozenset(), f"the memory controller is not offered in {base}")
    if not os.access(base, os.W_OK):
        return CgroupSupport(None, frozenset(), f"{base} is not writable")
    if not wanted <= enabled and base != root_path:
        # Enabling controllers below a group that holds processes (ours) is refused by the
        # kernel ("no internal processes"); only a delegated, already enabled group works.
        missing = " ".join(sorted(wanted - enabled))
        return CgroupSupport(
            None,
            frozenset(),
            f"controllers {missing} are not enabled in {base}/cgroup.subtree_control",
        )
    return CgroupSupport(base, wanted, "")


class Enforcer:
    """Applies limits to one run's programs; child groups are made on demand, removed at the end."""

    def __init__(self, support: CgroupSupport) -> None:
        self.support = support
        self._top: Path | None = None
        self._groups: dict[str, Path] = {}

    def preexec(self, task: str, limits: Limits) -> Callable[[], None] | None:
        """The function the child runs before ``exec`` to take on ``limits``."""
        rlimits: list[tuple[int, int]] = []
        procs: str | None = None
        if self.support.base is not None:
            try:
                procs = str(self._group(task, limits) / "cgroup.procs")
            except OSError as exc:
                log.warning(
                    "task %r: cannot make its cgroup (%s); using setrlimit instead",
                    task,
                    exc.strerror or exc,
                )
        if procs is None:
            if limits.memory is not None:
                rlimits.append((resource.RLIMIT_AS, limits.memory))
            if limits.nproc is not None:
                rlimits.append((resource.RLIMIT_NPROC, limits.nproc))
        if limits.nofile is not None:
            rlimits.append((resource.RLIMIT_NOFILE, limits.nofile))
        if procs is None and not rlimits:
            return None
        setrlimit = resource.setrlimit
        open_, write, close = os.open, os.write, os.close

        def child() -> None:  # runs after fork: no locks, no logging, nothing imported
            if procs is not None:
                fd = open_(procs, os.O_WRONLY)
                try:
                    write(fd, b"0")
                finally:
                    close(fd)
            for which, value in rlimits:
                setrlimit(which, (value, value))

        return child

    def _group(self, task: str, limits: Limits) -> Path:
        base = self.support.base
        assert base is not None
        if self._top is None:
            top = base / f"taskvisor-{os.getpid()}"
            top.mkdir(exist_ok=True)
            controls = " ".join(f"+{c}" for c in sorted(self.support.controllers))
            (top / "cgroup.subtree_control").write_text(controls)
            self._top = top
        group = self._groups.get(task)
        if group is None:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", task) or "_"
            group = self._top / safe
            group.mkdir(exist_ok=True)
            self._groups[task] = group
        if limits.memory is not None:
            (group / "memory.max").write_text(str(limits.memory))
            swap = group / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
        if limits.cpu is not None and "cpu" in self.support.controllers:
            (group / "cpu.max").write_text(f"{int(limits.cpu * CPU_PERIOD)} {CPU_PERIOD}")
        if limits.nproc is not None and "pids" in self.support.controllers:
            (group / "pids.max").write_text(str(limits.nproc))
        return group

    def close(self) -> None:
        """Remove the child groups (empty once their programs are gone)."""
        for group in self._groups.values():
            with contextlib.suppress(OSError):
                group.rmdir()
        self._groups.clear()
        if self._top is not None:
            with contextlib.suppress(OSError):
                self._top.rmdir()
            self._top = None
