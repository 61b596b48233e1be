"""Argument checks shared by every public constructor: one message style, naming the parameter."""

from __future__ import annotations

import math
from typing import Any


def check_duration(
    name: str, value: Any, *, allow_none: bool = False, positive: bool = False
) -> float | None:
    """Return ``value`` as a float after checking it is a finite, non-negative number."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of seconds, got None")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if positive and v == 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_int(name: str, value: Any, *, minimum: int, allow_none: bool = False) -> int | None:
    """Return ``value`` after checking it is an ``int`` (not a bool) of at least ``minimum``."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be an int, got None")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_name(param: str, value: Any) -> str:
    """Return ``value`` after checking it is a non-empty ``str``."""
    if not isinstance(value, str):
        raise TypeError(f"{param} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{param} must be a non-empty str")
    return value
