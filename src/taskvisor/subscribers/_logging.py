"""``LogSubscriber``: one standard ``logging`` record per event."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from .. import Event, EventKind, OutcomeKind, Subscriber, TaskError

EXTRA_PREFIX = "taskvisor_"
"""Prefix of every ``extra`` key: ``LogRecord`` attributes (``name``, ``msg``, ``args``…, and
``taskName`` since Python 3.12) can never be clobbered, and other libraries' extras neither."""

_E = EventKind
_DEBUG, _INFO, _WARNING, _ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR

DEFAULT_LEVELS: Mapping[EventKind, int] = MappingProxyType(
    {
        _E.TASK_ADD_REQUESTED: _DEBUG,
        _E.TASK_ADDED: _INFO,
        _E.TASK_ADD_FAILED: _WARNING,
        _E.ATTEMPT_STARTING: _DEBUG,
        _E.ATTEMPT_SUCCEEDED: _INFO,
        _E.ATTEMPT_FAILED: _ERROR,
        _E.ATTEMPT_TIMED_OUT: _WARNING,
        _E.ATTEMPT_CANCELED: _INFO,
        _E.BACKOFF_SCHEDULED: _DEBUG,
        _E.TASK_FINISHED: _INFO,  # refined by outcome, see DEFAULT_OUTCOME_LEVELS
        _E.TASK_REMOVE_REQUESTED: _DEBUG,
        _E.TASK_REMOVED: _INFO,
        _E.SHUTDOWN_REQUESTED: _INFO,
        _E.ALL_STOPPED_WITHIN_GRACE: _INFO,
        _E.GRACE_EXCEEDED: _WARNING,
        _E.SUBSCRIBER_PANICKED: _ERROR,
        _E.SUBSCRIBER_OVERFLOW: _WARNING,
        _E.CONTROLLER_SUBMITTED: _INFO,
        _E.CONTROLLER_REJECTED: _WARNING,
        _E.CONTROLLER_SLOT_TRANSITION: _DEBUG,
    }
)
"""The default level of each event kind."""

DEFAULT_OUTCOME_LEVELS: Mapping[OutcomeKind, int] = MappingProxyType(
    {
        OutcomeKind.COMPLETED: _INFO,
        OutcomeKind.CANCELED: _INFO,
        OutcomeKind.FAILED: _WARNING,
        OutcomeKind.FORCE_ABORTED: _WARNING,
        OutcomeKind.REJECTED: _WARNING,
        OutcomeKind.FATAL: _ERROR,
    }
)
"""The default level of ``TASK_FINISHED``, by outcome."""


def _check_level(key: object, level: object) -> int:
    if isinstance(level, str):
        levels = logging.getLevelNamesMapping()
        if level.upper() not in levels:
            raise ValueError(f"level_map[{key!s}]: unknown logging level name {level!r}")
        return levels[level.upper()]
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(
            f"level_map[{key!s}] must be an int level or a level name, got {type(level).__name__}"
        )
    if level < 0:
        raise ValueError(f"level_map[{key!s}] must be >= 0, got {level}")
    return level


def _build_levels(
    level_map: Mapping[EventKind | OutcomeKind, int | str] | None,
) -> tuple[dict[EventKind, int], dict[OutcomeKind, int]]:
    kinds = dict(DEFAULT_LEVELS)
    outcomes = dict(DEFAULT_OUTCOME_LEVELS)
    if level_map is None:
        return kinds, outcomes
    if not isinstance(level_map, Mapping):
        raise TypeError(f"level_map must be a mapping or None, got {type(level_map).__name__}")
    finished: int | None = None
    explicit: dict[OutcomeKind, int] = {}
    for key, level in level_map.items():
        if isinstance(key, EventKind):
            kinds[key] = _check_level(key, level)
            if key is EventKind.TASK_FINISHED:
                finished = kinds[key]
        elif isinstance(key, OutcomeKind):
            explicit[key] = _check_level(key, level)
        else:
            raise TypeError(f"level_map keys must be EventKind or OutcomeKind members, got {key!r}")
    if finished is not None:  # an EventKind.TASK_FINISHED entry applies to every outcome…
        outcomes = dict.fromkeys(OutcomeKind, finished)
    outcomes.update(explicit)  # …unless a more specific OutcomeKind entry says otherwise
    return kinds, outcomes


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f}s"


