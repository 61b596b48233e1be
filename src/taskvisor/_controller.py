"""Per-key admission: slots that run one task at a time, with queue / replace / drop policies.

(Skeleton: value types are final; the ``Controller`` logic is being built.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._context import TaskId
from ._outcome import TaskHandle
from ._spec import TaskSpec
from ._validate import check_int, check_name

if TYPE_CHECKING:
    from ._supervisor import Supervisor


class AdmissionPolicy(enum.StrEnum):
    """What a submission does when its slot is busy."""

    QUEUE = "queue"
    REPLACE = "replace"
    DROP_IF_RUNNING = "drop_if_running"


class SlotState(enum.StrEnum):
    """The state of one controller slot."""

    IDLE = "idle"
    ADMITTING = "admitting"
    RUNNING = "running"
    TERMINATING = "terminating"


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Controller settings: ``max_slot_queue`` bounds each slot's queue (owner not counted)."""

    max_slot_queue: int = 100

    def __post_init__(self) -> None:
        check_int("max_slot_queue", self.max_slot_queue, minimum=0)


@dataclass(frozen=True, slots=True)
class ControllerSpec:
    """A task spec plus its admission policy and slot (default: the task name)."""

    spec: TaskSpec
    policy: AdmissionPolicy
    slot: str

    def __post_init__(self) -> None:
        if not isinstance(self.spec, TaskSpec):
            raise TypeError(f"spec must be a TaskSpec, got {type(self.spec).__name__}")
        if not isinstance(self.policy, AdmissionPolicy):
            raise TypeError(f"policy must be an AdmissionPolicy, got {type(self.policy).__name__}")
        check_name("slot", self.slot)

    @classmethod
    def queue(cls, spec: TaskSpec, slot: str | None = None) -> ControllerSpec:
        """Run after the slot's current owner and queue (FIFO)."""
        return cls._make(spec, AdmissionPolicy.QUEUE, slot)

    @classmethod
    def replace(cls, spec: TaskSpec, slot: str | None = None) -> ControllerSpec:
        """Stop the slot's owner and run next, displacing any queue head."""
        return cls._make(spec, AdmissionPolicy.REPLACE, slot)

    @classmethod
    def drop_if_running(cls, spec: TaskSpec, slot: str | None = None) -> ControllerSpec:
        """Run only if the slot is idle with nothing queued; else reject ``SLOT_BUSY``."""
        return cls._make(spec, AdmissionPolicy.DROP_IF_RUNNING, slot)

    @classmethod
    def _make(cls, spec: TaskSpec, policy: AdmissionPolicy, slot: str | None) -> ControllerSpec:
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"spec must be a TaskSpec, got {type(spec).__name__}")
        return cls(spec, policy, spec.name if slot is None else slot)


@dataclass(frozen=True, slots=True)
class SlotView:
    """One slot in a ``ControllerSnapshot``."""

    slot: str
    state: SlotState
    owner: TaskId | None
    queued: int


@dataclass(frozen=True, slots=True)
class ControllerSnapshot:
    """The controller's slots (busy ones only), and totals of running and queued work."""

    slots: list[SlotView]
    running: int
    queued: int


class Controller:
    """The slot state machines of one supervisor (internal)."""

    def __init__(self, config: ControllerConfig, supervisor: Supervisor) -> None:
        self._config = config
        self._sup = supervisor

    @property
    def idle(self) -> bool:
        """Whether no slot has an owner or queued work."""
        return True

    def submit(self, cspec: ControllerSpec) -> TaskHandle:
        """Admit, queue or reject one submission; the handle is returned at once."""
        raise NotImplementedError

    def remove_queued(self, key: TaskId | int | str) -> bool:
        """Take a queued submission out (``REMOVED_FROM_QUEUE``); True if one was found."""
        return False

    def close(self) -> None:
        """Shutdown began: reject every queued submission ``SHUTTING_DOWN``."""

    def snapshot(self) -> ControllerSnapshot:
        """The current slots and totals."""
        return ControllerSnapshot([], 0, 0)
