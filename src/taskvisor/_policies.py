"""Restart and backoff policies: what happens after an attempt, and how long to wait."""

# No ``from __future__ import annotations`` here: the exported classes' ``__module__`` reads
# ``taskvisor``, so their field annotations must be real objects for ``get_type_hints``.

import enum
import math
import random
from dataclasses import dataclass, field
from typing import ClassVar, Self

from ._validate import check_duration

_rng = random.Random()


class JitterPolicy(enum.Enum):
    """How a backoff delay is randomised around its base value."""

    NONE = "none"
    """Exactly the base delay."""
    FULL = "full"
    """Uniform in ``[0, base]``."""
    EQUAL = "equal"
    """Uniform in ``[base/2, base]``."""
    DECORRELATED = "decorrelated"
    """Uniform in ``[first, min(max, 3 × previous delay)]``."""


class RestartMode(enum.Enum):
    """The three kinds of restart policy."""

    NEVER = "never"
    ON_FAILURE = "on_failure"
    ALWAYS = "always"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When a task runs again: ``NEVER``, ``ON_FAILURE`` or ``always(interval=None)``."""

    mode: RestartMode
    interval: float | None = None

    NEVER: ClassVar["RestartPolicy"]
    ON_FAILURE: ClassVar["RestartPolicy"]

    def __post_init__(self) -> None:
        if not isinstance(self.mode, RestartMode):
            raise TypeError(f"mode must be a RestartMode, got {type(self.mode).__name__}")
        if self.interval is not None:
            if self.mode is not RestartMode.ALWAYS:
                raise ValueError("interval is only meaningful for RestartPolicy.always()")
            object.__setattr__(
                self, "interval", check_duration("interval", self.interval, positive=True)
            )

    @classmethod
    def always(cls, interval: float | None = None) -> Self:
        """Run again after every attempt; wait ``interval`` seconds after a success."""
        return cls(RestartMode.ALWAYS, interval)

    @property
    def restarts_on_success(self) -> bool:
        """Whether a successful attempt is followed by another."""
        return self.mode is RestartMode.ALWAYS

    @property
    def restarts_on_failure(self) -> bool:
        """Whether a retryable failure is followed by another attempt."""
        return self.mode is not RestartMode.NEVER

    def __repr__(self) -> str:
        if self.mode is RestartMode.ALWAYS:
            return f"RestartPolicy.always(interval={self.interval!r})"
        return f"RestartPolicy.{self.mode.name}"


RestartPolicy.NEVER = RestartPolicy(RestartMode.NEVER)
RestartPolicy.ON_FAILURE = RestartPolicy(RestartMode.ON_FAILURE)


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Delay before retry ``i`` of a failure streak: ``min(first * factor**i, max)``, jittered."""

    first: float = 0.2
    max: float = 30.0
    factor: float = 2.0
    jitter: JitterPolicy = field(default=JitterPolicy.EQUAL)

    def __post_init__(self) -> None:
        first = check_duration("first", self.first)
        maximum = check_duration("max", self.max)
        if isinstance(self.factor, bool) or not isinstance(self.factor, int | float):
            raise TypeError(f"factor must be a number, got {type(self.factor).__name__}")
        factor = float(self.factor)
        if not math.isfinite(factor):
            raise ValueError(f"factor must be finite, got {self.factor!r}")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        if not isinstance(self.jitter, JitterPolicy):
            raise TypeError(f"jitter must be a JitterPolicy, got {type(self.jitter).__name__}")
        assert first is not None
        assert maximum is not None
        if first > maximum:
            raise ValueError(f"first ({first}) must be <= max ({maximum})")
        object.__setattr__(self, "first", first)
        object.__setattr__(self, "max", maximum)
        object.__setattr__(self, "factor", factor)

    @classmethod
    def constant(cls, delay: float) -> Self:
        """Exactly ``delay`` seconds before every retry (factor 1, no jitter)."""
        d = check_duration("delay", delay)
        assert d is not None
        return cls(first=d, max=d, factor=1.0, jitter=JitterPolicy.NONE)

    @classmethod
    def exponential(
        cls,
        first: float,
        *,
        factor: float = 2.0,
        max: float = 30.0,
        jitter: JitterPolicy = JitterPolicy.EQUAL,
    ) -> Self:
        """Delays growing by ``factor`` from ``first`` up to ``max``, with ``jitter``."""
        return cls(first=first, max=max, factor=factor, jitter=jitter)

    def base(self, retry: int) -> float:
        """The un-jittered delay of retry ``retry`` (0 for the first retry of a streak)."""
        if self.first == 0.0:
            return 0.0  # 0 × factor**i is 0 for every i, even where factor**i overflows
        if self.factor == 1.0 or retry <= 0:
            return min(self.first, self.max)
        try:
            grown = self.first * self.factor**retry
        except OverflowError:
            # factor**retry alone overflows a float; times a tiny ``first`` it may not: compare
            # in logs (first > 0 and max >= first here).
            log_grown = math.log(self.first) + retry * math.log(self.factor)
            return self.max if log_grown >= math.log(self.max) else math.exp(log_grown)
        return min(grown, self.max)

    def delay(
        self, retry: int, previous: float | None = None, rng: random.Random | None = None
    ) -> float:
        """The delay before retry ``retry``; ``previous`` feeds the decorrelated recurrence."""
        if isinstance(retry, bool) or not isinstance(retry, int):
            raise TypeError(f"retry must be an int, got {type(retry).__name__}")
        if retry < 0:
            raise ValueError(f"retry must be >= 0, got {retry}")
        if previous is not None:
            previous = check_duration("previous", previous)
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
        r = rng if rng is not None else _rng
        jitter = self.jitter
        if jitter is JitterPolicy.DECORRELATED:
            prev = self.first if previous is None else previous
            upper = min(self.max, 3.0 * prev)
            if upper <= self.first:
                return self.first
            return min(r.uniform(self.first, upper), upper)
        base = self.base(retry)
        if jitter is JitterPolicy.NONE:
            return base
        if jitter is JitterPolicy.FULL:
            return min(r.uniform(0.0, base), base)
        return min(r.uniform(base / 2.0, base), base)
