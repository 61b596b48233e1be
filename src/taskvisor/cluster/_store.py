"""The seam between the engine and a database: what one round trip can ask and answer.

A ``Store`` is the server side of the protocol, written once per backend (memory,
PostgreSQL, Redis) with the same semantics; the client side (renewal loop, self-fencing,
waiters) is ``_engine.LeaseEngine``, shared by all three. Every method is one round trip and
every time in it is the database server's clock.

Per key the store keeps: a fencing counter that is never deleted (each grant adds one), the
current holder (coordinator instance, node, expiry, stop-requested flag), and a FIFO queue of
tickets ordered by a server-side sequence. A holder or ticket whose expiry has passed counts
as absent and is cleaned up by whoever touches the key next.

Grant rule (``acquire`` and ``take``): a key is granted to the caller when it has no live
holder and the caller is the head of its live queue (or the queue is empty for a new
``acquire``). ``REPLACE`` asks the live holder to stop, marks the live head ticket
superseded and takes its rank (so it is served next); into a free key it is a plain grant.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import math
import os
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._validate import check_duration, check_name
from ._protocol import Holding


class Mode(enum.IntEnum):
    """How ``Store.acquire`` treats a key that is busy."""

    QUEUE = 0
    REPLACE = 1
    TRY = 2


@dataclass(frozen=True, slots=True)
class Granted:
    """The key is the caller's: its new token and the server's expiry (epoch seconds)."""

    fence: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Queued:
    """The caller waits with this ticket."""

    ticket: int


class Refused(enum.Enum):
    """``acquire`` took nothing and queued nothing."""

    BUSY = "busy"  # TRY on a held or queued key
    FULL = "full"  # QUEUE with ``max_queue`` waiters already


class TicketStatus(enum.Enum):
    """A ticket that was not granted."""

    WAITING = "waiting"
    GONE = "gone"  # expired or deleted: the waiter must queue again
    SUPERSEDED = "superseded"  # displaced from the head by a REPLACE (and now deleted)


@dataclass(frozen=True, slots=True)
class Renewed:
    """One holding the round renewed."""

    fence: int
    expires_at: float
    stop_requested: bool


@dataclass(slots=True)
class RoundResult:
    """What one renewal round learned: holdings still ours, and each ticket's fate."""

    renewed: dict[str, Renewed]
    tickets: dict[int, Granted | TicketStatus]


class StoreUnavailable(Exception):
    """A round trip failed for a reason that may pass (connection lost, timeout)."""


HintCallback = Callable[[str], None]
"""Called with a key when the store hears (best effort) that something changed for it."""


class Store(abc.ABC):
    """One backend's server side. Each method is one round trip; see the module docstring."""

    target: str
    """Where the store points, for messages: ``host:port/db``, never a password."""

    def __init__(self) -> None:
        self.hint: HintCallback | None = None

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect and create the schema idempotently; raise ``CoordinatorUnavailable``."""

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Drop every connection; idempotent."""

    @abc.abstractmethod
    async def acquire(
        self, key: str, instance: str, node: str, lease: float, mode: Mode, max_queue: int
    ) -> Granted | Queued | Refused:
        """Grant, queue (``max_queue < 0``: unbounded) or refuse, by the grant rule."""

    @abc.abstractmethod
    async def take(
        self, ticket: int, instance: str, node: str, lease: float
    ) -> Granted | TicketStatus:
        """Grant the ticket's key if the ticket is the live head and the key is free."""

    @abc.abstractmethod
    async def round(
        self, instance: str, node: str, lease: float, keys: list[str], tickets: list[int]
    ) -> RoundResult:
        """Heartbeat; renew ``keys`` still held live by ``instance``; extend and try ``tickets``."""

    @abc.abstractmethod
    async def release(self, key: str, instance: str, fence: int) -> bool:
        """Free the key if ``instance`` holds it with ``fence``; True if it was still live."""

    @abc.abstractmethod
    async def cancel(self, ticket: int, instance: str) -> None:
        """Delete the ticket."""

    @abc.abstractmethod
    async def close_instance(self, instance: str) -> None:
        """Free every key of ``instance``, delete its tickets and its heartbeat."""

    @abc.abstractmethod
    async def holders(self) -> list[Holding]:
        """Every live holding, sorted by key."""

    @abc.abstractmethod
    async def waiting(self, key: str) -> int:
        """How many live, not superseded tickets wait for ``key``."""

    @abc.abstractmethod
    async def nodes(self, within: float) -> list[str]:
        """Node names with a heartbeat in the last ``within`` seconds, sorted."""

    def _hint(self, key: str) -> None:
        if self.hint is not None:
            self.hint(key)


