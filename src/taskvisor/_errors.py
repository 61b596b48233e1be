"""Every exception taskvisor defines: what task bodies raise, and what the API raises.

Two roots on purpose. ``TaskError`` (with ``Fail`` and ``Fatal``) is raised *by task bodies*
to tell the supervisor how an attempt ended. ``TaskvisorError`` is raised *by the API* to
its callers; catch it to catch every supervisor error.
"""

from __future__ import annotations


class TaskError(Exception):
    """Base of the errors a task body raises on purpose; carries ``reason`` and ``exit_code``."""

    reason: str
    exit_code: int | None

    def __init__(self, reason: str = "", exit_code: int | None = None) -> None:
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {type(reason).__name__}")
        if exit_code is not None and (
            isinstance(exit_code, bool) or not isinstance(exit_code, int)
        ):
            raise TypeError(f"exit_code must be an int or None, got {type(exit_code).__name__}")
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.reason


class Fail(TaskError):
    """A retryable failure: the restart policy and retry budget decide what follows."""


class Fatal(TaskError):
    """A permanent failure: the task is never retried and finishes ``FATAL``."""


class TaskvisorError(Exception):
    """Base of every error the supervisor's API raises."""


class TaskAlreadyExists(TaskvisorError):
    """A task with this name is already registered (or repeated in one batch)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a task named {name!r} is already registered")
        self.name = name

    def __reduce__(self) -> tuple[type[TaskAlreadyExists], tuple[str]]:
        # ``args`` holds the message, not the constructor's arguments: rebuild from ``name``.
        return type(self), (self.name,)


class SupervisorClosed(TaskvisorError):
    """The supervisor's shutdown has begun; it admits nothing more."""


class AlreadyRunning(TaskvisorError):
    """``Supervisor.run`` was called while another ``run`` is active."""


class TaskTerminationTimeout(TaskvisorError):
    """``cancel(..., timeout=...)`` gave up waiting; the stop itself still proceeds."""

    def __init__(self, task_id: int, timeout: float) -> None:
        super().__init__(f"task {task_id} did not finish within {timeout}s of its stop request")
        self.task_id = task_id
        self.timeout = timeout

    def __reduce__(self) -> tuple[type[TaskTerminationTimeout], tuple[int, float]]:
        # ``args`` holds the message, not the constructor's arguments (pickle, copy).
        return type(self), (self.task_id, self.timeout)


class ControllerNotConfigured(TaskvisorError):
    """``submit`` or a controller feature was used on a supervisor built without a controller."""
