"""The benchmark harness: cases next to their baselines, interleaved, in one process.

Run everything with ``python -m benchmarks`` (or ``make bench``). Options: ``--quick`` for a
short run (a tenth of the operations, 3 rounds), ``--rounds N``, ``--loop asyncio|uvloop|all``
(default ``all``: every module once per event loop available), ``--json PATH`` to write the
results, ``--compare OLD NEW`` to print the change between two such files, ``--markdown
FILE`` to print one as tables, ``--profile`` to run the named cases once under cProfile,
``--check`` to exit 1 when a goal is missed, and names to select modules or cases
(``python -m benchmarks fanout`` runs the cases whose ``module:case`` contains "fanout").
``docs/performance.md`` describes the cases and the latest full run.

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
itself, so setup and teardown stay out of the figure. It may instead return ``(seconds,
note)``: the note (a short text, e.g. what the run observed besides its time) is shown in a
``note`` column, the one of the sample whose time is the median. ``t0 = start_clock()`` (rather than
``time.perf_counter()``) first collects garbage, so that a collection the setup's objects
made due does not land in the timed part; collections the measured work causes still count.
It may be ``async def`` (run on the harness's event loop, one loop per module and loop kind)
or a plain function. ``baseline``
names another case of the same module; the table shows ``median / baseline median``. A case
that finds the work was not done right (a task left running, a wrong outcome) raises
``CheckFailed``: the case is reported FAILED and the run goes on.

Event loops: every module runs once on the default asyncio loop and once on uvloop (when it
is installed: ``pip install -e '.[bench]'``); ``--loop`` picks one. A ``Goal`` with
``loop="uvloop"`` (or ``"asyncio"``) applies on that loop only.

Goals: ``Goal(max_ratio=...)`` against the case's baseline (or against another case of the
module named by ``against=``), ``Goal(max_per_op=...)`` in the case's metric (seconds or
bytes per operation), ``Goal(max_total=...)`` for the whole sample (printed as a PASS/FAIL
line with the figure). A case may have several goals (``goal=(Goal(...), Goal(...))``).

How it measures: every case of a module first runs once untimed (warm-up), then ``rounds``
rounds follow; each round runs every case once, in an order rotated by one per round, so
cases and their baselines share the machine's state (CPU frequency, other load) as evenly
as possible. ``gc.collect()`` runs before each sample. Each row reports the median, min and
max per-operation cost over the rounds, the ratio of medians to the baseline, and the goals.
Figures from a loaded machine are noisy: compare ratios from one run, not absolute figures
across runs.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

Sample = float | tuple[float, str]
"""What ``run(n)`` returns: the seconds (or bytes) of the ``n`` operations, alone or with a
note about the sample."""
RunFn = Callable[[int], Awaitable[Sample]] | Callable[[int], Sample]
"""``run(n)``: do ``n`` operations, return the seconds they took (and maybe a note)."""

FULL_ROUNDS = 7
QUICK_ROUNDS = 3
QUICK_SCALE = 10
"""``--quick`` divides every case's ``ops`` by this (unless the case sets ``quick_ops``)."""
LOOPS = ("asyncio", "uvloop")
"""The event loops a module can run on: the default asyncio loop, and uvloop."""
NOISE = 0.05
"""``--compare`` calls a change smaller than this fraction noise."""


class CheckFailed(Exception):
    """Raised by a case whose work did not end as it must (the case is reported FAILED)."""


