"""Per-key admission: slots that run one task at a time, with queue / replace / drop policies.

A slot key maps to a ``_Slot`` only while the slot is busy (it has an owner or queued
work); an idle slot is deleted, so any number of distinct one-shot keys leaves nothing
behind. ``Controller._transition`` is the only writer of a slot's state; it checks every
move against ``_LEGAL`` (and the owner invariant) and raises ``RuntimeError`` otherwise::

    IDLE ──submit──▶ ADMITTING ──registered──▶ RUNNING ──Replace / shutdown──▶ TERMINATING
      ▲                │   ▲                      │                              │
      │   all rejected │   └── owner's cleanup, work queued ◀────────────────────┤
      └────────────────┴────── owner's cleanup, nothing queued ◀─────────────────┘

The next queued submission is admitted only from the owner's cleanup hook, which the
supervisor calls once, after the owner's name is released and its outcome resolved, so two
owners of one slot never exist and a slot never advances twice. Events never drive a slot.

Choices where SPEC §8 is silent (documented behaviour):

- Admission is synchronous: a submission into an idle slot is registered before ``submit``
  returns, and the next queued one before the old owner's cleanup returns. ``ADMITTING``
  therefore lasts one call: it appears in ``CONTROLLER_SLOT_TRANSITION`` events
  (``idle→admitting``, ``admitting→running``; ``admitting→idle`` when every candidate
  was rejected), not in snapshots. Should code run synchronously inside registration (an
  eager task factory) finish the new task or Replace it, the slot handles both: it moves on
  to the next queued submission, or stops the new owner as soon as it is registered.
- Every submission publishes ``CONTROLLER_SUBMITTED`` (with the id its handle carries)
  first. ``TASK_ADD_REQUESTED`` is published when the submission is admitted to the
  supervisor, not when it is queued. Rejections by the controller (``SLOT_BUSY``,
  ``QUEUE_FULL``, ``SUPERSEDED``, ``REMOVED_FROM_QUEUE``, ``SHUTTING_DOWN``) publish only
  ``CONTROLLER_REJECTED``; a duplicate name at admission publishes ``TASK_ADD_REQUESTED``,
  ``TASK_ADD_FAILED`` (``ALREADY_EXISTS``, with the id) and ``CONTROLLER_REJECTED``, and the
  slot moves on to its next queued submission.
- A handle's id is allocated at ``submit`` and becomes the task's id once admitted; a
  rejected submission's id is never reused. A rejected outcome has ``attempts == 0`` and a
  ``reason`` for people.
- ``REPLACE`` into a busy slot rejects the current queue head ``SUPERSEDED`` whatever its
  policy, takes its place, and leaves the rest of the queue in order behind it. It is never
  rejected ``QUEUE_FULL``: it takes the head's place, or the empty head position even with
  ``max_slot_queue=0``.
- ``TERMINATING`` means the controller asked the owner to stop (a Replace, or shutdown: at
  shutdown every running slot goes ``TERMINATING``). An owner stopped by ``cancel``/``remove``
  keeps its slot ``RUNNING`` until its cleanup; a Replace arriving then still moves the slot
  to ``TERMINATING`` and waits for that cleanup.
- ``cancel``/``remove`` look in the registry first (an admitted owner), then in the queues;
  by name they take the oldest queued submission of that name.
- An owner that swallows cancellation is released when the supervisor gives up on it
  (``FORCE_ABORTED``); the slot then moves on although Python may still be running the
  abandoned body: ownership, like the task name, has passed.
- ``ControllerSnapshot.slots`` lists busy slots sorted by key; ``running`` counts slots with
  an owner (``RUNNING`` or ``TERMINATING``), ``queued`` the submissions waiting in queues.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ._context import TaskId, new_task_id
from ._events import EventKind
from ._fanout import Bus
from ._outcome import OutcomeKind, RejectionKind, TaskHandle, TaskOutcome
from ._registry import TaskRecord
from ._spec import TaskSpec
from ._validate import check_int, check_name


class Admission(Protocol):
    """What the controller may ask of its supervisor: the whole of their interface."""

    @property
    def bus(self) -> Bus:
        """Where the controller publishes its events."""

    def name_taken(self, name: str) -> bool:
        """Whether a task of this name is registered."""

    def register(
        self,
        spec: TaskSpec,
        task_id: TaskId,
        future: asyncio.Future[TaskOutcome],
        on_cleanup: Callable[[TaskRecord], None],
    ) -> TaskRecord:
        """Register and start a task whose name is free; ``on_cleanup`` runs after its cleanup."""

    def reject(self, name: str, task_id: TaskId, rejection: RejectionKind) -> None:
        """Publish a ``TASK_ADD_FAILED`` for a task refused at registration."""

    def request_stop(self, rec: TaskRecord) -> None:
        """Ask a registered task to stop (as ``remove`` does)."""

    def handle(self, task_id: TaskId, name: str, future: asyncio.Future[TaskOutcome]) -> TaskHandle:
        """A handle on a submission's outcome."""

    def idle(self) -> None:
        """The controller has become idle (``run`` may be waiting for that)."""


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


