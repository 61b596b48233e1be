"""``MemoryCoordinator``: the in-process store, and the reference for the other two.

The "database" is a ``_Shared`` object per ``prefix`` in this process (so two
``MemoryCoordinator(prefix="x")`` are two nodes of one cluster), its clock is
``time.time()``, and each method below is what one SQL function or Lua script does in the
other stores. It is the executable form of the grant rule in ``_store.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from ._engine import LeaseEngine
from ._protocol import Holding
from ._store import (
    Granted,
    Mode,
    Queued,
    Refused,
    Renewed,
    RoundResult,
    Store,
    TicketStatus,
    check_prefix,
)


@dataclass(slots=True)
class _Key:
    fence: int = 0  # never reset: the fencing counter
    holder: str | None = None
    node: str = ""
    expires: float = 0.0
    stop: bool = False
    queue: list[_Ticket] = field(default_factory=list)  # sorted by rank


@dataclass(slots=True)
class _Ticket:
    id: int
    key: str
    rank: int
    instance: str
    expires: float
    superseded: bool = False


class _Shared:
    """One in-process "database": every ``MemoryStore`` of one prefix points here."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: dict[str, _Key] = {}
        self.tickets: dict[int, _Ticket] = {}
        self.beats: dict[str, tuple[str, float]] = {}  # instance -> (node, seen)
        self.seq = 0
        self.stores: set[MemoryStore] = set()

    def prune(self, key: str, now: float) -> _Key:
        k = self.keys.get(key)
        if k is None:
            k = self.keys[key] = _Key()
        if k.holder is not None and k.expires <= now:
            k.holder, k.node, k.stop = None, "", False
        if k.queue and any(t.expires <= now for t in k.queue):
            for t in k.queue:
                if t.expires <= now:
                    self.tickets.pop(t.id, None)
            k.queue = [t for t in k.queue if t.expires > now]
        return k

    def take(self, k: _Key, instance: str, node: str, lease: float, now: float) -> Granted:
        k.fence += 1
        k.holder, k.node, k.expires, k.stop = instance, node, now + lease, False
        return Granted(k.fence, k.expires)

    def enqueue(self, key: str, rank: int, instance: str, lease: float, now: float) -> _Ticket:
        self.seq += 1
        t = _Ticket(self.seq, key, rank, instance, now + lease)
        self.tickets[t.id] = t
        q = self.keys[key].queue
        q.append(t)
        q.sort(key=lambda x: x.rank)
        return t

    def drop(self, t: _Ticket) -> None:
        self.tickets.pop(t.id, None)
        k = self.keys.get(t.key)
        if k is not None and t in k.queue:
            k.queue.remove(t)

    def take_ticket(
        self, ticket: int, instance: str, node: str, lease: float, now: float
    ) -> Granted | TicketStatus:
        t = self.tickets.get(ticket)
        if t is None or t.instance != instance:
            return TicketStatus.GONE
        k = self.prune(t.key, now)
        if ticket not in self.tickets:
            return TicketStatus.GONE  # it had expired
        if t.superseded:
            self.drop(t)
            return TicketStatus.SUPERSEDED
        head = _head(k)
        if k.holder is None and head is t:
            self.drop(t)
            return self.take(k, instance, node, lease, now)
        return TicketStatus.WAITING

    def hint(self, key: str) -> None:
        for store in self.stores:
            store.deliver(key)