def _message(e: Event) -> tuple[str, tuple[object, ...]]:
    """A %-style template (constant per kind, so log tools can group) and its arguments."""
    k = e.kind
    task = e.task
    if k is _E.ATTEMPT_STARTING:
        return "task %r attempt %s starting", (task, e.attempt)
    if k is _E.ATTEMPT_SUCCEEDED:
        return "task %r attempt %s succeeded in %s", (task, e.attempt, _seconds(e.duration))
    if k is _E.ATTEMPT_FAILED:
        if e.exit_code is not None:
            return "task %r attempt %s failed after %s: %s (exit code %s)", (
                task,
                e.attempt,
                _seconds(e.duration),
                e.reason,
                e.exit_code,
            )
        return "task %r attempt %s failed after %s: %s", (
            task,
            e.attempt,
            _seconds(e.duration),
            e.reason,
        )
    if k is _E.ATTEMPT_TIMED_OUT:
        return "task %r attempt %s timed out after %s", (task, e.attempt, _seconds(e.timeout))
    if k is _E.ATTEMPT_CANCELED:
        return "task %r attempt %s canceled after %s", (task, e.attempt, _seconds(e.duration))
    if k is _E.BACKOFF_SCHEDULED:
        if e.reason is not None:
            return "task %r retrying in %s after attempt %s failed: %s", (
                task,
                _seconds(e.delay),
                e.attempt,
                e.reason,
            )
        return "task %r running again in %s after attempt %s", (
            task,
            _seconds(e.delay),
            e.attempt,
        )
    if k is _E.TASK_FINISHED:
        outcome = e.outcome.value if e.outcome is not None else "unknown"
        if e.reason is None:
            return "task %r finished: %s", (task, outcome)
        if e.exit_code is None:
            return "task %r finished: %s (%s)", (task, outcome, e.reason)
        return "task %r finished: %s (%s, exit code %s)", (task, outcome, e.reason, e.exit_code)
    if k is _E.TASK_ADD_REQUESTED:
        return "task %r add requested", (task,)
    if k is _E.TASK_ADDED:
        return "task %r added (id %s)", (task, e.task_id)
    if k is _E.TASK_ADD_FAILED:
        return "task %r rejected: %s", (task, e.rejection.value if e.rejection else None)
    if k is _E.TASK_REMOVE_REQUESTED:
        return "task %r stop requested", (task,)
    if k is _E.TASK_REMOVED:
        return "task %r removed", (task,)
    if k is _E.SHUTDOWN_REQUESTED:
        return "shutdown requested: %s", (e.reason,)
    if k is _E.ALL_STOPPED_WITHIN_GRACE:
        return "all tasks stopped within the grace period", ()
    if k is _E.GRACE_EXCEEDED:
        # The reason says what happened: the grace period ran out, or a second signal cut
        # it short ("never as an expired grace period", SPEC §13).
        return "shutdown: %s", (e.reason,)
    if k is _E.SUBSCRIBER_PANICKED:
        return "subscriber %r raised: %s", (task, e.reason)
    if k is _E.SUBSCRIBER_OVERFLOW:
        return "subscriber %r dropped an event (queue %s)", (task, e.reason)
    if k is _E.CONTROLLER_SUBMITTED:
        return "task %r submitted to slot %r", (task, e.slot)
    if k is _E.CONTROLLER_REJECTED:
        return "task %r rejected by slot %r: %s", (
            task,
            e.slot,
            e.rejection.value if e.rejection else None,
        )
    if k is _E.CONTROLLER_SLOT_TRANSITION:
        return "slot %r: %s", (e.slot, e.reason)
    return "%s", (k.value,)  # a kind added later: still one readable line


def _extra(e: Event) -> dict[str, object]:
    # Every field, always present (None when absent), so a format string such as
    # "%(taskvisor_task)s" never fails on a record that lacks it.
    p = EXTRA_PREFIX
    return {
        p + "seq": e.seq,
        p + "at": e.at,
        p + "kind": e.kind.value,
        p + "task": e.task,
        p + "task_id": None if e.task_id is None else int(e.task_id),
        p + "attempt": e.attempt,
        p + "reason": e.reason,
        p + "exit_code": e.exit_code,
        p + "delay": e.delay,
        p + "timeout": e.timeout,
        p + "duration": e.duration,
        p + "backoff_source": None if e.backoff_source is None else e.backoff_source.value,
        p + "outcome": None if e.outcome is None else e.outcome.value,
        p + "rejection": None if e.rejection is None else e.rejection.value,
        p + "slot": e.slot,
        p + "error": e.error,
        p + "fence": e.fence,
        p + "node": e.node,
        p + "dropped": e.dropped,
    }


class LogSubscriber(Subscriber):
    """Writes one ``logging`` record per event, for people and for structured log pipelines.

    ``logger``: a ``logging.Logger``, a logger name, or ``None`` for the ``taskvisor`` logger.
    ``level_map``: overrides of the default levels, keyed by ``EventKind`` (or by
    ``OutcomeKind`` for ``TASK_FINISHED``), valued by an int level or a level name.

    The message is a sentence (``task 'db' attempt 2 failed after 0.013s: refused``) built
    from a constant template per kind. Every ``Event`` field is also in the record's
    ``extra`` under the ``taskvisor_`` prefix (``record.taskvisor_task``,
    ``record.taskvisor_kind``…; enums as their labels, ``None`` when absent), so JSON and
    structlog formatters get them as fields.

    ``on_event`` runs on the event loop (like any logging call in async code): with slow
    handlers use a ``logging.handlers.QueueHandler``, or pass ``blocking=True`` to log from a
    dedicated thread.
    """

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        level_map: Mapping[EventKind | OutcomeKind, int | str] | None = None,
        *,
        blocking: bool = False,
    ) -> None:
        if logger is None:
            logger = logging.getLogger("taskvisor")
        elif isinstance(logger, str):
            if not logger:
                raise ValueError("logger must be a Logger, a non-empty logger name or None")
            logger = logging.getLogger(logger)
        elif not isinstance(logger, logging.Logger):
            raise TypeError(
                f"logger must be a logging.Logger, a name or None, got {type(logger).__name__}"
            )
        if not isinstance(blocking, bool):
            raise TypeError(f"blocking must be a bool, got {type(blocking).__name__}")
        self.logger = logger
        self.blocking = blocking
        self._levels, self._outcome_levels = _build_levels(level_map)

    def level_for(self, event: Event) -> int:
        """The level this subscriber logs ``event`` at."""
        if event.kind is EventKind.TASK_FINISHED and event.outcome is not None:
            return self._outcome_levels[event.outcome]
        return self._levels.get(event.kind, logging.INFO)

    def on_event(self, event: Event) -> None:
        """Log ``event`` (nothing is built when the logger is disabled for its level)."""
        level = self.level_for(event)
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        template, args = _message(event)
        error = event.error
        # An unexpected exception comes with its traceback; a Fail/Fatal's reason says it all.
        exc_info = None if error is None or isinstance(error, TaskError) else error
        logger.log(level, template, *args, exc_info=exc_info, extra=_extra(event))
