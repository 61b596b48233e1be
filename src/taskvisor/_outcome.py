"""A task's one final result: ``TaskOutcome``, its kinds, and the ``TaskHandle`` that awaits it."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

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

    @property
    def ok(self) -> bool:
        """True only for ``COMPLETED``."""
        return self.kind is OutcomeKind.COMPLETED


class TaskHandle:
    """A reference to one submitted task; ``await handle`` gives its ``TaskOutcome``.

    Dropping the handle does not stop the task.
    """

    __slots__ = ("_canceller", "_future", "id", "name")

    def __init__(
        self,
        task_id: TaskId,
        name: str,
        future: asyncio.Future[TaskOutcome],
        canceller: Callable[[TaskId], Awaitable[bool]],
    ) -> None:
        self.id = task_id
        self.name = name
        self._future = future
        self._canceller = canceller

    def __repr__(self) -> str:
        state = self._future.result().kind.value if self._future.done() else "pending"
        return f"<TaskHandle id={int(self.id)} name={self.name!r} {state}>"

    def __await__(self) -> Generator[Any, None, TaskOutcome]:
        # Shielded: cancelling the awaiting coroutine must not cancel the shared outcome.
        return asyncio.shield(self._future).__await__()

    def done(self) -> bool:
        """Whether the outcome is resolved."""
        return self._future.done()

    @property
    def outcome(self) -> TaskOutcome | None:
        """The outcome if resolved, else ``None``."""
        return self._future.result() if self._future.done() else None

    async def cancel(self) -> bool:
        """Stop the task and wait for its cleanup; same rules as ``Supervisor.cancel``."""
        return await self._canceller(self.id)
