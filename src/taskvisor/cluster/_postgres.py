"""``PostgresCoordinator``: leases in PostgreSQL rows, through psycopg 3 (async).

Each store method is one call of one PL/pgSQL function (``_postgres_sql.py``), on a small
pool of autocommit connections kept here: a connection that saw any error is closed, and a
new one is opened on demand, so the coordinator reconnects by itself after a restart or a
partition without a backoff of its own (the engine paces retries). A separate connection
LISTENs on the prefix's channel; its notifications are hints, and it reconnects forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ._engine import LeaseEngine
from ._postgres_sql import SCHEMA
from ._protocol import CoordinatorUnavailable, Holding
from ._store import (
    SCHEMA_VERSION,
    Granted,
    Mode,
    Queued,
    Refused,
    Renewed,
    RoundResult,
    Store,
    StoreUnavailable,
    TicketStatus,
    check_lease,
    check_prefix,
)

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger("taskvisor.cluster")

_NEED = (
    "PostgresCoordinator needs the psycopg package (3.1 or later); "
    "install the extra: pip install 'taskvisor[postgres]'"
)


def _import_psycopg() -> Any:
    try:
        import psycopg  # an optional dependency, imported on first use
    except ImportError as exc:
        raise ImportError(_NEED) from exc
    return psycopg


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` for messages, never the password."""
    psycopg = _import_psycopg()
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ValueError("dsn is not a valid PostgreSQL connection string") from None
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or params.get("user") or ""
    return f"postgresql://{host}:{port}/{db}"