class _Submission:
    """One submission: its handle's id and future, and where it goes (internal)."""

    __slots__ = ("future", "id", "slot", "spec")

    def __init__(
        self, task_id: TaskId, spec: TaskSpec, slot: str, future: asyncio.Future[TaskOutcome]
    ) -> None:
        self.id = task_id
        self.spec = spec
        self.slot = slot
        self.future = future


class _Slot:
    """One busy slot: its state, its owner (a registered task) and its FIFO queue (internal).

    The slot is its owner's cleanup hook: calling it with the finished record advances it.
    """

    __slots__ = ("_ctrl", "key", "owner", "queue", "state", "stop_on_admit")

    def __init__(self, key: str, ctrl: Controller) -> None:
        self.key = key
        self._ctrl = ctrl
        self.state = SlotState.IDLE
        self.owner: TaskRecord | None = None
        # Created on first use: most slots never queue anything (one-shot keys).
        self.queue: deque[_Submission] | None = None
        self.stop_on_admit = False  # a Replace arrived while the owner was being registered

    def __call__(self, rec: TaskRecord) -> None:
        self._ctrl._owner_done(self, rec)

    def __repr__(self) -> str:
        return f"<slot {self.key!r} {self.state.value}>"


_IDLE = SlotState.IDLE
_ADMITTING = SlotState.ADMITTING
_RUNNING = SlotState.RUNNING
_TERMINATING = SlotState.TERMINATING
_SUBMITTED = EventKind.CONTROLLER_SUBMITTED
_TRANSITION = EventKind.CONTROLLER_SLOT_TRANSITION

_LEGAL: dict[tuple[SlotState, SlotState], str] = {
    (old, new): f"{old.value}→{new.value}"
    for old, new in (
        (_IDLE, _ADMITTING),  # a submission reaches an idle slot
        (_ADMITTING, _RUNNING),  # the head was registered with the supervisor
        (_ADMITTING, _IDLE),  # every candidate was rejected at admission
        (_RUNNING, _TERMINATING),  # a Replace (or shutdown) asked the owner to stop
        (_RUNNING, _ADMITTING),  # the owner's cleanup is done and work is queued
        (_RUNNING, _IDLE),  # the owner's cleanup is done and nothing is queued
        (_TERMINATING, _ADMITTING),
        (_TERMINATING, _IDLE),
    )
}
"""Every legal slot transition, with its ``CONTROLLER_SLOT_TRANSITION`` reason."""


def _reason(kind: RejectionKind, sub: _Submission, max_queue: int) -> str:
    if kind is RejectionKind.SLOT_BUSY:
        return f"slot {sub.slot!r} is busy"
    if kind is RejectionKind.QUEUE_FULL:
        return f"the queue of slot {sub.slot!r} is full ({max_queue} waiting)"
    if kind is RejectionKind.SUPERSEDED:
        return f"superseded by a newer replace into slot {sub.slot!r}"
    if kind is RejectionKind.REMOVED_FROM_QUEUE:
        return f"removed from the queue of slot {sub.slot!r}"
    if kind is RejectionKind.SHUTTING_DOWN:
        return "the supervisor is shutting down"
    return f"a task named {sub.spec.name!r} is already registered"