# --------------------------------------------------------------------------- argument checks

_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,39}\Z")
MAX_KEY = 1024
SCHEMA_VERSION = 1


def check_lease(value: Any) -> float:
    """``lease``: a finite number of seconds > 0."""
    lease = check_duration("lease", value, positive=True)
    assert lease is not None
    return lease


def check_node(value: Any) -> str:
    """``node``: a non-empty str of at most 200 characters; default hostname-pid."""
    if value is None:
        return f"{socket.gethostname()}-{os.getpid()}"
    check_name("node", value)
    if len(value) > 200:
        raise ValueError(f"node must be at most 200 characters, got {len(value)}")
    return str(value)


def check_prefix(value: Any) -> str:
    """``prefix``: lower-case letters, digits and ``_``, starting with a letter, ≤ 40 long."""
    check_name("prefix", value)
    if not _PREFIX.match(value):
        raise ValueError(
            "prefix must be lower-case letters, digits and '_', start with a letter and be "
            f"at most 40 characters, got {value!r}"
        )
    return str(value)


def check_key(value: Any) -> str:
    """``key``: a non-empty str of at most 1024 characters without NUL."""
    check_name("key", value)
    if len(value) > MAX_KEY:
        raise ValueError(f"key must be at most {MAX_KEY} characters, got {len(value)}")
    if "\x00" in value:
        raise ValueError("key must not contain NUL characters")
    return str(value)


def check_max_queue(value: Any) -> int:
    """``max_queue``: ``None`` (unbounded, returned as -1) or an int ≥ 0."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_queue must be an int or None, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"max_queue must be >= 0, got {value!r}")
    return value


def check_timeout(name: str, value: Any) -> float:
    """A finite number of seconds > 0."""
    v = check_duration(name, value, positive=True)
    assert v is not None
    assert math.isfinite(v)
    return v


# --------------------------------------------------------------------------- batching

Item = tuple[str, tuple[Any, ...], "asyncio.Future[Any]"]


class Batcher:
    """Sends the calls made in one loop iteration together: one pipelined round trip.

    Many tasks acquiring and releasing at once would each pay a round trip and the driver's
    per-call cost; ``submit`` queues a call and the next loop iteration sends every queued
    call through ``flush`` (a Redis pipeline, a psycopg pipeline). A caller cancelled while
    its call is queued or in flight leaves the call to run (the engine undoes what it
    granted, or the grant expires).
    """

    def __init__(self, flush: Callable[[list[Item]], Awaitable[None]], limit: int = 256) -> None:
        self._flush = flush
        self._limit = limit
        self._pending: list[Item] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()

    async def call(self, name: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((name, args, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start)
        return await fut

    def _start(self) -> None:
        self._scheduled = False
        while self._pending:
            batch, self._pending = self._pending[: self._limit], self._pending[self._limit :]
            task = asyncio.ensure_future(self._run(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _run(self, batch: list[Item]) -> None:
        try:
            await self._flush(batch)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else StoreUnavailable("cancelled")
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(error)
                    fut.exception()  # a cancelled caller would leave it unretrieved
            if not isinstance(exc, Exception):
                raise