@dataclass(frozen=True, slots=True)
class Goal:
    """What a case must achieve: a ratio to a baseline, a per-operation cost, a total."""

    max_ratio: float | None = None
    """Median per-op cost at most this multiple of the baseline's median."""
    max_per_op: float | None = None
    """Median per-op cost at most this much (seconds, or bytes for a memory case)."""
    max_total: float | None = None
    """Median cost of a whole sample (per-op × ops) at most this much; reported as a check."""
    against: str | None = None
    """The case ``max_ratio`` is taken against; the case's own baseline when ``None``."""
    loop: str | None = None
    """The event loop this goal applies on (``"asyncio"``/``"uvloop"``); every loop if None."""

    def __post_init__(self) -> None:
        if self.max_ratio is None and self.max_per_op is None and self.max_total is None:
            raise ValueError("a Goal needs max_ratio, max_per_op or max_total")
        if self.loop is not None and self.loop not in LOOPS:
            raise ValueError(f"Goal.loop must be one of {LOOPS}, got {self.loop!r}")

    def describe(self, metric: str = "seconds", baseline: str | None = None) -> str:
        """The goal as text; the baseline is named only when it is not the case's own."""
        parts = []
        if self.max_ratio is not None:
            other = "" if self.against in (None, baseline) else f" {self.against}"
            if self.max_ratio < 1:
                parts.append(f"≥{1 / self.max_ratio:.1f}× faster than{other or ' baseline'}")
            else:
                parts.append(f"≤{self.max_ratio:.2f}×{other}")
        if self.max_per_op is not None:
            parts.append(f"≤{format_value(self.max_per_op, metric)}")
        if self.max_total is not None:
            parts.append(f"total ≤{format_value(self.max_total, metric)}")
        return " ".join(parts)

    def met(self, per_op: float, ratio: float | None, ops: int = 1) -> bool:
        """Whether a median ``per_op`` (and its ``ratio`` to ``against``) meets the goal."""
        if self.max_per_op is not None and per_op > self.max_per_op:
            return False
        if self.max_total is not None and per_op * ops > self.max_total:
            return False
        return not (self.max_ratio is not None and (ratio is None or ratio > self.max_ratio))

    def applies(self, loop: str) -> bool:
        """Whether the goal is judged on this event loop."""
        return self.loop is None or self.loop == loop