class PostgresStore(Store):
    """The PostgreSQL store (see the module docstring)."""

    def __init__(self, dsn: str, prefix: str, *, pool_size: int, connect_timeout: float) -> None:
        super().__init__()
        self._psycopg = _import_psycopg()
        self.target = describe_dsn(dsn)
        self._dsn = dsn
        self._p = f"{prefix}_v{SCHEMA_VERSION}"
        self._channel = self._p
        self._connect_timeout = max(2, round(connect_timeout))
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        p = self._p
        self._q_acquire = f"SELECT * FROM {p}_acquire(%s, %s, %s, %s, %s, %s)"
        self._q_take = f"SELECT * FROM {p}_take(%s, %s, %s, %s, false)"
        self._q_round = f"SELECT * FROM {p}_round(%s, %s, %s, %s::text[], %s::bigint[])"
        self._q_release = f"SELECT {p}_release(%s, %s, %s)"
        self._q_cancel = f"SELECT {p}_cancel(%s, %s)"
        self._q_close = f"SELECT {p}_close(%s)"

        self._q_holders = (
            f"SELECT key, node, fence, extract(epoch FROM expires_at)::float8 FROM {p}_keys "
            "WHERE holder IS NOT NULL AND expires_at > clock_timestamp() ORDER BY key"
        )
        self._q_waiting = (
            f"SELECT count(*) FROM {p}_tickets WHERE key = %s AND NOT superseded "
            "AND expires_at > clock_timestamp()"
        )
        self._q_nodes = (
            f"SELECT DISTINCT node FROM {p}_nodes "
            "WHERE seen_at > clock_timestamp() - make_interval(secs => %s) ORDER BY node"
        )

    # ------------------------------------------------------------------ connections

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn: psycopg.AsyncConnection[Any] = await self._psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            prepare_threshold=None,  # no server-side prepared statements: PgBouncer-safe
            application_name="taskvisor.cluster",
        )
        return conn

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    conn = await self._connect()
                yield conn
            except self._psycopg.OperationalError as exc:
                await _discard(conn)
                raise StoreUnavailable(_first_line(exc)) from None
            except (self._psycopg.errors.DeadlockDetected, self._psycopg.InterfaceError) as exc:
                await _discard(conn)
                raise StoreUnavailable(_first_line(exc)) from None
            except BaseException:
                await _discard(conn)
                raise
            else:
                if self._closed or conn.closed:
                    await _discard(conn)
                else:
                    self._idle.append(conn)

    async def _one(self, query: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
        # In a task of its own: a caller that gives up returns at once, while psycopg
        # cancels the statement (or closes the connection) in the background. Not pipelined:
        # statements of one libpq pipeline share an implicit transaction (and its locks).
        return await asyncio.shield(asyncio.ensure_future(self._one_now(query, params)))

    async def _one_now(self, query: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
        assert row is not None
        return tuple(row)

    async def _all(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self._conn() as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        return [tuple(r) for r in rows]

    async def connect(self) -> None:
        psycopg = self._psycopg
        self._closed = False
        try:
            conn = await self._connect()
        except psycopg.Error as exc:
            raise CoordinatorUnavailable(self.target, _first_line(exc)) from None
        try:
            sql = SCHEMA.replace("{p}", self._p).replace("{channel}", self._channel)
            async with conn.transaction():
                # Serialise schema creation when several nodes start at once (CREATE ... IF
                # NOT EXISTS alone races); a lock for DDL only, never for leases.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._p,))
                await conn.execute(sql)
        except psycopg.Error as exc:
            await _discard(conn)
            raise CoordinatorUnavailable(self.target, _first_line(exc)) from None
        self._idle.append(conn)
        self._listener = asyncio.create_task(self._listen(), name=f"{self.target}:listen")

    async def disconnect(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        idle, self._idle = self._idle, []
        for conn in idle:
            await _discard(conn)

    async def _listen(self) -> None:
        psycopg = self._psycopg
        while True:
            conn = None
            try:
                conn = await self._connect()
                await conn.execute(f'LISTEN "{self._channel}"')
                async for note in conn.notifies():
                    self._hint(note.payload)
            except (psycopg.Error, OSError) as exc:
                _log.debug("%s: listener: %s; reconnecting", self.target, _first_line(exc))
            finally:
                await _discard(conn)
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ the protocol

    async def acquire(
        self, key: str, instance: str, node: str, lease: float, mode: Mode, max_queue: int
    ) -> Granted | Queued | Refused:
        status, fence, expires, ticket = await self._one(
            self._q_acquire, (key, instance, node, lease, int(mode), max_queue)
        )
        if status == 0:
            return Granted(fence, expires)
        if status == 1:
            return Queued(ticket)
        return Refused.BUSY if status == 2 else Refused.FULL

    async def take(
        self, ticket: int, instance: str, node: str, lease: float
    ) -> Granted | TicketStatus:
        status, fence, expires = await self._one(self._q_take, (ticket, instance, node, lease))
        return _ticket_status(status, fence, expires)

    async def round(
        self, instance: str, node: str, lease: float, keys: list[str], tickets: list[int]
    ) -> RoundResult:
        rows = await self._all(self._q_round, (instance, node, lease, keys, tickets))
        renewed: dict[str, Renewed] = {}
        result: dict[int, Granted | TicketStatus] = {}
        for kind, key, ticket, status, fence, expires, stop in rows:
            if kind == 0:
                renewed[key] = Renewed(fence, expires, stop)
            else:
                result[ticket] = _ticket_status(status, fence, expires)
        return RoundResult(renewed, result)

    async def release(self, key: str, instance: str, fence: int) -> bool:
        (freed,) = await self._one(self._q_release, (key, instance, fence))
        return bool(freed)

    async def cancel(self, ticket: int, instance: str) -> None:
        await self._one(self._q_cancel, (ticket, instance))

    async def close_instance(self, instance: str) -> None:
        await self._one(self._q_close, (instance,))

    async def holders(self) -> list[Holding]:
        rows = await self._all(self._q_holders, ())
        return [Holding(k, n, f, e) for k, n, f, e in rows]

    async def waiting(self, key: str) -> int:
        (n,) = await self._one(self._q_waiting, (key,))
        return int(n)

    async def nodes(self, within: float) -> list[str]:
        rows = await self._all(self._q_nodes, (within,))
        return [r[0] for r in rows]


def _ticket_status(status: int, fence: int | None, expires: float | None) -> Granted | TicketStatus:
    if status == 0:
        assert fence is not None
        assert expires is not None
        return Granted(fence, expires)
    if status == 1:
        return TicketStatus.WAITING
    return TicketStatus.SUPERSEDED if status == 5 else TicketStatus.GONE


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def _discard(conn: psycopg.AsyncConnection[Any] | None) -> None:
    if conn is not None and not conn.closed:
        with contextlib.suppress(Exception):
            await conn.close()


class PostgresCoordinator(LeaseEngine):
    """Ownership of keys across processes and hosts, kept in PostgreSQL (psycopg 3).

    Tables ``<prefix>_v1_keys``, ``<prefix>_v1_tickets``, ``<prefix>_v1_nodes`` and their
    functions are created by ``open()`` when missing. Needs the extra
    ``taskvisor[postgres]``.

    Args:
        dsn: A libpq connection string or URL (``postgresql://user@host:5432/db``).
        node: The node name shown in ``holders()`` and ``nodes()`` (default
            ``<hostname>-<pid>``).
        lease: Lease length in seconds, finite and > 0 (default 15.0).
        prefix: Table name prefix, lower-case ``[a-z][a-z0-9_]*`` (default
            ``"taskvisor"``); the schema version is appended (``taskvisor_v1_keys``).
        pool_size: Connections for round trips (default 16), plus one that listens.

    Raises:
        ImportError: psycopg is not installed.
        TypeError: An argument has the wrong type (the message names it).
        ValueError: An argument is out of range or the DSN cannot be parsed.
    """

    def __init__(
        self,
        dsn: str,
        *,
        node: str | None = None,
        lease: float = 15.0,
        prefix: str = "taskvisor",
        pool_size: int = 16,
    ) -> None:
        if not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str, got {type(dsn).__name__}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int):
            raise TypeError(f"pool_size must be an int, got {type(pool_size).__name__}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size!r}")
        store = PostgresStore(
            dsn, check_prefix(prefix), pool_size=pool_size, connect_timeout=check_lease(lease) / 3
        )
        super().__init__(store, node=node, lease=lease)
