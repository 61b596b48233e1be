"""What a subscriber is: the ``Subscriber`` base class and how any object is accepted as one."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._events import Event, EventKind

DEFAULT_QUEUE_CAPACITY = 1024


class Subscriber:
    """Base class for event subscribers; override ``on_event`` (plain or ``async def``).

    Class attributes tune delivery: ``queue_capacity`` (default 1024, clamped to >= 1) bounds
    this subscriber's own queue, and ``blocking = True`` runs a sync ``on_event`` in a
    dedicated thread instead of on the event loop. ``name`` defaults to the class name.

    Two optional extensions (taskvisor's own, beyond the subscriber protocol): ``event_kinds``,
    a set of ``EventKind``, delivers only events of those kinds (``None``, the default: all);
    events of other kinds are neither queued nor counted against its capacity, and when no
    subscriber wants a kind its events are not even built (``Supervisor.event_counts()``
    still counts them). ``on_attach(supervisor)``, if defined, is called once by every
    ``Supervisor`` the subscriber is given to, when that supervisor is built.
    """

    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    blocking: bool = False
    event_kinds: frozenset[EventKind] | None = None

    @property
    def name(self) -> str:
        """The name used in diagnostics (``SUBSCRIBER_PANICKED``, ``SUBSCRIBER_OVERFLOW``)."""
        return type(self).__name__

    def on_event(self, event: Event) -> Awaitable[None] | None:
        """Handle one event. Raising is reported as ``SUBSCRIBER_PANICKED``."""
        raise NotImplementedError


EventCallback = Callable[[Event], Any]


@dataclass(frozen=True, slots=True)
class SubscriberRef:
    """A subscriber after validation: what the fan-out needs to drive it (internal)."""

    name: str
    capacity: int
    call: EventCallback
    is_async: bool
    blocking: bool
    kinds: frozenset[EventKind] | None = None


def _is_async(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


def as_subscriber(obj: object) -> SubscriberRef:
    """Validate ``obj`` as a subscriber; ``TypeError``/``ValueError`` name what is wrong."""
    if isinstance(obj, type):
        raise TypeError(f"subscriber must be an instance, got the class {obj.__name__}")
    on_event = getattr(obj, "on_event", None)
    if getattr(on_event, "__func__", None) is Subscriber.on_event:
        raise TypeError(f"subscriber {type(obj).__name__} must override on_event(event)")
    if callable(on_event):
        call: EventCallback = on_event
        default_name = type(obj).__name__
    elif callable(obj):
        call = obj
        default_name = getattr(obj, "__name__", type(obj).__name__)
    else:
        raise TypeError(
            f"subscriber must have a callable on_event(event) or be callable, "
            f"got {type(obj).__name__}"
        )
    name = getattr(obj, "name", None)
    if name is None:
        name = default_name
    if not isinstance(name, str):
        raise TypeError(f"subscriber name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("subscriber name must be a non-empty str")
    capacity = getattr(obj, "queue_capacity", DEFAULT_QUEUE_CAPACITY)
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"subscriber queue_capacity must be an int, got {type(capacity).__name__}")
    blocking = getattr(obj, "blocking", False)
    if not isinstance(blocking, bool):
        raise TypeError(f"subscriber blocking must be a bool, got {type(blocking).__name__}")
    is_async = _is_async(call)
    if blocking and is_async:
        raise TypeError(f"subscriber {name!r}: blocking = True needs a sync on_event")
    kinds = _check_kinds(name, getattr(obj, "event_kinds", None))
    return SubscriberRef(name, max(1, capacity), call, is_async, blocking, kinds)


def _check_kinds(name: str, kinds: object) -> frozenset[EventKind] | None:
    if kinds is None:
        return None
    if isinstance(kinds, str | EventKind) or not isinstance(kinds, Iterable):
        raise TypeError(
            f"subscriber {name!r}: event_kinds must be a set of EventKind or None, "
            f"got {type(kinds).__name__}"
        )
    wanted = frozenset(kinds)
    for kind in wanted:
        if not isinstance(kind, EventKind):
            raise TypeError(
                f"subscriber {name!r}: event_kinds must hold EventKind members, got {kind!r}"
            )
    if not wanted:
        raise ValueError(
            f"subscriber {name!r}: event_kinds must name at least one EventKind (None: all)"
        )
    return wanted
