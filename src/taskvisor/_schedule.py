"""When a periodic task runs: a first delay, jitter, a fixed-rate grid, or a cron expression.

A ``Schedule`` is part of a ``TaskSpec`` made by ``TaskSpec.periodic`` (with ``fixed_rate``,
``jitter`` or ``first_delay``) or ``TaskSpec.cron``. It only computes waits; the actor
(``_actor.drive``) waits them out in ``TaskState.SCHEDULED``. Cron expressions are read by
``croniter`` (extra ``taskvisor[cron]``), imported when a cron spec is built.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._validate import check_duration


@dataclass(frozen=True, slots=True)
class Schedule:
    """How a periodic or cron task spaces its runs (internal; see the module docstring).

    ``first_delay``: seconds before the first run (no jitter). ``jitter``: a uniform
    ``[0, jitter]`` seconds added to each later wait. ``fixed_rate``: runs start on the grid
    ``first start + k × interval``; a run that overran skips the ticks it missed. ``cron``: a
    five-field expression, read in ``tz`` (``None``: local time).
    """

    first_delay: float = 0.0
    jitter: float = 0.0
    fixed_rate: bool = False
    cron: str | None = None
    tz: ZoneInfo | None = None
    _iter: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "first_delay", check_duration("first_delay", self.first_delay))
        object.__setattr__(self, "jitter", check_duration("jitter", self.jitter))
        if not isinstance(self.fixed_rate, bool):
            raise TypeError(f"fixed_rate must be a bool, got {type(self.fixed_rate).__name__}")
        if self.cron is not None:
            object.__setattr__(self, "_iter", _cron_reader(self.cron))

    def first_wait(self, now: float) -> float:
        """Seconds from ``now`` (wall clock) to the first run."""
        if self.cron is not None:
            return self.first_delay + max(0.0, self.next_cron(now + self.first_delay) - now)
        return self.first_delay

    def next_cron(self, after: float) -> float:
        """The first time matching the cron expression strictly after ``after`` (epoch)."""
        start = dt.datetime.fromtimestamp(after, self.tz or _local())
        nxt: dt.datetime = self._iter(self.cron, start).get_next(dt.datetime)
        return nxt.timestamp()

    def wait_after_success(
        self,
        interval: float | None,
        grid_start: float,
        now_mono: float,
        now_wall: float,
        rng: random.Random,
    ) -> float:
        """Seconds to wait after a successful run (``grid_start``: the first run's start).

        ``now_mono``/``grid_start`` are ``time.monotonic()`` readings; cron reads the wall
        clock ``now_wall``.
        """
        jitter = rng.uniform(0.0, self.jitter) if self.jitter else 0.0
        if self.cron is not None:
            return max(0.0, self.next_cron(now_wall) - now_wall) + jitter
        assert interval is not None
        if not self.fixed_rate:
            return interval + jitter
        # The next tick of the grid still ahead: missed ticks are skipped, never bunched.
        ticks = math.floor((now_mono - grid_start) / interval) + 1
        return max(0.0, grid_start + ticks * interval - now_mono) + jitter


def check_tz(tz: object) -> ZoneInfo | None:
    """``tz`` as a ``ZoneInfo``: a ``ZoneInfo``, a zone name, or ``None`` (local time)."""
    if tz is None or isinstance(tz, ZoneInfo):
        return tz
    if not isinstance(tz, str):
        raise TypeError(f"tz must be a zoneinfo.ZoneInfo, a zone name or None, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"tz: unknown time zone {tz!r}") from exc


def _local() -> dt.tzinfo:
    tz = dt.datetime.now().astimezone().tzinfo
    assert tz is not None
    return tz


def _cron_reader(expression: object) -> Any:
    """Check a five-field cron expression; return what reads it (``croniter``)."""
    if not isinstance(expression, str):
        raise TypeError(f"cron expression must be a str, got {type(expression).__name__}")
    try:
        from croniter import croniter
    except ImportError as exc:  # pragma: no cover - exercised without the extra installed
        raise ImportError(
            "cron schedules need the croniter package: pip install 'taskvisor[cron]'",
            name=exc.name,
        ) from exc
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron expression {expression!r} must have five fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    if not croniter.is_valid(expression):
        raise ValueError(f"cron expression {expression!r} is not valid")
    return croniter