@dataclass(frozen=True, slots=True)
class Case:
    """One measured thing: ``run(n)`` does ``n`` operations and returns the seconds taken."""

    name: str
    run: RunFn
    ops: int
    """Operations per sample in a full run."""
    unit: str = "op"
    """What one operation is, for the table ("event", "task", ...)."""
    baseline: str | None = None
    """The name of the case (same module) this one is compared with."""
    goal: Goal | tuple[Goal, ...] | None = None
    """One goal, or several (e.g. one per event loop)."""
    metric: str = "seconds"
    """What ``run(n)`` returns for the ``n`` operations: "seconds" (default) or "bytes"
    (memory cases, e.g. tracemalloc growth); ``Goal.max_per_op`` is in the same unit."""
    quick_ops: int | None = None
    """Operations per sample under ``--quick``: ``ops // QUICK_SCALE`` when None; the full
    ``ops`` for a case whose size is what it measures; 0 leaves the case out of quick runs."""

    @property
    def goals(self) -> tuple[Goal, ...]:
        """The case's goals, as a tuple."""
        if self.goal is None:
            return ()
        return self.goal if isinstance(self.goal, tuple) else (self.goal,)

    def sample_ops(self, quick: bool) -> int:
        """Operations per sample in a full or a quick run (0: not run)."""
        if not quick:
            return self.ops
        if self.quick_ops is not None:
            return self.quick_ops
        return max(1, self.ops // QUICK_SCALE)


@dataclass(slots=True)
class Result:
    """The samples of one case (cost per operation) and what they mean."""

    module: str
    case: str
    unit: str
    ops: int
    baseline: str | None
    metric: str = "seconds"
    loop: str = "asyncio"
    samples: list[float] = field(default_factory=list)
    ratio: float | None = None
    goal: str | None = None
    ok: bool | None = None
    failure: str | None = None
    """Why the case raised ``CheckFailed`` (no further samples were taken)."""
    checks: list[str] = field(default_factory=list)
    """PASS/FAIL lines of its ``max_total`` goals and of a ``CheckFailed``."""
    notes: list[str] = field(default_factory=list)
    """The note of each sample (``""`` when its run returned none), in sample order."""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def label(self) -> str:
        return f"{self.module}:{self.case}"

    @property
    def note(self) -> str:
        """The note of the median sample (the lower one of an even count); ``""`` if none."""
        if not self.samples:
            return ""
        order = sorted(range(len(self.samples)), key=self.samples.__getitem__)
        return self.notes[order[(len(order) - 1) // 2]]


def format_bytes(b: float) -> str:
    """A size in bytes, KiB or MiB."""
    if abs(b) < 10 * 1024:
        return f"{b:.0f} B"
    if abs(b) < 10 * 1024 * 1024:
        return f"{b / 1024:.1f} KiB"
    return f"{b / (1024 * 1024):.1f} MiB"


def format_value(value: float, metric: str) -> str:
    """A per-operation figure in its metric's unit."""
    if value != value:  # NaN: no sample
        return "—"
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


def available_loops() -> list[str]:
    """The event loops this interpreter can run benchmarks on."""
    return [loop for loop in LOOPS if loop == "asyncio" or importlib.util.find_spec(loop)]


def runner(loop: str) -> asyncio.Runner:
    """An ``asyncio.Runner`` on a new event loop of this kind."""
    if loop == "asyncio":
        return asyncio.Runner()
    if loop == "uvloop":
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    raise ValueError(f"unknown event loop {loop!r}; expected one of {LOOPS}")


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
        where = f"{module.__name__}:{c.name}"
        if c.baseline is not None and c.baseline not in names:
            raise ValueError(f"{where}: unknown baseline {c.baseline!r}")
        if c.ops < 1:
            raise ValueError(f"{where}: ops must be >= 1")
        for g in c.goals:
            if not isinstance(g, Goal):
                raise TypeError(f"{where}: goal must be a Goal or a tuple of Goals")
            if g.against is not None and g.against not in names:
                raise ValueError(f"{where}: unknown goal baseline {g.against!r}")
            if g.max_ratio is not None and (g.against or c.baseline) is None:
                raise ValueError(f"{where}: a max_ratio goal needs a baseline")
    return cases


def start_clock() -> float:
    """Collect garbage (the setup's included), then return ``time.perf_counter()``.

    Without it, the objects a case builds before timing (10 000 specs, say) can make a full
    collection due inside the timed part, charging the case for its setup; the collections
    that the measured work itself causes are still counted.
    """
    gc.collect()
    return time.perf_counter()


async def _sample(case: Case, n: int) -> tuple[float, str]:
    gc.collect()
    result = case.run(n)
    if inspect.isawaitable(result):
        result = await result
    note = ""
    if isinstance(result, tuple):
        result, note = result
        if not isinstance(note, str):
            raise TypeError(f"{case.name}: run({n}) returned a note that is not a str: {note!r}")
    value = float(result)
    if not value > 0:
        raise ValueError(f"{case.name}: run({n}) returned {value!r}, not a positive {case.metric}")
    return value / n, note


def _judge(c: Case, r: Result, by_name: dict[str, Result]) -> None:
    """Fill in the result's ratio, goal text, status and check lines."""
    if c.baseline is not None and by_name[c.baseline].samples and r.samples:
        r.ratio = r.median / by_name[c.baseline].median
    texts: list[str] = []
    verdicts: list[bool] = []
    for g in c.goals:
        if not g.applies(r.loop):
            continue
        text = g.describe(c.metric, c.baseline)
        against = g.against or c.baseline
        ratio = r.ratio
        if against is not None and against != c.baseline:
            other = by_name[against]
            ratio = r.median / other.median if other.samples and r.samples else None
            if ratio is not None:
                text += f" ({ratio:.2f}×)"
        met = bool(r.samples) and g.met(r.median, ratio, r.ops)
        texts.append(text)
        verdicts.append(met)
        if g.max_total is not None:
            total = format_value(r.median * r.ops, c.metric) if r.samples else "—"
            r.checks.append(
                f"{'PASS' if met else 'FAIL'} {r.label} [{r.loop}]: {r.ops:,} {c.unit} in "
                f"{total} (median of {len(r.samples)}; limit "
                f"{format_value(g.max_total, c.metric)})"
            )
    if r.failure is not None:
        r.checks.append(f"FAIL {r.label} [{r.loop}]: {r.failure}")
        verdicts.append(False)
    if texts:
        r.goal = "; ".join(texts)
    if verdicts:
        r.ok = all(verdicts)


async def measure(
    module: str,
    cases: Sequence[Case],
    *,
    rounds: int,
    quick: bool = False,
    loop: str = "asyncio",
) -> list[Result]:
    """Warm up, then run ``rounds`` interleaved rounds of every case; per-op samples."""
    results = [
        Result(module, c.name, c.unit, c.sample_ops(quick), c.baseline, c.metric, loop)
        for c in cases
    ]

    async def sample(c: Case, r: Result, n: int, keep: bool) -> None:
        if r.failure is not None:
            return
        try:
            value, note = await _sample(c, n)
        except CheckFailed as exc:
            r.failure = str(exc) or type(exc).__name__
            return
        if keep:
            r.samples.append(value)
            r.notes.append(note)

    for c, r in zip(cases, results, strict=True):
        await sample(c, r, max(1, r.ops // 10), keep=False)  # warm-up: imports, caches, paths
    for i in range(rounds):
        order = list(range(len(cases)))
        order = order[i % len(order) :] + order[: i % len(order)]
        for j in order:
            await sample(cases[j], results[j], results[j].ops, keep=True)
    by_name = {r.case: r for r in results}
    for c, r in zip(cases, results, strict=True):
        _judge(c, r, by_name)
    return results


def table(results: Sequence[Result]) -> str:
    """An aligned plain-text table: per-op median, min, max, ratio to baseline, goal, and the
    median sample's note when any case has one."""
    with_notes = any(r.note for r in results)
    header: tuple[str, ...] = (
        "case",
        "unit",
        "ops",
        "median",
        "min",
        "max",
        "vs baseline",
        "goal",
        "status",
    ) + (("note",) if with_notes else ())
    rows = [header]
    for r in results:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}× {r.baseline}"
        status = ""
        if r.failure is not None:
            status = "FAILED"
        elif r.ok is not None:
            status = "ok" if r.ok else "MISSED"
        low = min(r.samples) if r.samples else float("nan")
        high = max(r.samples) if r.samples else float("nan")
        rows.append(
            (
                r.label,
                r.unit,
                f"{r.ops:,}",
                format_value(r.median, r.metric),
                format_value(low, r.metric),
                format_value(high, r.metric),
                ratio,
                r.goal or "",
                status,
            )
            + ((r.note,) if with_notes else ())
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
    checks = [line for r in results for line in r.checks]
    return "\n".join(lines + (["", *checks] if checks else []))


def metadata(*, quick: bool, rounds: int, loops: Sequence[str] = ("asyncio",)) -> dict[str, Any]:
    """Where and how the figures were taken."""
    versions: dict[str, str] = {}
    for name in ("uvloop", "aiojobs"):
        if importlib.util.find_spec(name):
            module = importlib.import_module(name)
            versions[name] = str(getattr(module, "__version__", "?"))
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "quick": quick,
        "rounds": rounds,
        "loops": list(loops),
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path: Path, results: Sequence[Result], meta: dict[str, Any]) -> None:
    """Write the results (cost per operation) and their metadata as JSON."""
    rows = []
    for r in results:
        row = asdict(r)
        row.update(
            median=r.median if r.samples else None,
            min=min(r.samples) if r.samples else None,
            max=max(r.samples) if r.samples else None,
            note=r.note,
        )
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


def selected(module: str, cases: list[Case], patterns: Sequence[str]) -> list[Case]:
    """The cases matching any pattern, plus the baselines they need (and theirs)."""
    if not patterns:
        return cases
    short = module.removeprefix("bench_")
    keep = {c.name for c in cases if any(p in f"{short}:{c.name}" for p in patterns)}
    while True:  # baselines of baselines too
        needed = {
            b
            for c in cases
            if c.name in keep
            for b in (c.baseline, *(g.against for g in c.goals))
            if b is not None
        }
        if needed <= keep:
            return [c for c in cases if c.name in keep]
        keep |= needed


def _quick_selection(cases: list[Case]) -> list[Case]:
    """Leave out the cases a quick run skips, and those whose baselines are left out."""
    keep = [c for c in cases if c.sample_ops(True) > 0]
    names = {c.name for c in keep}
    while True:
        kept = [
            c
            for c in keep
            if all(b in names for b in (c.baseline, *(g.against for g in c.goals)) if b)
        ]
        if len(kept) == len(keep):
            return kept
        keep = kept
        names = {c.name for c in keep}


def run_all(
    patterns: Sequence[str] = (),
    *,
    quick: bool = False,
    rounds: int | None = None,
    loops: Sequence[str] = ("asyncio",),
) -> list[Result]:
    """Discover, select and measure on each loop; print each module's table as it completes."""
    rounds = rounds if rounds is not None else (QUICK_ROUNDS if quick else FULL_ROUNDS)
    everything: list[Result] = []
    for module in discover():
        name = module.__name__.rsplit(".", 1)[-1]
        cases = module_cases(module)
        if cases is None:
            if not patterns:
                print(f"{name}: skipped (no CASES list; see benchmarks/harness.py)\n")
            continue
        cases = selected(name, cases, patterns)
        if quick:
            cases = _quick_selection(cases)
        if not cases:
            continue
        short = name.removeprefix("bench_")
        for loop in loops:
            with runner(loop) as r:
                results = r.run(measure(short, cases, rounds=rounds, quick=quick, loop=loop))
            print(f"== {short} on {loop} ==", table(results), sep="\n", end="\n\n", flush=True)
            everything.extend(results)
    return everything


def profile_all(
    patterns: Sequence[str],
    *,
    quick: bool = False,
    loop: str = "asyncio",
    top: int = 25,
    sort: str = "tottime",
) -> int:
    """Run each selected case once (after a warm-up) under cProfile; print its top functions.

    Baselines are not added to the selection: name exactly the cases to profile. Returns the
    number of cases profiled.
    """
    count = 0
    for module in discover():
        name = module.__name__.rsplit(".", 1)[-1]
        cases = module_cases(module)
        if not cases:
            continue
        short = name.removeprefix("bench_")
        for c in cases:
            if patterns and not any(p in f"{short}:{c.name}" for p in patterns):
                continue
            n = c.sample_ops(quick) or c.ops
            profiler = cProfile.Profile()

            async def once(c: Case = c, n: int = n, profiler: cProfile.Profile = profiler) -> None:
                await _sample(c, max(1, n // 10))  # warm-up
                gc.collect()
                profiler.enable()
                try:
                    await _sample(c, n)
                finally:
                    profiler.disable()

            with runner(loop) as r:
                r.run(once())
            print(f"== {short}:{c.name} on {loop}, {n:,} {c.unit}, by {sort} ==", flush=True)
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.strip_dirs().sort_stats(sort).print_stats(top)
            count += 1
    return count


# ---------------------------------------------------------------------- comparing runs


def _load(path: Path) -> tuple[dict[str, Any], dict[tuple[str, str, str], dict[str, Any]]]:
    data = json.loads(path.read_text())
    rows = {}
    for row in data.get("results", []):
        key = (row.get("loop", "asyncio"), row["module"], row["case"])
        rows[key] = row
    return data.get("meta", {}), rows


def _change(old: float, new: float, metric: str) -> str:
    if old <= 0:
        return ""
    delta = new / old - 1
    word = ""
    if abs(delta) >= NOISE:
        if metric == "bytes":
            word = " smaller" if delta < 0 else " larger"
        else:
            word = " faster" if delta < 0 else " slower"
    return f"{delta * 100:+.1f}%{word}"


def compare(old_path: Path, new_path: Path) -> str:
    """A table of per-case change (median, and ratio to baseline) from one JSON run to another."""
    old_meta, old = _load(old_path)
    new_meta, new = _load(new_path)
    header = ("case", "loop", "old", "new", "change", "old ratio", "new ratio")
    rows = [header]
    for key in [k for k in new if k in old]:
        loop, module, case = key
        a, b = old[key], new[key]
        metric = b.get("metric", "seconds")
        if a.get("median") is None or b.get("median") is None:
            rows.append((f"{module}:{case}", loop, "—", "—", "no samples", "", ""))
            continue

        def ratio(row: dict[str, Any]) -> str:
            return "" if row.get("ratio") is None else f"{row['ratio']:.2f}×"

        change = _change(a["median"], b["median"], metric)
        if a.get("ops") != b.get("ops"):
            change += f" (ops {a.get('ops', 0):,}→{b.get('ops', 0):,})"
        rows.append(
            (
                f"{module}:{case}",
                loop,
                format_value(a["median"], metric),
                format_value(b["median"], metric),
                change,
                ratio(a),
                ratio(b),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {2, 3, 5, 6}
    lines = [
        f"old: {old_path} ({old_meta.get('time', '?')}), new: {new_path} "
        f"({new_meta.get('time', '?')}); changes under {NOISE:.0%} are noise",
        "",
    ]
    for k, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    for label, keys in (("old", old.keys() - new.keys()), ("new", new.keys() - old.keys())):
        names = sorted(f"{m}:{c} [{lp}]" for lp, m, c in keys)
        if names:
            shown = ", ".join(names[:8]) + (
                f", … ({len(names) - 8} more)" if len(names) > 8 else ""
            )
            lines.append(f"only in {label} ({len(names)}): {shown}")
    return "\n".join(lines)


def markdown(path: Path) -> str:
    """The results of a ``--json`` file as Markdown tables, one per module, loops side by side."""
    meta, rows = _load(path)
    loops = [lp for lp in LOOPS if any(k[0] == lp for k in rows)]
    modules: dict[str, list[str]] = {}
    for _, module, case in rows:
        cases = modules.setdefault(module, [])
        if case not in cases:
            cases.append(case)
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    lines = [
        f"Python {meta.get('python', '?')} on {meta.get('platform', '?')}, "
        f"{meta.get('cpus', '?')} CPUs, {meta.get('rounds', '?')} rounds"
        + (" (quick)" if meta.get("quick") else "")
        + (f"; {versions}" if versions else "")
        + f"; {meta.get('time', '?')}.",
    ]
    for module, cases in modules.items():
        header = ["case", "ops"]
        for lp in loops:
            header += [f"{lp} median [min–max]", "× baseline"]
        header += ["goal", "met"]
        with_notes = any(row.get("note") for (_, m, _), row in rows.items() if m == module)
        if with_notes:
            header.append("note")
        lines += ["", f"**{module}**", "", "| " + " | ".join(header) + " |"]
        aligns = ["---", "---:"] + ["---:", "---:"] * len(loops) + ["---", "---"]
        lines.append("|" + "|".join(aligns + (["---"] if with_notes else [])) + "|")
        for case in cases:
            found = {lp: rows[(lp, module, case)] for lp in loops if (lp, module, case) in rows}
            first = next(iter(found.values()))
            cells = [f"`{case}`", f"{first['ops']:,}"]
            goals: dict[str, str] = {}
            met: list[str] = []
            notes: dict[str, str] = {}
            for lp in loops:
                row = found.get(lp)
                if row is None or row.get("median") is None:
                    cells += ["—", ""]
                    continue
                if row.get("note"):
                    notes[lp] = row["note"]
                metric = row.get("metric", "seconds")
                cells.append(
                    f"{format_value(row['median'], metric)} "
                    f"[{format_value(row['min'], metric)}–{format_value(row['max'], metric)}]"
                )
                ratio = row.get("ratio")
                cells.append("" if ratio is None else f"{ratio:.2f}× `{row['baseline']}`")
                if row.get("goal"):
                    goals[lp] = row["goal"]
                if row.get("failure"):
                    met.append(f"{lp}: FAILED ({row['failure']})")
                elif row.get("ok") is not None:
                    met.append(f"{lp}: {'yes' if row['ok'] else '**no**'}")
            if len(set(goals.values())) == 1 and len(goals) == len(found):
                goal = next(iter(goals.values()))
            else:
                goal = "; ".join(f"{lp}: {g}" for lp, g in goals.items())
            cells += [goal.replace("|", "\\|"), ", ".join(met)]
            if with_notes:
                note = "; ".join(f"{lp}: {n}" for lp, n in notes.items())
                cells.append(note.replace("|", "\\|"))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