class Controller:
    """The slot state machines of one supervisor (internal).

    ``_transition`` is the only writer of a slot's state. ``_admit`` is the only place that
    registers a task: from ``submit`` into a fresh slot, or from the owner's cleanup hook
    (``_owner_done``, reached by calling the ``_Slot``) through ``_admit_queued``.
    ``submit``, ``remove_queued`` and ``close`` change queues.
    """

    __slots__ = ("_by_name", "_closed", "_config", "_max_queue", "_queued", "_slots", "_sup")

    def __init__(self, config: ControllerConfig, admission: Admission) -> None:
        self._config = config
        self._max_queue = config.max_slot_queue
        self._sup = admission
        self._slots: dict[str, _Slot] = {}  # busy slots only: an idle slot is deleted
        self._queued: dict[TaskId, _Submission] = {}  # queued submissions by id
        self._by_name: dict[str, dict[TaskId, _Submission]] = {}  # ... by name, oldest first
        self._closed = False

    @property
    def idle(self) -> bool:
        """Whether no slot has an owner or queued work."""
        return not self._slots

    # ------------------------------------------------------------------ the state machine

    def _transition(self, slot: _Slot, new: SlotState) -> None:
        """Move ``slot`` to ``new``; the one writer of slot state. Illegal moves raise."""
        old = slot.state
        reason = _LEGAL.get((old, new))
        if reason is None:
            raise RuntimeError(f"illegal transition of slot {slot.key!r}: {old.value}→{new.value}")
        if (slot.owner is None) is (new is _RUNNING or new is _TERMINATING):
            raise RuntimeError(f"slot {slot.key!r} cannot be {new.value} with owner {slot.owner!r}")
        if self._slots.get(slot.key) is not slot:
            raise RuntimeError(f"slot {slot.key!r} is not the controller's current slot")
        slot.state = new
        bus = self._sup.bus
        if bus.listening:
            bus.publish(_TRANSITION, slot=slot.key, reason=reason)
        if new is _IDLE:
            if slot.queue:
                raise RuntimeError(f"slot {slot.key!r} cannot go idle with queued work")
            del self._slots[slot.key]
            if not self._slots:
                self._sup.idle()

    def _admit(self, slot: _Slot, sub: _Submission) -> bool:
        """Register ``sub`` as the owner of ``slot`` (``ADMITTING``); False if it did not stay.

        False: ``sub`` was rejected (shutdown, duplicate name) or already finished, and the
        slot is still ``ADMITTING`` without an owner.
        """
        sup = self._sup
        if self._closed:
            self._reject(sub, RejectionKind.SHUTTING_DOWN)
            return False
        name = sub.spec.name
        bus = sup.bus
        if bus.listening:
            bus.publish(EventKind.TASK_ADD_REQUESTED, name)
        if sup.name_taken(name):
            sup.reject(name, sub.id, RejectionKind.ALREADY_EXISTS)
            self._reject(sub, RejectionKind.ALREADY_EXISTS)
            return False
        slot.stop_on_admit = False
        rec = sup.register(sub.spec, sub.id, sub.future, slot)
        slot.owner = rec
        self._transition(slot, _RUNNING)
        if rec.finalized:
            # Its cleanup ran inside `_register` (an eager task factory ran the body to its end
            # there) and `_owner_done` left the slot to us.
            slot.owner = None
            self._transition(slot, _ADMITTING)
            return False
        if slot.stop_on_admit:  # a Replace arrived while `_register` ran
            slot.stop_on_admit = False
            self._transition(slot, _TERMINATING)
            sup.request_stop(rec)
        return True

    def _admit_queued(self, slot: _Slot) -> None:
        """``ADMITTING``: admit the first queued submission that stays, or go idle."""
        queue = slot.queue
        while queue:
            sub = queue.popleft()
            self._unindex(sub)
            if self._admit(slot, sub):
                return
        self._transition(slot, _IDLE)

    def _owner_done(self, slot: _Slot, rec: TaskRecord) -> None:
        """The owner's cleanup hook: ``rec`` is finished and its name released. Advance."""
        if slot.owner is not rec:
            if slot.owner is None and slot.state is _ADMITTING:
                return  # cleaned up while `_register` was still running: `_admit` goes on
            raise RuntimeError(
                f"cleanup of task {int(rec.id)} ({rec.name!r}), which does not own slot "
                f"{slot.key!r} ({slot.state.value}, owner {slot.owner!r})"
            )
        slot.owner = None
        if slot.queue:
            self._transition(slot, _ADMITTING)
            self._admit_queued(slot)
        else:
            self._transition(slot, _IDLE)

    # ------------------------------------------------------------------ queue bookkeeping

    def _enqueue(self, slot: _Slot, sub: _Submission, *, front: bool = False) -> None:
        queue = slot.queue
        if queue is None:
            queue = slot.queue = deque()
        if front:
            queue.appendleft(sub)
        else:
            queue.append(sub)
        self._queued[sub.id] = sub
        same = self._by_name.get(sub.spec.name)
        if same is None:
            self._by_name[sub.spec.name] = {sub.id: sub}
        else:
            same[sub.id] = sub

    def _unindex(self, sub: _Submission) -> None:
        del self._queued[sub.id]
        same = self._by_name[sub.spec.name]
        del same[sub.id]
        if not same:
            del self._by_name[sub.spec.name]

    def _reject(self, sub: _Submission, kind: RejectionKind) -> None:
        bus = self._sup.bus
        if bus.listening:
            bus.publish(
                EventKind.CONTROLLER_REJECTED,
                sub.spec.name,
                sub.id,
                outcome=OutcomeKind.REJECTED,
                slot=sub.slot,
                rejection=kind,
            )
        sub.future.set_result(
            TaskOutcome(OutcomeKind.REJECTED, _reason(kind, sub, self._max_queue), rejection=kind)
        )

    # ------------------------------------------------------------------ called by the supervisor

    def submit(self, cspec: ControllerSpec) -> TaskHandle:
        """Admit, queue or reject one submission; the handle is returned at once."""
        if not isinstance(cspec, ControllerSpec):
            raise TypeError(f"spec must be a ControllerSpec, got {type(cspec).__name__}")
        sup = self._sup
        spec = cspec.spec
        key = cspec.slot
        sub = _Submission(new_task_id(), spec, key, asyncio.get_running_loop().create_future())
        handle = sup.handle(sub.id, spec.name, sub.future)
        bus = sup.bus
        if bus.listening:
            bus.publish(_SUBMITTED, spec.name, sub.id, slot=key)
        if self._closed:
            self._reject(sub, RejectionKind.SHUTTING_DOWN)
            return handle
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(key, self)
            self._transition(slot, _ADMITTING)
            if not self._admit(slot, sub):
                self._admit_queued(slot)
            return handle
        policy = cspec.policy
        if policy is AdmissionPolicy.QUEUE:
            if (0 if slot.queue is None else len(slot.queue)) >= self._max_queue:
                self._reject(sub, RejectionKind.QUEUE_FULL)
            else:
                self._enqueue(slot, sub)
        elif policy is AdmissionPolicy.REPLACE:
            if slot.queue:
                displaced = slot.queue.popleft()
                self._unindex(displaced)
                self._reject(displaced, RejectionKind.SUPERSEDED)
            self._enqueue(slot, sub, front=True)
            if slot.state is _RUNNING:
                owner = slot.owner
                assert owner is not None
                self._transition(slot, _TERMINATING)
                sup.request_stop(owner)
            elif slot.state is _ADMITTING:
                slot.stop_on_admit = True
        else:
            self._reject(sub, RejectionKind.SLOT_BUSY)
        return handle

    def remove_queued(self, key: TaskId | int | str) -> bool:
        """Take a queued submission out (``REMOVED_FROM_QUEUE``); True if one was found.

        By name, the oldest queued submission of that name is taken.
        """
        if isinstance(key, str):
            same = self._by_name.get(key)
            if not same:
                return False
            sub = next(iter(same.values()))
        else:
            found = self._queued.get(key)  # type: ignore[call-overload]
            if found is None:
                return False
            sub = found
        queue = self._slots[sub.slot].queue
        assert queue is not None
        queue.remove(sub)
        self._unindex(sub)
        self._reject(sub, RejectionKind.REMOVED_FROM_QUEUE)
        return True

    def close(self) -> None:
        """Shutdown began: reject every queued submission ``SHUTTING_DOWN``."""
        if self._closed:
            return
        self._closed = True
        for slot in list(self._slots.values()):
            queue = slot.queue
            while queue:
                sub = queue.popleft()
                self._unindex(sub)
                self._reject(sub, RejectionKind.SHUTTING_DOWN)
            if slot.state is _RUNNING:
                self._transition(slot, _TERMINATING)  # the supervisor stops every task now

    def snapshot(self) -> ControllerSnapshot:
        """The busy slots (sorted by key) and totals; idle slots are not kept."""
        views = [
            SlotView(
                s.key,
                s.state,
                None if s.owner is None else s.owner.id,
                0 if s.queue is None else len(s.queue),
            )
            for s in sorted(self._slots.values(), key=_slot_key)
        ]
        running = sum(1 for v in views if v.owner is not None)
        queued = sum(v.queued for v in views)
        return ControllerSnapshot(views, running, queued)


def _slot_key(slot: _Slot) -> str:
    return slot.key
