"""Identity and membership: which tasks are registered, under which names, in which state.

The registry is authoritative: ``list``/``get``/``is_alive`` read it directly, and events
never add or remove membership. A name is released only by the cleanup of the record that
holds it, so a late cleanup can never touch a newer task registered under the same name.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._context import StopSignal, TaskId
from ._outcome import TaskOutcome
from ._spec import TaskSpec


class TaskState(enum.StrEnum):
    """Where a registered task is in its lifecycle."""

    WAITING = "waiting"
    """Waiting to start an attempt (for a concurrency slot, or not yet scheduled)."""
    RUNNING = "running"
    """An attempt is running."""
    BACKOFF = "backoff"
    """Waiting out a backoff delay after a failed attempt."""
    SCHEDULED = "scheduled"
    """Waiting for the next run of a periodic or cron task after a success (or its first)."""
    STOPPING = "stopping"
    """A stop was requested; cleanup has not finished yet."""


_WAITING = TaskState.WAITING


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A snapshot of one registered task, read from the registry."""

    id: TaskId
    name: str
    state: TaskState
    attempt: int
    """Number of the current or last attempt; 0 before the first."""
    restarts: int
    """Attempts started after a failed attempt (a healthy periodic task shows 0)."""
    last_error: str | None
    """Reason of the last failed attempt, if any."""
    started_at: float | None = None
    """When the current (or last) attempt started (epoch seconds)."""
    last_success_at: float | None = None
    """When an attempt last succeeded (epoch seconds)."""
    next_attempt_at: float | None = None
    """When the next attempt is due (epoch seconds); ``None`` while an attempt runs."""


_new = object.__new__
(
    _set_id,
    _set_name,
    _set_state,
    _set_attempt,
    _set_restarts,
    _set_last_error,
    _set_started_at,
    _set_last_success_at,
    _set_next_attempt_at,
) = (TaskInfo.__dict__[field].__set__ for field in TaskInfo.__slots__)


class TaskRecord(StopSignal):
    """Everything the runtime keeps about one registered task (internal).

    A record is also its task's ``StopSignal`` (``requested``, ``request()``): the contexts of
    its attempts watch it directly, which saves an object per task.
    """

    __slots__ = (
        "attempt",
        "attempt_started",
        "finalized",
        "forced",
        "future",
        "holds_slot",
        "id",
        "last_error",
        "last_success_at",
        "name",
        "next_attempt_at",
        "on_cleanup",
        "outcome",
        "outcome_waiters",
        "restarted",
        "restarts",
        "result",
        "runner",
        "spec",
        "started",
        "started_at",
        "state",
        "timers",
    )

    def __init__(
        self,
        task_id: TaskId,
        spec: TaskSpec,
        future: asyncio.Future[TaskOutcome] | None = None,
        on_cleanup: Callable[[TaskRecord], None] | None = None,
    ) -> None:
        self.requested = False  # StopSignal state, set inline: this runs once per task
        self._waiters = None
        self.id = task_id
        self.name = spec.name
        self.spec = spec
        self.future = future  # the controller's shared future of a submission, if any
        self.outcome_waiters: list[asyncio.Future[TaskOutcome]] | None = None
        self.outcome: TaskOutcome | None = None  # set once, by the cleanup
        self.on_cleanup = on_cleanup
        self.state = _WAITING
        self.attempt = 0
        # perf_counter() at the start of the attempt in flight; None once its terminal event is out
        self.attempt_started: float | None = None
        self.last_error: str | None = None
        self.restarts = 0  # attempts started after a failed attempt
        self.result: object = None  # what the last successful attempt returned
        self.started_at: float | None = None  # wall clock, of the current or last attempt
        self.last_success_at: float | None = None
        self.next_attempt_at: float | None = None
        schedule = spec.schedule
        if schedule is not None:  # SCHEDULED from registration on, not from the first step
            now = time.time()
            first = schedule.first_wait(now)
            if first > 0:
                self.state = TaskState.SCHEDULED
                self.next_attempt_at = now + first
        # ``Supervisor.restart``: resolved once the next attempt has started.
        self.restarted: asyncio.Future[bool] | None = None
        self.runner: asyncio.Task[None] | None = None
        self.timers: list[asyncio.TimerHandle] | None = None
        self.finalized = False
        self.forced: str | None = None  # why it was force-stopped (its outcome's words)
        self.holds_slot = False
        self.started = False  # the runner has begun; before that a stop needs no cancel

    def outcome_future(self) -> asyncio.Future[TaskOutcome]:
        """A new future of this task's outcome, for one waiter (done already after cleanup).

        One per waiter, so a waiter cancelled while waiting cancels only its own future:
        no ``asyncio.shield`` (and the extra loop iteration it costs) is needed.
        """
        future: asyncio.Future[TaskOutcome] = asyncio.get_running_loop().create_future()
        if self.outcome is not None:
            future.set_result(self.outcome)
        elif self.outcome_waiters is None:
            self.outcome_waiters = [future]
        else:
            self.outcome_waiters.append(future)
        return future

    def resolve(self, outcome: TaskOutcome) -> None:
        """Record the outcome and wake every waiter (the cleanup calls this once)."""
        self.outcome = outcome
        future = self.future
        if future is not None and not future.done():
            future.set_result(outcome)
        waiters, self.outcome_waiters = self.outcome_waiters, None
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(outcome)

    def info(self) -> TaskInfo:
        """This task as a ``TaskInfo``."""
        # Built through the slots, not the frozen dataclass __init__: ``list()`` makes one
        # per task, and object.__setattr__ per field would double its cost.
        info = _new(TaskInfo)
        _set_id(info, self.id)
        _set_name(info, self.name)
        _set_state(info, TaskState.STOPPING if self.requested else self.state)
        _set_attempt(info, self.attempt)
        _set_restarts(info, self.restarts)
        _set_last_error(info, self.last_error)
        _set_started_at(info, self.started_at)
        _set_last_success_at(info, self.last_success_at)
        _set_next_attempt_at(info, self.next_attempt_at)
        return info


class Registry:
    """Registered tasks by id (in id order) and by name."""

    __slots__ = ("_by_id", "_by_name")

    def __init__(self) -> None:
        self._by_id: dict[TaskId, TaskRecord] = {}
        self._by_name: dict[str, TaskRecord] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[TaskRecord]:
        return iter(list(self._by_id.values()))

    def has_name(self, name: str) -> bool:
        """Whether a task of this name is registered."""
        return name in self._by_name

    def lookup(self, key: TaskId | int | str) -> TaskRecord | None:
        """The record for an id or a name, if registered."""
        if isinstance(key, str):
            return self._by_name.get(key)
        return self._by_id.get(key)  # type: ignore[call-overload,no-any-return]

    def insert(self, rec: TaskRecord) -> None:
        """Register ``rec``; its name must be free and its id new."""
        assert rec.name not in self._by_name, rec.name
        self._by_id[rec.id] = rec
        self._by_name[rec.name] = rec

    def release(self, rec: TaskRecord) -> None:
        """Forget ``rec``; its name is released only if ``rec`` still holds it."""
        self._by_id.pop(rec.id, None)
        if self._by_name.get(rec.name) is rec:
            del self._by_name[rec.name]

    def records(self) -> list[TaskRecord]:
        """Every record, in id order (controller admissions may insert a smaller id later)."""
        return sorted(self._by_id.values(), key=_by_id_key)


def _by_id_key(rec: TaskRecord) -> int:
    return rec.id
