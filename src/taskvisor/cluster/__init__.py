"""One owner per key across processes and hosts: ``taskvisor.cluster`` (SPEC §11).

A *coordinator* hands out *leases* on string keys. ``MemoryCoordinator`` does it within one
process (the default, and the reference implementation); ``PostgresCoordinator``
(``pip install 'taskvisor[postgres]'``) and ``RedisCoordinator``
(``pip install 'taskvisor[redis]'``) do it across processes and hosts through a database
that is the single point of truth. Importing this package imports neither psycopg nor redis:
each backend imports its library when it is constructed.

The API a supervisor uses (every method is a coroutine unless marked)::

    coord = PostgresCoordinator(dsn, node="web-1", lease=15.0)   # validates; no I/O
    await coord.open()            # connect, create tables/keys if missing, start renewing;
                                  # CoordinatorUnavailable names host:port/db if it cannot
    lease = await coord.acquire(key, replace=False, max_queue=None, on_signal=callback)
    lease = await coord.try_acquire(key, on_signal=callback)      # None if held or queued
    ok = await coord.release(lease)   # True only if it was still held and valid
    await coord.holders()         # list[Holding]: key, node, fence, expires_at (server epoch)
    await coord.nodes()           # list[str]: nodes with a heartbeat within one lease
    await coord.close()           # release everything, end waits, disconnect (idempotent)

Semantics, the same for every backend:

- **Leases** are timed by the database server's clock and renewed every ``lease / 3`` by one
  background task per coordinator, in ONE round trip for all keys it holds and all tickets
  it waits with; that round trip is also the node's heartbeat.
- **Self-fencing**: a lease whose last successful renewal was *sent* more than
  ``lease × 2/3`` ago (this process's monotonic clock) is ``LOST`` — on a timer, so it
  fires on time, and at once after a freeze. ``Lease.valid`` tells the same at any moment.
- **Fencing tokens**: ``Lease.fence`` is strictly greater than every earlier token of that
  key (a per-key counter that is never deleted; PostgreSQL keeps it across restarts).
- **Queue**: a busy key is waited for in FIFO order across the cluster (a server-side
  sequence); cancelling ``acquire`` removes its ticket. Tickets are renewed with the leases,
  so a dead node's tickets expire and never stall the queue. ``replace=True`` asks the
  holder's node to stop (``LeaseSignal.STOP_REQUESTED``), takes the head's place, and the
  displaced head's ``acquire`` raises ``Superseded`` — as the local controller's REPLACE.
- **Signals**: ``on_signal(lease, LeaseSignal)`` is called on the event loop for
  ``RENEW_FAILED`` (each failed round while held), ``STOP_REQUESTED`` (once) and ``LOST``
  (once, last; ``Lease.lost_reason`` says why). It must not block or raise.
- **Waking**: LISTEN/NOTIFY or pub/sub wake waiters at once; polling every ``lease / 3`` is
  the backstop, so a key whose holder died is taken within ``lease / 3`` of its expiry.
- **Outages**: while the database is unreachable, holders self-fence, ``acquire`` keeps
  waiting, nobody is granted anything; when it is back, everything resumes by itself.
- Leases belong to the coordinator *instance* (``instance``, random), never to the node
  name: a restarted process inherits nothing.

Internals (not public): ``_engine.LeaseEngine`` is the shared client side, ``_store.Store``
the one-round-trip server operations each backend implements.
"""

from __future__ import annotations

from ._memory import MemoryCoordinator
from ._postgres import PostgresCoordinator
from ._protocol import Coordinator, Holding
from ._redis import RedisCoordinator

__all__ = [
    "Coordinator",
    "Holding",
    "MemoryCoordinator",
    "PostgresCoordinator",
    "RedisCoordinator",
]

for _cls in (Coordinator, Holding, MemoryCoordinator, PostgresCoordinator, RedisCoordinator):
    _cls.__module__ = __name__  # reprs and tracebacks read taskvisor.cluster.X
del _cls
