"""Shared fixtures and helpers for the behaviour-grouped test files."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import taskvisor as tv

# --------------------------------------------------------------------------- hand-made events

_SEQ = itertools.count(1)


def make_event(
    kind: tv.EventKind,
    task: str | None = None,
    task_id: tv.TaskId | None = None,
    **fields: Any,
) -> tv.Event:
    """An ``Event`` built with its public constructor, for feeding a subscriber by hand.

    ``seq`` increases with each call (in this module's own count), ``at`` is the wall clock
    unless given; every other field is a keyword of ``Event``.
    """
    fields.setdefault("at", time.time())
    return tv.Event(seq=next(_SEQ), kind=kind, task=task, task_id=task_id, **fields)


# --------------------------------------------------------------------------- runtime helpers
# (supervisor runtime suites: lifecycle, failure, timeout, identity, outcomes, shutdown,
# concurrency, signals)

GUARD = 10.0
"""Generous upper bound for any single wait in a test: a guard, never a synchronisation."""

FAST = tv.BackoffPolicy.constant(0.001)
"""A 1 ms constant backoff for tests that retry."""


class Recorder(tv.Subscriber):
    """Keeps every event it receives and wakes waiters per event (no polling)."""

    queue_capacity = 1_000_000

    def __init__(self, name: str = "recorder") -> None:
        self._name = name
        self.events: list[tv.Event] = []
        self._waiters: list[tuple[Callable[[tv.Event], bool], int, asyncio.Future[tv.Event]]] = []

    @property
    def name(self) -> str:
        return self._name

    def on_event(self, event: tv.Event) -> None:
        self.events.append(event)
        if not self._waiters:
            return
        keep = []
        for match, need, fut in self._waiters:
            if fut.done():
                continue
            if match(event) and self._count(match) >= need:
                fut.set_result(event)
            else:
                keep.append((match, need, fut))
        self._waiters = keep

    def _count(self, match: Callable[[tv.Event], bool]) -> int:
        return sum(1 for e in self.events if match(e))

    @staticmethod
    def _matcher(kind: tv.EventKind | None, task: str | None, fields: dict[str, Any]) -> Any:
        def match(e: tv.Event) -> bool:
            if kind is not None and e.kind is not kind:
                return False
            if task is not None and e.task != task:
                return False
            return all(getattr(e, k) == v for k, v in fields.items())

        return match

    async def wait_for(
        self,
        kind: tv.EventKind | None = None,
        *,
        task: str | None = None,
        count: int = 1,
        timeout: float = GUARD,
        **fields: Any,
    ) -> tv.Event:
        """Return the ``count``-th event matching ``kind``/``task``/``fields`` (already seen or
        still to come); fail the test if it does not arrive within ``timeout``."""
        match = self._matcher(kind, task, fields)
        seen = [e for e in self.events if match(e)]
        if len(seen) >= count:
            return seen[count - 1]
        fut: asyncio.Future[tv.Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((match, count, fut))
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            pytest.fail(
                f"no event #{count} {kind} task={task} {fields} within {timeout}s; "
                f"saw {[(e.kind.value, e.task) for e in self.events]}"
            )

    def of(self, kind: tv.EventKind | None = None, task: str | None = None) -> list[tv.Event]:
        """Every recorded event of this kind (and task)."""
        return [
            e
            for e in self.events
            if (kind is None or e.kind is kind) and (task is None or e.task == task)
        ]

    def kinds(self, task: str, task_id: int | None = None) -> list[tv.EventKind]:
        """The kinds of one task's events, in order (diagnostics excluded)."""
        return [
            e.kind
            for e in self.events
            if e.task == task
            and not e.is_diagnostic
            and (task_id is None or e.task_id is None or e.task_id == task_id)
        ]


@pytest.fixture
def recorder() -> Recorder:
    """A fresh recording subscriber."""
    return Recorder()


SupervisorFactory = Callable[..., tv.Supervisor]


@pytest.fixture
async def make_supervisor(recorder: Recorder) -> AsyncIterator[SupervisorFactory]:
    """Build supervisors wired to ``recorder`` (config keywords pass through; signals off).

    Every supervisor built here is shut down at teardown, under a guard, and then every
    task's events are checked against SPEC §6's order (``check_task_events``).
    """
    built: list[tv.Supervisor] = []

    def make(
        *,
        subscribers: tuple[object, ...] = (),
        defaults: tv.TaskDefaults | None = None,
        **config: Any,
    ) -> tv.Supervisor:
        config.setdefault("handle_signals", False)
        config.setdefault("grace", 5.0)
        sup = tv.Supervisor(
            tv.SupervisorConfig(**config),
            defaults=defaults,
            subscribers=(recorder, *subscribers),
        )
        built.append(sup)
        return sup

    yield make
    async with asyncio.timeout(GUARD * 2):
        for sup in built:
            await sup.shutdown()
    # Every test gets the event-order invariant checked for free.
    check_task_events(recorder.events)


async def forever(ctx: tv.TaskContext) -> None:
    """A body that runs until its stop is requested."""
    await asyncio.Event().wait()


async def succeed() -> None:
    """A body that returns at once."""


_TERMINAL = frozenset(
    {
        tv.EventKind.ATTEMPT_SUCCEEDED,
        tv.EventKind.ATTEMPT_FAILED,
        tv.EventKind.ATTEMPT_TIMED_OUT,
        tv.EventKind.ATTEMPT_CANCELED,
    }
)


def check_task_events(events: list[tv.Event]) -> int:
    """Assert SPEC §6's per-task order for every task id seen; return how many tasks finished.

    Per task: ADDED, then per attempt STARTING, exactly one terminal attempt event, maybe
    BACKOFF_SCHEDULED; then FINISHED, REMOVED. One REMOVE_REQUESTED at most, anywhere between
    ADDED and FINISHED. Attempts are numbered 1, 2, ... Needs a subscriber that dropped nothing.
    """
    by_id: dict[int, list[tv.Event]] = {}
    for e in events:
        if e.task_id is not None and e.kind not in (
            tv.EventKind.TASK_ADD_FAILED,
            tv.EventKind.CONTROLLER_SUBMITTED,
            tv.EventKind.CONTROLLER_REJECTED,
        ):
            by_id.setdefault(int(e.task_id), []).append(e)
    finished = 0
    for task_id, evs in by_id.items():
        kinds = [e.kind for e in evs if e.kind is not tv.EventKind.TASK_REMOVE_REQUESTED]
        where = f"task {task_id} ({evs[0].task}): {[k.value for k in kinds]}"
        assert sum(e.kind is tv.EventKind.TASK_REMOVE_REQUESTED for e in evs) <= 1, where
        assert kinds[0] is tv.EventKind.TASK_ADDED, where
        i, attempt = 1, 0
        while i < len(kinds) and kinds[i] is tv.EventKind.ATTEMPT_STARTING:
            attempt += 1
            starting = [e for e in evs if e.kind is not tv.EventKind.TASK_REMOVE_REQUESTED][i]
            assert starting.attempt == attempt, where
            assert i + 1 < len(kinds), where
            assert kinds[i + 1] in _TERMINAL, where
            i += 2
            if i < len(kinds) and kinds[i] is tv.EventKind.BACKOFF_SCHEDULED:
                i += 1
        rest = kinds[i:]
        if rest:
            assert rest == [tv.EventKind.TASK_FINISHED, tv.EventKind.TASK_REMOVED], where
            finished += 1
            removal = [e for e in evs if e.kind is tv.EventKind.TASK_REMOVE_REQUESTED]
            if removal:
                assert removal[0].seq < evs[-2].seq, where
    return finished


def group_gone(pgid: int) -> bool:
    """Whether nothing of process group ``pgid`` still runs.

    A group that is left with zombies only counts as gone: they are dead, waiting for init
    (their parent once orphaned) to collect them, which this machine's init does only every
    couple of seconds.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid:
                members.append(fields[0])
    return all(state in ("Z", "X") for state in members)


# Programs for the process-supervision tests (run as ``python -c``). Each prints "ready" and
# its pid (which is also its process group's id) once it can be signalled.
POLITE = """
import os, signal, sys, time
def bye(signum, frame):
    print("bye", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", os.getpid(), flush=True)
while True:
    time.sleep(1)
"""
"""Waits forever; exits cleanly on SIGTERM."""

STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", os.getpid(), flush=True)
while True:
    time.sleep(1)
"""
"""Ignores SIGTERM: only SIGKILL ends it."""


SPEC_OPTIONAL_FIELDS = (
    "task",
    "task_id",
    "attempt",
    "reason",
    "exit_code",
    "delay",
    "timeout",
    "duration",
    "backoff_source",
    "outcome",
    "rejection",
    "slot",
    "error",
    "fence",
    "node",
    "dropped",
)
"""The optional ``Event`` fields of SPEC §6, then those of Part II (``error`` §13, ``fence`` and
``node`` §11, ``dropped`` §14), in their order."""

SPEC_EVENT_FIELDS = ("seq", "at", "kind", *SPEC_OPTIONAL_FIELDS)
"""Every ``Event`` field, in order."""
