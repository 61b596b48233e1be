"""Readiness and liveness of the file's tasks, as the command line sees them (an adapter).

TEMPORARY: this module stands in for the core's readiness and liveness (SPEC §10.1, §10.2,
§13), which are not in this branch yet. Everything the command line does with readiness goes
through the names here, so switching to the core is a change of this file alone:

- ``Readiness.mark_ready(name)`` (a probe passed, or an attempt started) → ``ctx.ready()``;
- ``Readiness.mark_not_ready(name)`` (the attempt ended) → automatic at an attempt's end;
- ``await Readiness.wait(name)`` (``after``) → ``await sup.wait_ready(name)``;
- ``Readiness.is_ready(name)`` (status) → ``TaskInfo.ready``;
- ``not_ready_in_time(...)`` (a readiness probe's ``timeout``) → ``TaskSpec(ready_timeout=…)``,
  published as ``ATTEMPT_TIMED_OUT``;
- ``hung(...)`` (a health probe failing ``failures`` times in a row) → ``ctx.heartbeat()`` on
  each passing check with ``TaskSpec(heartbeat=…)``, published as ``ATTEMPT_HUNG``;
- ``Runner.restart`` as ``cancel`` then ``add`` (``_runtime.py``) → ``await sup.restart(name)``
  (same task id).

Readiness is keyed by task name: a name re-added (``ctl start``, a reload) starts afresh.
"""

from __future__ import annotations

import asyncio

from .._errors import Fail

__all__ = ["Readiness", "hung", "not_ready_in_time"]


class _Entry:
    __slots__ = ("changed", "finished", "ready")

    def __init__(self) -> None:
        self.ready = False
        self.finished = False  # finished for good, without being ready: dependents give up
        self.changed: asyncio.Event | None = None  # made when someone waits

    def poke(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None


class Readiness:
    """Which tasks are ready now, and a way to wait for one (keyed by task name)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def _entry(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry()
        return entry

    def reset(self, name: str) -> None:
        """``name`` is (re-)added: not ready, not finished."""
        entry = self._entry(name)
        entry.ready = entry.finished = False
        entry.poke()

    def mark_ready(self, name: str) -> None:
        """The current attempt of ``name`` is ready (a once-task: it completed)."""
        entry = self._entry(name)
        if not entry.ready:
            entry.ready = True
            entry.poke()

    def mark_not_ready(self, name: str) -> None:
        """The attempt of ``name`` ended (or its readiness was lost)."""
        entry = self._entry(name)
        if entry.ready:
            entry.ready = False
            entry.poke()

    def mark_finished(self, name: str, *, ready: bool) -> None:
        """``name`` finished for good; ``ready``: it stays ready (a completed once-task)."""
        entry = self._entry(name)
        entry.ready = ready
        entry.finished = not ready
        entry.poke()

    def is_ready(self, name: str) -> bool:
        """Whether ``name`` is ready now."""
        entry = self._entries.get(name)
        return entry is not None and entry.ready

    async def wait(self, name: str) -> bool:
        """``True`` once ``name`` is ready; ``False`` if it finished without being ready."""
        entry = self._entry(name)
        while not entry.ready:
            if entry.finished:
                return False
            if entry.changed is None:
                entry.changed = asyncio.Event()
            await entry.changed.wait()
        return True


def not_ready_in_time(seconds: float, probe: str, last: str | None) -> Fail:
    """The failure that ends an attempt whose readiness probe did not pass within ``seconds``.

    Retryable, reported as a timeout (the core's ``ready_timeout`` will publish it as
    ``ATTEMPT_TIMED_OUT``).
    """
    detail = f" (last check: {last})" if last else ""
    return Fail(f"timed out: not ready within {seconds:g} s: {probe}{detail}")


def hung(probe: str, failures: int, last: str | None) -> Fail:
    """The failure that ends an attempt whose health probe failed ``failures`` times in a row.

    The one place a program is declared hung; retryable (the core's heartbeat will publish it
    as ``ATTEMPT_HUNG``).
    """
    detail = f": {last}" if last else ""
    return Fail(f"hung: health check {probe} failed {failures} times in a row{detail}")
