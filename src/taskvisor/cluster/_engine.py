"""The client side every coordinator shares: leases, waiters, renewal rounds, self-fencing.

One ``LeaseEngine`` per coordinator instance owns:

- ``_held``: the leases it holds (``HELD``), keyed by key;
- ``_waiters``: its waiting ``acquire`` calls, keyed by ticket;
- one background task, ``_rounds``, that every ``lease / 3`` sends ONE round trip for all of
  them (``Store.round``): heartbeat, renewal of every held key, extension of every ticket,
  and a grant attempt for each ticket. A store hint (LISTEN/NOTIFY, pub/sub) about a key
  makes the waiters of that key ask at once (``Store.take``) and, if the key is held here,
  starts a round at once (a stop request); polling stays the backstop;
- one timer, the watchdog, set to the earliest lease deadline: a lease's deadline is the
  moment its last successful renewal (or grant) was *sent*, by the loop's monotonic clock,
  plus lease × 2/3. When the timer fires — on time, or at once after the process was frozen
  — every lease past its deadline is ``LOST`` (self-fencing). The server lets the lease run
  until the time the renewal *arrived* plus the lease, so the holder always gives up at
  least lease / 3 before anyone else can be granted the key.

A lost lease is never renewed again and ``release`` of it returns ``False`` (it still frees
the key on the server if nobody has taken it, so the next holder need not wait for expiry).

Round trips that fail or hang are abandoned after their budget (``StoreUnavailable``): the
renewal loop retries every lease / 10 and never dies; ``acquire`` and ``try_acquire`` retry
until the store answers or they are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from ._protocol import (
    CoordinatorClosed,
    CoordinatorUnavailable,
    Holding,
    Lease,
    LeaseSignal,
    LeaseState,
    LostReason,
    QueueFull,
    SignalCallback,
    Superseded,
)
from ._store import (
    Granted,
    Mode,
    Queued,
    Refused,
    RoundResult,
    Store,
    StoreUnavailable,
    TicketStatus,
    check_key,
    check_lease,
    check_max_queue,
    check_node,
)

_log = logging.getLogger("taskvisor.cluster")
T = TypeVar("T")

_NEW, _OPEN, _CLOSING, _CLOSED = "new", "open", "closing", "closed"


@dataclass(eq=False, slots=True)
class _Waiter:
    key: str
    future: asyncio.Future[Lease]
    on_signal: SignalCallback | None
    ticket: int | None = None
    polling: bool = False
    requeue: asyncio.Task[None] | None = field(default=None)


class LeaseEngine:
    """The shared implementation of ``Coordinator`` over one ``Store``."""

    def __init__(self, store: Store, *, node: str | None, lease: float) -> None:
        self._lease = check_lease(lease)
        self._node = check_node(node)
        self._store = store
        self._instance = uuid.uuid4().hex
        self._state = _NEW
        self._held: dict[str, Lease] = {}
        self._waiters: dict[int, _Waiter] = {}
        self._homeless: set[_Waiter] = set()  # waiters re-queueing (no ticket at the moment)
        self._background: set[asyncio.Future[Any]] = set()
        # Tickets whose acquire was cancelled while a round trip was in flight: a grant that
        # still arrives for one is released at once (ticket -> (key, round number)).
        self._orphans: dict[int, tuple[str, int]] = {}
        self._round_no = 0
        self._rounds_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ public properties

    @property
    def node(self) -> str:
        """This coordinator's node name (shown in ``holders()`` and ``nodes()``)."""
        return self._node

    @property
    def lease(self) -> float:
        """Lease length in seconds; renewals every lease / 3, self-fencing at lease × 2/3."""
        return self._lease

    @property
    def instance(self) -> str:
        """The random id of this instance; leases belong to it, never to the node name."""
        return self._instance

    @property
    def target(self) -> str:
        """Where the coordinator points (``host:port/db`` or ``memory:<prefix>``)."""
        return self._store.target

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._store.target} node={self._node!r} "
            f"lease={self._lease} {self._state} held={len(self._held)} "
            f"waiting={len(self._waiters) + len(self._homeless)}>"
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, create tables or keys if missing, and start the renewal loop.

        Raises:
            CoordinatorUnavailable: The database cannot be reached or used (the message
                names the target, never a password).
            CoordinatorClosed: The coordinator was already opened or closed.
        """
        if self._state != _NEW:
            raise CoordinatorClosed(f"{self!r} can be opened once")
        self._loop = asyncio.get_running_loop()
        self._state = _OPEN  # claimed before the first await: a second open() fails
        try:
            await self._store.connect()
        except BaseException:
            self._state = _CLOSED
            await self._store.disconnect()
            raise
        self._store.hint = self._on_hint
        self._wake = asyncio.Event()
        self._rounds_task = asyncio.create_task(self._rounds(), name=f"{self._node}:leases")

    async def close(self, *, release: bool = True) -> None:
        """Stop renewing, end every wait, and disconnect. Idempotent.

        Args:
            release: Free every held key and delete every ticket on the server first
                (default). ``False`` leaves them to expire, as a crash would.

        Leases still held are reported ``LOST`` (``LostReason.CLOSED``); waiting
        ``acquire`` calls raise ``CoordinatorClosed``.
        """
        if self._state in (_CLOSING, _CLOSED):
            return
        if self._state == _NEW:
            self._state = _CLOSED
            return
        self._state = _CLOSING
        self._store.hint = None
        if self._rounds_task is not None:
            self._rounds_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rounds_task
        if self._watchdog is not None:
            self._watchdog.cancel()
        closed = CoordinatorClosed(f"{self!r} was closed")
        for waiter in [*self._waiters.values(), *self._homeless]:
            if waiter.requeue is not None:
                waiter.requeue.cancel()
            if not waiter.future.done():
                waiter.future.set_exception(closed)
                waiter.future.exception()  # retrieved: a cancelled waiter won't log it
        self._waiters.clear()
        self._homeless.clear()
        for lease in list(self._held.values()):
            self._lose(lease, LostReason.CLOSED)
        if release:
            try:
                await self._call_detached(self._store.close_instance, self._instance)
            except StoreUnavailable as exc:
                _log.warning("%s: could not release keys at close (%s); they expire", self, exc)
        if self._background:
            await asyncio.wait(self._background, timeout=self._lease)
        for task in self._background:
            task.cancel()
        await self._store.disconnect()
        self._state = _CLOSED

    async def __aenter__(self) -> LeaseEngine:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ acquiring

    async def acquire(
        self,
        key: str,
        *,
        replace: bool = False,
        max_queue: int | None = None,
        on_signal: SignalCallback | None = None,
    ) -> Lease:
        """Wait until ``key`` is this coordinator's, in FIFO order across the cluster.

        Args:
            key: The key (1–1024 characters).
            replace: Ask the current holder's node to stop (its lease gets
                ``STOP_REQUESTED``), displace the queue's head (its ``acquire`` raises
                ``Superseded``) and be served next. Into a free key it is a plain grant.
            max_queue: Raise ``QueueFull`` instead of waiting when this many tickets
                already wait for the key (``None``: unbounded). Ignored with ``replace``.
            on_signal: ``on_signal(lease, signal)``, called on the event loop after this
                call has returned, for ``RENEW_FAILED``, ``STOP_REQUESTED`` and ``LOST``.

        Returns:
            The lease, already renewed in the background.

        Raises:
            Superseded: A ``replace`` by someone else took this waiter's place at the head.
            QueueFull: ``max_queue`` waiters were already there.
            CoordinatorClosed: The coordinator is not open, or was closed meanwhile.

        Cancelling the call removes its ticket (or releases a key granted meanwhile). While
        the database is unreachable the call keeps waiting; a ticket that expired meanwhile
        is queued again at the tail.
        """
        key = check_key(key)
        if not isinstance(replace, bool):
            raise TypeError(f"replace must be a bool, got {type(replace).__name__}")
        limit = check_max_queue(max_queue)
        _check_callback(on_signal)
        mode = Mode.REPLACE if replace else Mode.QUEUE
        result, sent = await self._first_ask(key, mode, limit)
        if isinstance(result, Granted):
            return self._grant(key, result, sent, on_signal)
        if result is Refused.FULL:
            raise QueueFull(key, limit)
        assert isinstance(result, Queued)
        loop = self._running_loop()
        waiter = _Waiter(key, loop.create_future(), on_signal, result.ticket)
        self._waiters[result.ticket] = waiter
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise

    async def try_acquire(
        self, key: str, *, on_signal: SignalCallback | None = None
    ) -> Lease | None:
        """Take ``key`` only if nobody holds it and nobody waits for it (DROP_IF_RUNNING).

        Args:
            key: The key.
            on_signal: As for ``acquire``.

        Returns:
            The lease, or ``None`` at once when the key is held or queued anywhere.
        """
        key = check_key(key)
        _check_callback(on_signal)
        result, sent = await self._first_ask(key, Mode.TRY, -1)
        if isinstance(result, Granted):
            return self._grant(key, result, sent, on_signal)
        return None

    async def _first_ask(
        self, key: str, mode: Mode, limit: int
    ) -> tuple[Granted | Queued | Refused, float]:
        self._check_open()
        loop = self._running_loop()
        while True:
            self._check_open()
            sent = loop.time()
            task = asyncio.ensure_future(
                self._store.acquire(key, self._instance, self._node, self._lease, mode, limit)
            )
            try:
                async with asyncio.timeout(self._budget):
                    # shielded: a grant or ticket that arrives after we gave up is undone
                    return await asyncio.shield(task), sent
            except asyncio.CancelledError:
                task.add_done_callback(self._undo_first_ask(key))
                raise
            except TimeoutError:
                task.add_done_callback(self._undo_first_ask(key))
                continue  # hung: ask again
            except StoreUnavailable as exc:
                _log.debug("%s: acquire %r: %s; retrying", self, key, exc)
                await asyncio.sleep(self._retry)

    def _undo_first_ask(self, key: str) -> Callable[[asyncio.Future[Any]], None]:
        def undo(task: asyncio.Future[Any]) -> None:
            if task.cancelled() or task.exception() is not None:
                return
            result = task.result()
            if isinstance(result, Granted):
                self._spawn(self._store.release(key, self._instance, result.fence))
            elif isinstance(result, Queued):
                self._spawn(self._store.cancel(result.ticket, self._instance))

        return undo

    def _grant(
        self, key: str, granted: Granted, sent: float, on_signal: SignalCallback | None
    ) -> Lease:
        lease = Lease(
            key, granted.fence, self._node, granted.expires_at, sent + self._fence_after, on_signal
        )
        self._held[key] = lease
        self._arm()
        return lease

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiting ``acquire`` was cancelled: drop its ticket (or the key granted since)."""
        self._homeless.discard(waiter)
        if waiter.requeue is not None:
            waiter.requeue.cancel()
        if waiter.ticket is not None and self._waiters.get(waiter.ticket) is waiter:
            del self._waiters[waiter.ticket]
            self._orphans[waiter.ticket] = (waiter.key, self._round_no)
            self._spawn(self._store.cancel(waiter.ticket, self._instance))
        fut = waiter.future
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            lease = fut.result()
            if lease.state is LeaseState.HELD:
                self._spawn(self.release(lease))

    # ------------------------------------------------------------------ releasing

    async def release(self, lease: Lease) -> bool:
        """Give a key back.

        Args:
            lease: A lease from this coordinator.

        Returns:
            ``True`` if the lease was held and valid until now and the server confirmed;
            ``False`` if it was already released or lost (the server copy is still freed
            if nobody has taken the key since) or the server could not be reached (the
            holding then expires by itself).
        """
        if not isinstance(lease, Lease):
            raise TypeError(f"lease must be a Lease, got {type(lease).__name__}")
        if lease.state is LeaseState.RELEASED:
            return False
        valid = lease.valid
        if lease.state is LeaseState.HELD:
            lease.state = LeaseState.RELEASED
            if self._held.get(lease.key) is lease:
                del self._held[lease.key]
        if self._state != _OPEN:
            return False
        try:
            freed = await self._call(self._store.release, lease.key, self._instance, lease.fence)
        except StoreUnavailable as exc:
            _log.debug("%s: release %r: %s", self, lease.key, exc)
            return False
        return valid and freed

    # ------------------------------------------------------------------ views

    async def holders(self) -> list[Holding]:
        """Every live holding in the cluster, sorted by key.

        Raises:
            CoordinatorUnavailable: The database did not answer within lease / 3.
        """
        self._check_open()
        return await self._view(self._store.holders)

    async def waiting(self, key: str) -> int:
        """How many ``acquire`` calls wait for ``key`` across the cluster (its queue length).

        Raises:
            CoordinatorUnavailable: The database did not answer within lease / 3.
        """
        key = check_key(key)
        self._check_open()
        return await self._view(self._store.waiting, key)

    async def nodes(self) -> list[str]:
        """Nodes whose coordinators sent a heartbeat within one lease, sorted.

        Raises:
            CoordinatorUnavailable: The database did not answer within lease / 3.
        """
        self._check_open()
        return await self._view(self._store.nodes, self._lease)

    async def _view(self, op: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return await self._call_detached(op, *args)
        except StoreUnavailable as exc:
            raise CoordinatorUnavailable(self._store.target, str(exc)) from None

    # ------------------------------------------------------------------ the renewal loop

    @property
    def _period(self) -> float:
        return self._lease / 3

    @property
    def _fence_after(self) -> float:
        return self._lease * 2 / 3

    @property
    def _budget(self) -> float:
        return self._lease / 3

    @property
    def _retry(self) -> float:
        return self._lease / 10

    async def _rounds(self) -> None:
        loop = self._running_loop()
        assert self._wake is not None
        while True:
            self._wake.clear()
            self._round_no += 1
            if self._orphans:  # a grant can only be in flight for two rounds
                self._orphans = {
                    t: v for t, v in self._orphans.items() if v[1] >= self._round_no - 2
                }
            held = list(self._held.values())
            tickets = list(self._waiters)
            keys = [lease.key for lease in held]
            sent = loop.time()
            try:
                result = await self._call_detached(
                    self._store.round, self._instance, self._node, self._lease, keys, tickets
                )
            except StoreUnavailable as exc:
                _log.debug("%s: renewal failed: %s", self, exc)
                for lease in held:
                    if lease.state is LeaseState.HELD:
                        _signal(lease, LeaseSignal.RENEW_FAILED)
                pause = self._retry
            except Exception:  # a bug must not end renewals: log it, count it as a failure
                _log.exception("%s: renewal round failed", self)
                pause = self._retry
            else:
                self._apply(result, held, tickets, sent)
                pause = max(0.0, sent + self._period - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    def _apply(
        self, result: RoundResult, held: list[Lease], tickets: list[int], sent: float
    ) -> None:
        deadline = sent + self._fence_after
        for lease in held:
            if lease.state is not LeaseState.HELD:
                continue
            renewed = result.renewed.get(lease.key)
            if renewed is None or renewed.fence != lease.fence:
                self._lose(lease, LostReason.EXPIRED)
                continue
            lease._deadline = max(lease._deadline, deadline)
            lease.expires_at = renewed.expires_at
            if renewed.stop_requested and not lease.stop_requested:
                lease.stop_requested = True
                _signal(lease, LeaseSignal.STOP_REQUESTED)
        for ticket in tickets:
            self._settle(ticket, result.tickets.get(ticket, TicketStatus.GONE), sent)
        self._check_deadlines()

    def _settle(self, ticket: int, status: Granted | TicketStatus, sent: float) -> None:
        waiter = self._waiters.get(ticket)
        if waiter is None:  # cancelled meanwhile
            orphan = self._orphans.pop(ticket, None)
            if isinstance(status, Granted) and orphan is not None:
                self._spawn(self._store.release(orphan[0], self._instance, status.fence))
            return
        if status is TicketStatus.WAITING:
            return
        del self._waiters[ticket]
        waiter.ticket = None
        if isinstance(status, Granted):
            lease = self._grant(waiter.key, status, sent, waiter.on_signal)
            if waiter.future.done():  # cancelled just now
                self._spawn(self.release(lease))
            else:
                waiter.future.set_result(lease)
        elif status is TicketStatus.SUPERSEDED:
            if not waiter.future.done():
                waiter.future.set_exception(Superseded(waiter.key))
        else:  # GONE: the ticket expired (we could not renew it): queue again at the tail
            self._homeless.add(waiter)
            waiter.requeue = asyncio.ensure_future(self._requeue(waiter))
            self._adopt(waiter.requeue)

    async def _requeue(self, waiter: _Waiter) -> None:
        result, sent = await self._first_ask(waiter.key, Mode.QUEUE, -1)
        self._homeless.discard(waiter)
        waiter.requeue = None
        if waiter.future.done():
            if isinstance(result, Granted):
                await self._store.release(waiter.key, self._instance, result.fence)
            elif isinstance(result, Queued):
                await self._store.cancel(result.ticket, self._instance)
            return
        if isinstance(result, Granted):
            waiter.future.set_result(self._grant(waiter.key, result, sent, waiter.on_signal))
        elif isinstance(result, Queued):
            waiter.ticket = result.ticket
            self._waiters[result.ticket] = waiter

    # ------------------------------------------------------------------ hints

    def _on_hint(self, key: str) -> None:
        if self._state != _OPEN:
            return
        if key in self._held and self._wake is not None:
            self._wake.set()  # maybe a stop request: a round tells
        for ticket, waiter in list(self._waiters.items()):
            if waiter.key == key and not waiter.polling:
                waiter.polling = True
                self._spawn(self._poll(ticket, waiter))

    async def _poll(self, ticket: int, waiter: _Waiter) -> None:
        sent = self._running_loop().time()
        try:
            status = await self._call(
                self._store.take, ticket, self._instance, self._node, self._lease
            )
        except StoreUnavailable:
            return  # the next round asks again
        finally:
            waiter.polling = False
        if self._state == _OPEN and self._waiters.get(ticket) is waiter:
            self._settle(ticket, status, sent)
        elif isinstance(status, Granted):
            await self._store.release(waiter.key, self._instance, status.fence)

    # ------------------------------------------------------------------ self-fencing

    def _arm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._held and self._state == _OPEN:
            deadline = min(lease._deadline for lease in self._held.values())
            self._watchdog = self._running_loop().call_at(deadline, self._check_deadlines)

    def _check_deadlines(self) -> None:
        now = self._running_loop().time()
        for lease in list(self._held.values()):
            if now >= lease._deadline:
                self._lose(lease, LostReason.OVERDUE)
        self._arm()

    def _lose(self, lease: Lease, reason: LostReason) -> None:
        if lease.state is not LeaseState.HELD:
            return
        lease.state = LeaseState.LOST
        lease.lost_reason = reason
        if self._held.get(lease.key) is lease:
            del self._held[lease.key]
        _signal(lease, LeaseSignal.LOST)

    # ------------------------------------------------------------------ plumbing

    async def _call(self, op: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One round trip within its budget; a store's call gives up at once when cancelled."""
        try:
            async with asyncio.timeout(self._budget):
                return await op(*args)
        except TimeoutError:
            raise StoreUnavailable(
                f"no answer from {self._store.target} within {self._budget:g}s"
            ) from None

    async def _call_detached(self, op: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One round trip within its budget, in a task cancelled in the background."""
        task: asyncio.Future[T] = asyncio.ensure_future(op(*args))
        try:
            done, _ = await asyncio.wait({task}, timeout=self._budget)
        except asyncio.CancelledError:
            self._adopt(task)
            raise
        if not done:
            task.cancel()  # the driver closes or cancels what it was doing
            self._adopt(task)
            raise StoreUnavailable(f"no answer from {self._store.target} within {self._budget:g}s")
        return task.result()

    def _adopt(self, task: asyncio.Future[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._forget)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        self._adopt(asyncio.ensure_future(coro))

    def _forget(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, StoreUnavailable | CoordinatorClosed):
            _log.error("%s: background round trip failed", self, exc_info=exc)

    def _check_open(self) -> None:
        if self._state != _OPEN:
            raise CoordinatorClosed(f"{self!r} is not open")

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop


def _check_callback(on_signal: object) -> None:
    if on_signal is not None and not callable(on_signal):
        raise TypeError(f"on_signal must be callable or None, got {type(on_signal).__name__}")


def _signal(lease: Lease, signal: LeaseSignal) -> None:
    callback = lease._on_signal
    if callback is None:
        return
    try:
        callback(lease, signal)
    except Exception:
        _log.exception("on_signal(%r, %s) raised", lease, signal.value)
