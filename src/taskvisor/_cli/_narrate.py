"""What ``taskvisor run`` tells the person at the terminal: a subscriber on ``taskvisor``.

Used instead of the generic ``LogSubscriber`` when the file declares no ``"log"`` subscriber.
Each fact is said once: a failed attempt's record carries its reason (and the exit code
within it), the retry that follows says only when (``task 'web' retrying in 1.6 s``, at
INFO), and a task's end says its outcome without repeating the reason. Bookkeeping events
(added, removed, attempt starting) are at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .._events import Event, EventKind
from .._outcome import OutcomeKind

__all__ = ["narrator", "seconds"]

_E = EventKind
_BAD = frozenset({OutcomeKind.FAILED, OutcomeKind.FATAL, OutcomeKind.FORCE_ABORTED})


def seconds(value: float | None) -> str:
    """``1.6 s``, ``0.25 s``, ``12 s``: short, for people."""
    if value is None:
        return "? s"
    if value >= 10:
        return f"{value:.0f} s"
    if value >= 1:
        return f"{value:.1f} s"
    return f"{value:.2g} s"


def _mentions_code(reason: str | None, code: int) -> bool:
    return reason is not None and f"code {code}" in reason


def narrator(grace: float, *, events: bool, hidden: str) -> Callable[[Event], None]:
    """The subscriber: shutdown narration always; lifecycle records too when ``events``."""
    log = logging.getLogger("taskvisor")
    cli = logging.getLogger("taskvisor.cli")

    def taskvisor_cli(event: Event) -> None:
        kind = event.kind
        if kind is _E.SHUTDOWN_REQUESTED:
            if event.reason and event.reason.startswith("signal"):
                cli.info(
                    "%s: stopping every task (grace %gs); press Ctrl+C again to force",
                    event.reason,
                    grace,
                )
            elif event.reason != "natural completion":
                cli.info("stopping every task (grace %gs)", grace)
            return
        if kind is _E.GRACE_EXCEEDED:
            cli.warning("shutdown: %s", event.reason)  # the reason says why (SPEC §13)
            return
        if not events or event.task == hidden:
            return
        task = event.task
        if kind is _E.ATTEMPT_FAILED:
            reason = event.reason
            code = event.exit_code
            suffix = "" if code is None or _mentions_code(reason, code) else f" (exit code {code})"
            log.warning(
                "task %r attempt %s failed after %s: %s%s",
                task,
                event.attempt,
                seconds(event.duration),
                reason,
                suffix,
            )
        elif kind is _E.ATTEMPT_TIMED_OUT:
            log.warning(
                "task %r attempt %s timed out after %s", task, event.attempt, seconds(event.timeout)
            )
        elif kind is _E.BACKOFF_SCHEDULED:
            if event.reason is not None:
                log.info("task %r retrying in %s", task, seconds(event.delay))
            else:
                log.debug("task %r running again in %s", task, seconds(event.delay))
        elif kind is _E.ATTEMPT_SUCCEEDED:
            log.info(
                "task %r attempt %s succeeded in %s", task, event.attempt, seconds(event.duration)
            )
        elif kind is _E.ATTEMPT_CANCELED:
            log.debug("task %r attempt %s stopped", task, event.attempt)
        elif kind is _E.TASK_FINISHED:
            outcome = event.outcome
            level = logging.WARNING if outcome in _BAD else logging.INFO
            log.log(level, "task %r finished: %s", task, outcome.value if outcome else "?")
        elif kind is _E.SUBSCRIBER_PANICKED:
            log.error("subscriber %r raised: %s", task, event.reason)
        elif kind is _E.SUBSCRIBER_OVERFLOW:
            log.warning("subscriber %r dropped events (queue %s)", task, event.reason)
        elif kind in (_E.TASK_ADD_FAILED, _E.CONTROLLER_REJECTED):
            log.warning("task %r rejected", task)
        elif kind.value not in _QUIET:
            # A kind this narrator does not know yet (the core grows): one readable line.
            log.info(
                "%s: %s%s", kind.value, task or "", f": {event.reason}" if event.reason else ""
            )
        else:
            log.debug("task %r: %s", task, kind.value)

    return taskvisor_cli


_QUIET = frozenset(
    {
        "task_add_requested",
        "task_added",
        "attempt_starting",
        "task_remove_requested",
        "task_removed",
        "all_stopped_within_grace",
        "controller_submitted",
        "controller_slot_transition",
    }
)
