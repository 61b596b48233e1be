"""The benchmark harness: cases next to their baselines, interleaved, in one process.

Run everything with ``python -m benchmarks`` (or ``make bench``). Options: ``--quick`` for a
short run (a tenth of the operations, 3 rounds), ``--rounds N``, ``--json PATH`` to write
the results, ``--check`` to exit 1 when a goal is missed, and names to select modules or
cases (``python -m benchmarks fanout`` runs the cases whose ``module:case`` contains
"fanout").

Adding a module: create ``benchmarks/bench_<topic>.py`` with a module-level list
``CASES: list[Case]``. It is discovered by name; nothing else to register::

    from benchmarks.harness import Case, Goal

    async def plain(n: int) -> float:
        ...                              # set up, untimed
        t0 = time.perf_counter()
        ...                              # n operations
        return time.perf_counter() - t0  # seconds for the n operations

    CASES = [
        Case("plain", plain, ops=10_000, unit="call"),
        Case("ours", ours, ops=10_000, unit="call", baseline="plain", goal=Goal(max_ratio=1.3)),
    ]

A case's ``run(n)`` does ``n`` operations and returns the seconds they took: it times
itself, so setup and teardown stay out of the figure. It may be ``async def`` (run on the
harness's event loop, one loop per module) or a plain function. ``baseline`` names another
case of the same module; the table shows ``median / baseline median``.

How it measures: every case of a module first runs once untimed (warm-up), then ``rounds``
rounds follow; each round runs every case once, in an order rotated by one per round, so
cases and their baselines share the machine's state (CPU frequency, other load) as evenly
as possible. ``gc.collect()`` runs before each sample. Each row reports the median, min and
max per-operation cost over the rounds, the ratio of medians to the baseline, and the goal:
``Goal(max_ratio=...)`` against the baseline and/or ``Goal(max_per_op=...)`` in seconds.
Figures from a loaded machine are noisy: compare ratios from one run, not absolute figures
across runs.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import json
import os
import pkgutil
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

RunFn = Callable[[int], Awaitable[float]] | Callable[[int], float]
"""``run(n)``: do ``n`` operations, return the seconds they took."""

FULL_ROUNDS = 7
QUICK_ROUNDS = 3
QUICK_SCALE = 10
"""``--quick`` divides every case's ``ops`` by this."""


@dataclass(frozen=True, slots=True)
class Goal:
    """What a case must achieve: a ratio to its baseline and/or a per-operation cost."""

    max_ratio: float | None = None
    """Median per-op cost at most this multiple of the baseline's median."""
    max_per_op: float | None = None
    """Median per-op cost at most this many seconds."""

    def describe(self) -> str:
        parts = []
        if self.max_ratio is not None:
            parts.append(f"≤{self.max_ratio:.2f}×")
        if self.max_per_op is not None:
            parts.append(f"≤{format_seconds(self.max_per_op)}")
        return " ".join(parts)

    def met(self, per_op: float, ratio: float | None) -> bool:
        if self.max_per_op is not None and per_op > self.max_per_op:
            return False
        return not (self.max_ratio is not None and (ratio is None or ratio > self.max_ratio))


@dataclass(frozen=True, slots=True)
class Case:
    """One measured thing: ``run(n)`` does ``n`` operations and returns the seconds taken."""

    name: str
    run: RunFn
    ops: int
    """Operations per sample in a full run (``--quick`` uses a tenth)."""
    unit: str = "op"
    """What one operation is, for the table ("event", "task", ...)."""
    baseline: str | None = None
    """The name of the case (same module) this one is compared with."""
    goal: Goal | None = None
    metric: str = "seconds"
    """What ``run(n)`` returns for the ``n`` operations: "seconds" (default) or "bytes"
    (memory cases, e.g. tracemalloc growth); ``Goal.max_per_op`` is in the same unit."""


@dataclass(slots=True)
class Result:
    """The samples of one case (seconds per operation) and what they mean."""

    module: str
    case: str
    unit: str
    ops: int
    baseline: str | None
    metric: str = "seconds"
    samples: list[float] = field(default_factory=list)
    ratio: float | None = None
    goal: str | None = None
    ok: bool | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def label(self) -> str:
        return f"{self.module}:{self.case}"


def format_bytes(b: float) -> str:
    """A size in bytes, KiB or MiB."""
    if abs(b) < 10 * 1024:
        return f"{b:.0f} B"
    if abs(b) < 10 * 1024 * 1024:
        return f"{b / 1024:.1f} KiB"
    return f"{b / (1024 * 1024):.1f} MiB"


def format_value(value: float, metric: str) -> str:
    """A per-operation figure in its metric's unit."""
    return format_bytes(value) if metric == "bytes" else format_seconds(value)


