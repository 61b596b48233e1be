"""Supervisor-wide settings (``SupervisorConfig``) and the result of a shutdown."""

# No ``from __future__ import annotations``: the exported classes' ``__module__`` reads
# ``taskvisor``, so their field annotations must be real objects for ``get_type_hints``.

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._outcome import TaskOutcome
from ._validate import check_duration, check_int


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """Settings of one supervisor.

    ``grace``: seconds a stopped task gets before it is force-stopped.
    ``subscriber_shutdown_timeout``: one shared deadline for draining every subscriber at
    shutdown. ``max_concurrent``: global limit on attempts running at once (``None``:
    unlimited). ``handle_signals``: whether ``start`` (so ``run`` and ``async with`` too)
    turns SIGINT/SIGTERM into a graceful shutdown (a second signal skips the rest of the grace
    period). ``log``: with no ``LogSubscriber`` among the subscribers, report failures,
    ``FAILED``/``FATAL`` outcomes, exceeded grace and subscriber panics through the stdlib
    logger ``taskvisor`` at WARNING and above.
    """

    grace: float = 60.0
    subscriber_shutdown_timeout: float = 5.0
    max_concurrent: int | None = None
    handle_signals: bool = True
    log: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "grace", check_duration("grace", self.grace))
        object.__setattr__(
            self,
            "subscriber_shutdown_timeout",
            check_duration("subscriber_shutdown_timeout", self.subscriber_shutdown_timeout),
        )
        check_int("max_concurrent", self.max_concurrent, minimum=1, allow_none=True)
        if not isinstance(self.handle_signals, bool):
            raise TypeError(
                f"handle_signals must be a bool, got {type(self.handle_signals).__name__}"
            )
        if not isinstance(self.log, bool):
            raise TypeError(f"log must be a bool, got {type(self.log).__name__}")


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What a shutdown found: whether the grace period was exceeded, and how tasks ended."""

    grace_exceeded: bool
    stuck: tuple[str, ...]
    """Sorted names of the tasks still running when the grace period ended."""
    grace: float
    outcomes: Mapping[str, TaskOutcome] = field(
        default_factory=lambda: MappingProxyType({}), compare=False
    )
    """By name: every task registered when the shutdown began and, for ``run()``, every task
    of its batch and those added meanwhile."""