_SHARED: dict[str, _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _head(k: _Key) -> _Ticket | None:
    for t in k.queue:
        if not t.superseded:
            return t
    return None


class MemoryStore(Store):
    """The in-process store (see the module docstring)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.target = f"memory:{prefix}"
        with _SHARED_LOCK:
            self._db = _SHARED.setdefault(prefix, _Shared())
        self._loop: asyncio.AbstractEventLoop | None = None

    def deliver(self, key: str) -> None:
        loop, hint = self._loop, self.hint
        if loop is not None and hint is not None and not loop.is_closed():
            loop.call_soon_threadsafe(hint, key)

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()
        with self._db.lock:
            self._db.stores.add(self)

    async def disconnect(self) -> None:
        with self._db.lock:
            self._db.stores.discard(self)

    async def acquire(
        self, key: str, instance: str, node: str, lease: float, mode: Mode, max_queue: int
    ) -> Granted | Queued | Refused:
        db = self._db
        hints: list[str] = []
        with db.lock:
            now = time.time()
            k = db.prune(key, now)
            head = _head(k)
            if k.holder is None and head is None:
                return db.take(k, instance, node, lease, now)
            if mode is Mode.TRY:
                return Refused.BUSY
            if mode is Mode.REPLACE:
                if k.holder is not None and not k.stop:
                    k.stop = True
                    hints.append(key)
                if head is not None:
                    head.superseded = True
                    hints.append(key)
                    if k.holder is None:
                        granted = db.take(k, instance, node, lease, now)
                        db.hint(key)
                        return granted
                    rank = head.rank
                else:
                    db.seq += 1
                    rank = db.seq
            else:
                if max_queue >= 0 and sum(not t.superseded for t in k.queue) >= max_queue:
                    return Refused.FULL
                db.seq += 1
                rank = db.seq
            t = db.enqueue(key, rank, instance, lease, now)
            for h in hints:
                db.hint(h)
            return Queued(t.id)

    async def take(
        self, ticket: int, instance: str, node: str, lease: float
    ) -> Granted | TicketStatus:
        with self._db.lock:
            return self._db.take_ticket(ticket, instance, node, lease, time.time())

    async def round(
        self, instance: str, node: str, lease: float, keys: list[str], tickets: list[int]
    ) -> RoundResult:
        db = self._db
        with db.lock:
            now = time.time()
            db.beats[instance] = (node, now)
            renewed: dict[str, Renewed] = {}
            for key in keys:
                k = db.keys.get(key)
                if k is not None and k.holder == instance and k.expires > now:
                    k.expires = now + lease
                    renewed[key] = Renewed(k.fence, k.expires, k.stop)
            result: dict[int, Granted | TicketStatus] = {}
            for ticket in tickets:
                t = db.tickets.get(ticket)
                live = t is not None and t.instance == instance and t.expires > now
                if live and t is not None and not t.superseded:
                    t.expires = now + lease
                result[ticket] = db.take_ticket(ticket, instance, node, lease, now)
            return RoundResult(renewed, result)

    async def release(self, key: str, instance: str, fence: int) -> bool:
        db = self._db
        with db.lock:
            now = time.time()
            k = db.keys.get(key)
            if k is None or k.holder != instance or k.fence != fence:
                return False
            live = k.expires > now
            k.holder, k.node, k.stop = None, "", False
            db.hint(key)
            return live

    async def cancel(self, ticket: int, instance: str) -> None:
        db = self._db
        with db.lock:
            t = db.tickets.get(ticket)
            if t is not None and t.instance == instance:
                db.drop(t)
                db.hint(t.key)

    async def close_instance(self, instance: str) -> None:
        db = self._db
        with db.lock:
            for key, k in db.keys.items():
                if k.holder == instance:
                    k.holder, k.node, k.stop = None, "", False
                    db.hint(key)
            for t in [t for t in db.tickets.values() if t.instance == instance]:
                db.drop(t)
                db.hint(t.key)
            db.beats.pop(instance, None)

    async def holders(self) -> list[Holding]:
        with self._db.lock:
            now = time.time()
            return [
                Holding(key, k.node, k.fence, k.expires)
                for key, k in sorted(self._db.keys.items())
                if k.holder is not None and k.expires > now
            ]

    async def waiting(self, key: str) -> int:
        with self._db.lock:
            now = time.time()
            k = self._db.keys.get(key)
            return 0 if k is None else sum(t.expires > now and not t.superseded for t in k.queue)

    async def nodes(self, within: float) -> list[str]:
        with self._db.lock:
            now = time.time()
            return sorted({n for n, seen in self._db.beats.values() if seen > now - within})


class MemoryCoordinator(LeaseEngine):
    """Ownership of keys within one process: the default, and the reference implementation.

    Every ``MemoryCoordinator`` with the same ``prefix`` in this process shares one set of
    keys, so two of them behave like two nodes of a cluster (with ``time.time()`` as the
    "server clock"). The semantics are exactly those of the database backends.

    Args:
        node: The node name shown in ``holders()`` and ``nodes()`` (default
            ``<hostname>-<pid>``).
        lease: Lease length in seconds, finite and > 0 (default 15.0).
        prefix: The namespace shared by cooperating coordinators (default ``"taskvisor"``).

    Raises:
        TypeError: An argument has the wrong type (the message names it).
        ValueError: An argument is out of range (the message names it).
    """

    def __init__(
        self, *, node: str | None = None, lease: float = 15.0, prefix: str = "taskvisor"
    ) -> None:
        super().__init__(MemoryStore(check_prefix(prefix)), node=node, lease=lease)
