"""A task's one final result: ``TaskOutcome``, its kinds, and the ``TaskHandle`` that awaits it."""

# No ``from __future__ import annotations``: see ``_config.py``.

import asyncio
import enum
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

from ._context import TaskId


class OutcomeKind(enum.StrEnum):
    """How a task ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    FATAL = "fatal"
    CANCELED = "canceled"
    FORCE_ABORTED = "force_aborted"
    REJECTED = "rejected"


class RejectionKind(enum.StrEnum):
    """Why a task was never admitted (outcome ``REJECTED``)."""

    ALREADY_EXISTS = "already_exists"
    BATCH_REJECTED = "batch_rejected"
    SLOT_BUSY = "slot_busy"
    QUEUE_FULL = "queue_full"
    SUPERSEDED = "superseded"
    REMOVED_FROM_QUEUE = "removed_from_queue"
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """The final result of one task, resolved exactly once after its cleanup."""

    kind: OutcomeKind
    reason: str | None = None
    exit_code: int | None = None
    error: BaseException | None = None
    rejection: RejectionKind | None = None
    attempts: int = 0
    result: Any = None
    """What the last successful attempt returned (``None`` if none succeeded)."""

    @property
    def ok(self) -> bool:
        """True only for ``COMPLETED``."""
        return self.kind is OutcomeKind.COMPLETED


class OutcomeSource(Protocol):
    """What a handle reads its outcome from: the task's record.

    It gives the outcome once resolved, and a new future of it for each waiter.
    """

    @property
    def outcome(self) -> TaskOutcome | None: ...

    def outcome_future(self) -> asyncio.Future[TaskOutcome]: ...


class TaskHandle:
    """A reference to one submitted task; ``await handle`` gives its ``TaskOutcome``.

    Dropping the handle does not stop the task.
    """

    __slots__ = ("_canceller", "_future", "_source", "id", "name")

    def __init__(
        self,
        task_id: TaskId,
        name: str,
        source: asyncio.Future[TaskOutcome] | OutcomeSource,
        canceller: Callable[[TaskId], Awaitable[bool]],
    ) -> None:
        self.id = task_id
        self.name = name
        # A future is only made when someone awaits: most handles are never awaited.
        self._future: asyncio.Future[TaskOutcome] | None
        self._source: OutcomeSource | None
        if isinstance(source, asyncio.Future):
            self._future, self._source = source, None
        else:
            self._future, self._source = None, source
        self._canceller = canceller

    def __repr__(self) -> str:
        outcome = self.outcome
        state = "pending" if outcome is None else outcome.kind.value
        return f"<TaskHandle id={int(self.id)} name={self.name!r} {state}>"

    def __await__(self) -> Generator[Any, None, TaskOutcome]:
        if self._future is None:
            assert self._source is not None
            # A future of its own per await: cancelling this awaiter touches nobody else's.
            return self._source.outcome_future().__await__()
        # Shielded: cancelling the awaiting coroutine must not cancel the shared outcome.
        return asyncio.shield(self._future).__await__()

    def done(self) -> bool:
        """Whether the outcome is resolved."""
        return self.outcome is not None

    @property
    def outcome(self) -> TaskOutcome | None:
        """The outcome if resolved, else ``None``."""
        future = self._future
        if future is None:
            assert self._source is not None
            return self._source.outcome
        return future.result() if future.done() else None

    async def cancel(self) -> bool:
        """Stop the task and wait for its cleanup; same rules as ``Supervisor.cancel``."""
        return await self._canceller(self.id)