def format_seconds(s: float) -> str:
    """A duration with a unit that keeps 3 significant digits readable."""
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.2f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def discover() -> list[ModuleType]:
    """Import every ``benchmarks/bench_*.py`` module, sorted by name."""
    package = Path(__file__).parent
    names = sorted(
        info.name for info in pkgutil.iter_modules([str(package)]) if info.name.startswith("bench_")
    )
    return [importlib.import_module(f"benchmarks.{name}") for name in names]


def module_cases(module: ModuleType) -> list[Case] | None:
    """The module's ``CASES``, checked; ``None`` if it has none (not on the harness yet)."""
    cases = getattr(module, "CASES", None)
    if cases is None:
        return None
    if not isinstance(cases, list) or not all(isinstance(c, Case) for c in cases):
        raise TypeError(f"{module.__name__}.CASES must be a list of benchmarks.harness.Case")
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"{module.__name__}: case names must be unique, got {names}")
    for c in cases:
        if c.baseline is not None and c.baseline not in names:
            raise ValueError(f"{module.__name__}:{c.name}: unknown baseline {c.baseline!r}")
        if c.ops < 1:
            raise ValueError(f"{module.__name__}:{c.name}: ops must be >= 1")
    return cases


async def _sample(case: Case, n: int) -> float:
    gc.collect()
    result = case.run(n)
    if inspect.isawaitable(result):
        result = await result
    value = float(result)
    if not value > 0:
        raise ValueError(f"{case.name}: run({n}) returned {value!r}, not a positive {case.metric}")
    return value / n


async def measure(
    module: str, cases: Sequence[Case], *, rounds: int, scale: int = 1
) -> list[Result]:
    """Warm up, then run ``rounds`` interleaved rounds of every case; per-op samples."""
    results = [
        Result(module, c.name, c.unit, max(1, c.ops // scale), c.baseline, c.metric) for c in cases
    ]
    for c, r in zip(cases, results, strict=True):
        await _sample(c, max(1, r.ops // 10))  # warm-up: imports, caches, code paths
    for i in range(rounds):
        order = list(range(len(cases)))
        order = order[i % len(order) :] + order[: i % len(order)]
        for j in order:
            results[j].samples.append(await _sample(cases[j], results[j].ops))
    by_name = {r.case: r for r in results}
    for c, r in zip(cases, results, strict=True):
        if c.baseline is not None:
            r.ratio = r.median / by_name[c.baseline].median
        if c.goal is not None:
            r.goal = c.goal.describe()
            r.ok = c.goal.met(r.median, r.ratio)
    return results


def table(results: Sequence[Result]) -> str:
    """An aligned plain-text table: per-op median, min, max, ratio to baseline, goal."""
    header = ("case", "unit", "ops", "median", "min", "max", "vs baseline", "goal", "status")
    rows = [header]
    for r in results:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}× {r.baseline}"
        status = "" if r.ok is None else ("ok" if r.ok else "MISSED")
        rows.append(
            (
                r.label,
                r.unit,
                f"{r.ops:,}",
                format_value(r.median, r.metric),
                format_value(min(r.samples), r.metric),
                format_value(max(r.samples), r.metric),
                ratio,
                r.goal or "",
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {2, 3, 4, 5}
    lines = []
    for k, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def metadata(*, quick: bool, rounds: int) -> dict[str, Any]:
    """Where and how the figures were taken."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "quick": quick,
        "rounds": rounds,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: Path, results: Sequence[Result], meta: dict[str, Any]) -> None:
    """Write the results (seconds per operation) and their metadata as JSON."""
    rows = []
    for r in results:
        row = asdict(r)
        row.update(median=r.median, min=min(r.samples), max=max(r.samples))
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


def selected(module: str, cases: list[Case], patterns: Sequence[str]) -> list[Case]:
    """The cases matching any pattern, plus the baselines they need."""
    if not patterns:
        return cases
    short = module.removeprefix("bench_")
    keep = {c.name for c in cases if any(p in f"{short}:{c.name}" for p in patterns)}
    keep |= {c.baseline for c in cases if c.name in keep and c.baseline is not None}
    return [c for c in cases if c.name in keep]


def run_all(
    patterns: Sequence[str] = (), *, quick: bool = False, rounds: int | None = None
) -> list[Result]:
    """Discover, select and measure; print each module's table as it completes."""
    rounds = rounds if rounds is not None else (QUICK_ROUNDS if quick else FULL_ROUNDS)
    scale = QUICK_SCALE if quick else 1
    everything: list[Result] = []
    for module in discover():
        name = module.__name__.rsplit(".", 1)[-1]
        cases = module_cases(module)
        if cases is None:
            if not patterns:
                print(f"{name}: skipped (no CASES list; see benchmarks/harness.py)\n")
            continue
        cases = selected(name, cases, patterns)
        if not cases:
            continue
        results = asyncio.run(
            measure(name.removeprefix("bench_"), cases, rounds=rounds, scale=scale)
        )
        print(table(results), end="\n\n", flush=True)
        everything.extend(results)
    return everything
