"""The coordinator's vocabulary: the protocol, leases, holdings, signals and errors.

Everything here is plain data or an interface; the behaviour lives in ``_engine.py`` (the
client side every backend shares) and in the stores (``_memory.py``, ``_postgres.py``,
``_redis.py``).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._errors import TaskvisorError

if TYPE_CHECKING:
    from types import TracebackType


@dataclass(frozen=True, slots=True)
class Holding:
    """One key held somewhere in the cluster, as the database sees it.

    Attributes:
        key: The key (``task:<name>`` or ``slot:<slot>`` under a supervisor).
        node: The node name of the coordinator holding it.
        fence: The fencing token of the current holding.
        expires_at: When the lease runs out unless renewed, in the database server's epoch
            seconds (not this host's clock).
    """

    key: str
    node: str
    fence: int
    expires_at: float


class LeaseState(enum.StrEnum):
    """Where a lease is in its life: ``HELD`` → ``RELEASED`` or ``LOST`` (final)."""

    HELD = "held"
    RELEASED = "released"
    LOST = "lost"


class LeaseSignal(enum.StrEnum):
    """What a lease's ``on_signal`` callback is told.

    ``RENEW_FAILED`` may come any number of times while the lease is held (one per failed
    renewal round); ``STOP_REQUESTED`` at most once (another node asked for the key with
    ``replace=True``); ``LOST`` at most once, last (the holder must stop using the key now).
    """

    RENEW_FAILED = "renew_failed"
    STOP_REQUESTED = "stop_requested"
    LOST = "lost"


class LostReason(enum.StrEnum):
    """Why a lease was lost (``Lease.lost_reason``)."""

    OVERDUE = "renewal overdue"
    """No renewal succeeded for lease × 2/3 (self-fencing: database slow or unreachable,
    or this process was frozen)."""
    EXPIRED = "expired"
    """The database no longer lists this holding (it expired there, and may be taken)."""
    CLOSED = "coordinator closed"
    """The coordinator was closed while the lease was held."""


SignalCallback = Callable[["Lease", LeaseSignal], None]
"""``on_signal(lease, signal)``: called on the event loop; must not block or raise."""


class Lease:
    """One holding of a key by one coordinator instance; handed out by ``acquire``.

    The lease is valid while ``state`` is ``HELD`` and the last successful renewal was sent
    less than lease × 2/3 ago (``valid``). The coordinator renews it in the background; the
    holder learns of trouble through the ``on_signal`` callback given to ``acquire`` and
    reads the details here.

    Attributes:
        key: The key held.
        fence: The fencing token: strictly greater than every earlier token of this key.
        node: The node name of the coordinator that holds it.
    """

    __slots__ = (
        "_deadline",
        "_on_signal",
        "expires_at",
        "fence",
        "key",
        "lost_reason",
        "node",
        "state",
        "stop_requested",
    )

    key: str
    fence: int
    node: str
    state: LeaseState
    stop_requested: bool
    lost_reason: LostReason | None
    expires_at: float
    _deadline: float
    _on_signal: SignalCallback | None

    def __init__(
        self,
        key: str,
        fence: int,
        node: str,
        expires_at: float,
        deadline: float,
        on_signal: SignalCallback | None,
    ) -> None:
        self.key = key
        self.fence = fence
        self.node = node
        self.state = LeaseState.HELD
        self.stop_requested = False
        self.lost_reason = None
        self.expires_at = expires_at
        self._deadline = deadline
        self._on_signal = on_signal

    @property
    def valid(self) -> bool:
        """True while held and within lease × 2/3 of the last renewal sent (monotonic)."""
        if self.state is not LeaseState.HELD:
            return False
        return asyncio.get_running_loop().time() < self._deadline

    @property
    def valid_until(self) -> float:
        """The loop time (``asyncio`` monotonic clock) at which the lease stops being valid.

        Moves forward with each successful renewal; compare with
        ``asyncio.get_running_loop().time()``.
        """
        return self._deadline

    def __repr__(self) -> str:
        return (
            f"<Lease key={self.key!r} fence={self.fence} node={self.node!r} "
            f"state={self.state.value}{' stop_requested' if self.stop_requested else ''}>"
        )


@runtime_checkable
class Coordinator(Protocol):
    """Shared ownership of keys across processes: the interface a supervisor uses.

    Implemented by ``MemoryCoordinator`` (one process), ``PostgresCoordinator`` and
    ``RedisCoordinator``. See the module docstring of ``taskvisor.cluster`` for the contract.
    """

    @property
    def node(self) -> str:
        """This coordinator's node name (shown in ``holders()`` and ``nodes()``)."""
        ...

    @property
    def lease(self) -> float:
        """Lease length in seconds (renewed every lease / 3)."""
        ...

    @property
    def instance(self) -> str:
        """A random id of this coordinator instance: leases belong to it, not to the node."""
        ...

    async def open(self) -> None:
        """Connect, create the tables or keys if needed, start renewing."""
        ...

    async def close(self, *, release: bool = True) -> None:
        """Stop renewing and disconnect; with ``release`` (default) free every key first."""
        ...

    async def acquire(
        self,
        key: str,
        *,
        replace: bool = False,
        max_queue: int | None = None,
        on_signal: SignalCallback | None = None,
    ) -> Lease:
        """Wait (FIFO across the cluster) until ``key`` is ours; return the lease."""
        ...

    async def try_acquire(
        self, key: str, *, on_signal: SignalCallback | None = None
    ) -> Lease | None:
        """Take ``key`` only if nobody holds it or waits for it; else ``None`` at once."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Give the key back; ``True`` only if the lease was still held and valid."""
        ...

    async def holders(self) -> list[Holding]:
        """Every live holding in the cluster, sorted by key."""
        ...

    async def waiting(self, key: str) -> int:
        """How many ``acquire`` calls wait for ``key`` across the cluster."""
        ...

    async def nodes(self) -> list[str]:
        """Node names whose coordinators were seen within one lease, sorted."""
        ...

    async def __aenter__(self) -> Coordinator: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class CoordinatorError(TaskvisorError):
    """Base of the errors a coordinator raises."""


class CoordinatorUnavailable(CoordinatorError):
    """The database could not be reached or used; the message names the target."""

    def __init__(self, target: str, detail: str) -> None:
        super().__init__(f"coordinator cannot use {target}: {detail}")
        self.target = target
        self.detail = detail

    def __reduce__(self) -> tuple[type[CoordinatorUnavailable], tuple[str, str]]:
        return type(self), (self.target, self.detail)


class CoordinatorClosed(CoordinatorError):
    """The coordinator is not open (never opened, or closed)."""


class Superseded(CoordinatorError):
    """A waiting ``acquire`` lost its place at the head of the queue to a ``replace``."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the wait for {key!r} was superseded by a replace")
        self.key = key

    def __reduce__(self) -> tuple[type[Superseded], tuple[str]]:
        return type(self), (self.key,)


class QueueFull(CoordinatorError):
    """``acquire(max_queue=n)`` found ``n`` or more tickets already waiting for the key."""

    def __init__(self, key: str, max_queue: int) -> None:
        super().__init__(f"the queue for {key!r} already holds {max_queue} or more waiters")
        self.key = key
        self.max_queue = max_queue

    def __reduce__(self) -> tuple[type[QueueFull], tuple[str, int]]:
        return type(self), (self.key, self.max_queue)
