"""The toolkit for checking a TOML file: one ``Table`` per table, errors collected, not raised.

Every message reads ``FILE: WHERE: FIELD: what was expected, got what was found``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class FileErrors(Exception):
    """The file is not usable; ``messages`` holds one line per problem."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""A field that is absent or failed its check (the error is already recorded)."""


def show(value: object) -> str:
    """A TOML value as the user wrote it, roughly, with its kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def choices(options: Iterable[str]) -> str:
    """``"a", "b" or "c"``."""
    items = [f'"{o}"' for o in options]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


class Table:
    """One TOML table being checked: where it is, and the errors found in it."""

    def __init__(self, errors: list[str], prefix: str, data: Mapping[str, Any]) -> None:
        self.errors = errors
        self.prefix = prefix
        self.data = data

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.prefix}: {key}: {message}")

    def only(self, allowed: Iterable[str], extra_hint: Mapping[str, str] | None = None) -> None:
        allowed = sorted(allowed)
        for key in self.data:
            if key in allowed:
                continue
            hint = (extra_hint or {}).get(key)
            if hint is None:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
            else:
                hint = f" ({hint})"
            self.error(key, f"unknown key; expected one of {', '.join(allowed)}{hint}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        return self.data.get(key, MISSING)

    def number(self, key: str, *, positive: bool = False, what: str = "seconds") -> Any:
        value = self.raw(key)
        if value is MISSING:
            return MISSING
        bound = "> 0" if positive else ">= 0"
        expected = f"a number of {what} {bound}" if what else f"a number {bound}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"expected {expected}, got {show(value)}")
            return MISSING
        v = float(value)
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            self.error(key, f"expected {expected}, got {show(value)}")
            return MISSING
        return v

    def integer(self, key: str, *, minimum: int) -> Any:
        value = self.raw(key)
        if value is MISSING:
            return MISSING
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.error(key, f"expected an integer >= {minimum}, got {show(value)}")
            return MISSING
        return value

    def string(self, key: str, expected: str = "a non-empty string") -> Any:
        value = self.raw(key)
        if value is MISSING:
            return MISSING
        if not isinstance(value, str) or not value:
            self.error(key, f"expected {expected}, got {show(value)}")
            return MISSING
        return value

    def boolean(self, key: str) -> Any:
        value = self.raw(key)
        if value is MISSING:
            return MISSING
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {show(value)}")
            return MISSING
        return value

    def choice(self, key: str, options: Iterable[str]) -> Any:
        value = self.raw(key)
        if value is MISSING:
            return MISSING
        options = tuple(options)
        if not isinstance(value, str) or value not in options:
            self.error(key, f"expected {choices(options)}, got {show(value)}")
            return MISSING
        return value

    def sub(self, key: str, prefix: str | None = None) -> Table | None:
        value = self.raw(key)
        if value is MISSING:
            return None
        if not isinstance(value, dict):
            self.error(key, f"expected a table, like {key} = {{ ... }}, got {show(value)}")
            return None
        return Table(self.errors, prefix or f"{self.prefix}: {key}", value)


def top_table(errors: list[str], file: str, data: dict[str, Any], key: str) -> Table | None:
    """The top-level table ``[key]``, if present (an error if it is not a table)."""
    value = data.get(key, MISSING)
    if value is MISSING:
        return None
    if not isinstance(value, dict):
        errors.append(f"{file}: {key}: expected a table [{key}], got {show(value)}")
        return None
    return Table(errors, f"{file}: [{key}]", value)


def array_of_tables(
    errors: list[str], file: str, data: dict[str, Any], key: str
) -> list[dict[str, Any]]:
    """The array of tables ``[[key]]``, empty if absent (an error if it is something else)."""
    value = data.get(key, MISSING)
    if value is MISSING:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        errors.append(
            f"{file}: {key}: expected an array of tables, written [[{key}]], got {show(value)}"
        )
        return []
    return value


def resolve_path(base: Path, text: str) -> str:
    """``text`` (``~`` expanded) as an absolute path, relative ones taken from ``base``."""
    path = Path(os.path.expanduser(text))
    return str(path if path.is_absolute() else base / path)
