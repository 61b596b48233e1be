"""Heard by default: what a supervisor logs when nobody configured a ``LogSubscriber``.

SPEC §13: with ``SupervisorConfig(log=True)`` (the default) and no ``LogSubscriber`` among
its subscribers, a supervisor reports through the stdlib logger ``taskvisor``, at WARNING
and above only, what someone must hear about: failed, timed-out and hung attempts (an
unexpected exception with its traceback), ``FAILED``/``FATAL`` outcomes, an exceeded
restart intensity, an exceeded grace period and subscriber panics. An application that
configured no logging sees them through Python's last-resort handler.

The voice is called directly where those things happen (``_attempt``, the supervisor's
cleanup and shutdown, the bus's panic report), not through the fan-out: the success path
never reaches it, so it costs nothing there, and its records keep the order of the facts.
"""

from __future__ import annotations

import logging

from ._errors import TaskError
from ._outcome import OutcomeKind, TaskOutcome

LOGGER = logging.getLogger("taskvisor")

_REPORTED_OUTCOMES = frozenset({OutcomeKind.FAILED, OutcomeKind.FATAL})


class Voice:
    """The default log of one supervisor (internal)."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger = LOGGER) -> None:
        self.logger = logger

    def attempt_failed(
        self, task: str, attempt: int, reason: str, error: BaseException | None
    ) -> None:
        """An attempt raised; an unexpected exception comes with its traceback."""
        exc_info = None if error is None or isinstance(error, TaskError) else error
        self.logger.warning(
            "task %r attempt %s failed: %s", task, attempt, reason, exc_info=exc_info
        )

    def attempt_timed_out(self, task: str, attempt: int, timeout: float | None) -> None:
        """An attempt ran past its timeout."""
        self.logger.warning("task %r attempt %s timed out after %ss", task, attempt, timeout)

    def finished(self, task: str, outcome: TaskOutcome) -> None:
        """A task finished; only ``FAILED`` and ``FATAL`` outcomes are worth a record."""
        if outcome.kind in _REPORTED_OUTCOMES:
            self.logger.error(
                "task %r %s after %s attempt%s: %s",
                task,
                "failed" if outcome.kind is OutcomeKind.FAILED else "failed fatally",
                outcome.attempts,
                "" if outcome.attempts == 1 else "s",
                outcome.reason,
            )

    def grace_exceeded(self, reason: str) -> None:
        """Tasks were still running when the grace period ended (or a second signal came)."""
        self.logger.warning("shutdown: %s", reason)

    def subscriber_panicked(self, subscriber: str, reason: str) -> None:
        """A subscriber's ``on_event`` raised."""
        self.logger.error("subscriber %r raised: %s", subscriber, reason)
