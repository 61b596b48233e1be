"""taskvisor: an in-process task supervisor for asyncio.

Write an ordinary ``async def``; the supervisor runs it, restarts it by policy with backoff
and jitter, bounds each attempt with a timeout, caps concurrency, gives every task one final
outcome, shuts down within a grace period and narrates every step as typed events.
"""

from contextlib import suppress as _suppress

from ._config import ShutdownReport, SupervisorConfig
from ._context import TaskContext, TaskId
from ._controller import (
    AdmissionPolicy,
    ControllerConfig,
    ControllerSnapshot,
    ControllerSpec,
    SlotState,
    SlotView,
)
from ._errors import (
    AlreadyRunning,
    ControllerNotConfigured,
    Fail,
    Fatal,
    SupervisorClosed,
    TaskAlreadyExists,
    TaskError,
    TaskTerminationTimeout,
    TaskvisorError,
)
from ._events import BackoffSource, Event, EventKind
from ._fanout import EventStream
from ._outcome import OutcomeKind, RejectionKind, TaskHandle, TaskOutcome
from ._policies import BackoffPolicy, JitterPolicy, RestartMode, RestartPolicy
from ._registry import TaskInfo, TaskState
from ._spec import TaskDefaults, TaskSpec
from ._subscriber import Subscriber
from ._supervisor import Supervisor
from ._threaded import threaded
from .subscribers import JsonLinesSubscriber, LogSubscriber  # after the names they import

__all__ = [
    "AdmissionPolicy",
    "AlreadyRunning",
    "BackoffPolicy",
    "BackoffSource",
    "ControllerConfig",
    "ControllerNotConfigured",
    "ControllerSnapshot",
    "ControllerSpec",
    "Event",
    "EventKind",
    "EventStream",
    "Fail",
    "Fatal",
    "JitterPolicy",
    "JsonLinesSubscriber",
    "LogSubscriber",
    "OutcomeKind",
    "RejectionKind",
    "RestartMode",
    "RestartPolicy",
    "ShutdownReport",
    "SlotState",
    "SlotView",
    "Subscriber",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorConfig",
    "TaskAlreadyExists",
    "TaskContext",
    "TaskDefaults",
    "TaskError",
    "TaskHandle",
    "TaskId",
    "TaskInfo",
    "TaskOutcome",
    "TaskSpec",
    "TaskState",
    "TaskTerminationTimeout",
    "TaskvisorError",
    "threaded",
]

__version__ = "0.1.0"

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("taskvisor."):
        with _suppress(AttributeError, TypeError):
            _obj.__module__ = "taskvisor"
del _name, _obj, _suppress
