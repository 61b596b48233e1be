"""``RedisCoordinator``: leases in Redis hashes, through ``redis.asyncio`` and Lua scripts.

Each store method is one ``EVALSHA`` of one script (``_redis_lua.py``): atomic on the server
and timed by its ``TIME``. redis-py's connection pool reconnects by itself; a separate
pub/sub connection listens for hints and resubscribes forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from typing import Any

from ._engine import LeaseEngine
from ._protocol import CoordinatorUnavailable, Holding
from ._redis_lua import ACQUIRE, CANCEL, CLOSE, HOLDERS, NODES, RELEASE, ROUND, TAKE, WAITING
from ._store import (
    SCHEMA_VERSION,
    Batcher,
    Granted,
    Item,
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

_log = logging.getLogger("taskvisor.cluster")
_US = 1_000_000

_NEED = (
    "RedisCoordinator needs the redis package (5 or later); "
    "install the extra: pip install 'taskvisor[redis]'"
)


def _import_redis() -> Any:
    try:
        import redis.asyncio  # an optional dependency, imported on first use
    except ImportError as exc:
        raise ImportError(_NEED) from exc
    return redis


def describe_url(url: str) -> str:
    """``redis://host:port/db`` for messages, never the password."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("url must be a redis://, rediss:// or unix:// URL")
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("url has an invalid port") from None
    db = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{port}/{db}"


def _i(value: Any) -> int:
    return int(value)


class RedisStore(Store):
    """The Redis store (see the module docstring)."""

    def __init__(self, url: str, prefix: str, *, timeout: float) -> None:
        super().__init__()
        self._redis = _import_redis()
        self.target = describe_url(url)
        self._url = url
        self._timeout = timeout
        self._p = f"{prefix}:v{SCHEMA_VERSION}"
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._listener: asyncio.Task[None] | None = None
        self._batch = Batcher(self._flush)

    async def _flush(self, batch: list[Item]) -> None:
        """The calls of one loop iteration in one pipeline (one round trip)."""
        try:
            pipe = self._client.pipeline(transaction=False)
            for name, args, _ in batch:
                pipe.evalsha(self._scripts[name].sha, 0, self._p, *args)
            results = await pipe.execute(raise_on_error=False)
        except self._errors() as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from None
        for (name, args, fut), result in zip(batch, results, strict=True):
            value = result
            if isinstance(value, self._redis.exceptions.NoScriptError):  # a restarted server
                try:
                    value = await self._run(name, *args)
                except Exception as exc:
                    value = exc
            if fut.done():
                continue
            if isinstance(value, Exception):
                text = str(value)
                if isinstance(value, self._errors()) or "READONLY" in text or "LOADING" in text:
                    value = StoreUnavailable(text)
                fut.set_exception(value)
            else:
                fut.set_result(value)

    def _errors(self) -> tuple[type[BaseException], ...]:
        exc = self._redis.exceptions
        return (exc.ConnectionError, exc.TimeoutError, exc.BusyLoadingError, OSError)

    async def _run(self, name: str, *args: Any) -> Any:
        try:
            return await self._scripts[name](keys=[], args=[self._p, *args])
        except self._errors() as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from None
        except self._redis.exceptions.ResponseError as exc:
            if "READONLY" in str(exc) or "LOADING" in str(exc):  # a replica, or restarting
                raise StoreUnavailable(str(exc)) from None
            raise

    async def connect(self) -> None:
        redis = self._redis
        self._client = redis.asyncio.Redis.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            decode_responses=True,
        )
        for name, lua in (
            ("acquire", ACQUIRE),
            ("take", TAKE),
            ("round", ROUND),
            ("release", RELEASE),
            ("cancel", CANCEL),
            ("close", CLOSE),
            ("holders", HOLDERS),
            ("nodes", NODES),
            ("waiting", WAITING),
        ):
            self._scripts[name] = self._client.register_script(lua)
        try:
            await self._client.ping()
            # Load every script now: a syntax error or a server refusing scripts shows at open.
            for script in self._scripts.values():
                await self._client.script_load(script.script)
        except (*self._errors(), redis.exceptions.RedisError) as exc:
            await self.disconnect()
            raise CoordinatorUnavailable(self.target, str(exc) or type(exc).__name__) from None
        self._listener = asyncio.create_task(self._listen(), name=f"{self.target}:listen")

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen(self) -> None:
        channel = f"{self._p}:hint"
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                while True:
                    msg = await pubsub.get_message(timeout=None)
                    if msg is not None and msg.get("type") == "message":
                        self._hint(msg["data"])
            except (*self._errors(), self._redis.exceptions.RedisError) as exc:
                _log.debug("%s: listener: %s; resubscribing", self.target, exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ the protocol

    async def acquire(
        self, key: str, instance: str, node: str, lease: float, mode: Mode, max_queue: int
    ) -> Granted | Queued | Refused:
        r = await self._batch.call(
            "acquire", key, instance, node, round(lease * _US), int(mode), max_queue
        )
        status = _i(r[0])
        if status == 0:
            return Granted(_i(r[1]), _i(r[2]) / _US)
        if status == 1:
            return Queued(_i(r[3]))
        return Refused.BUSY if status == 2 else Refused.FULL

    async def take(
        self, ticket: int, instance: str, node: str, lease: float
    ) -> Granted | TicketStatus:
        r = await self._batch.call("take", ticket, instance, node, round(lease * _US))
        fence, expires = (_i(r[1]), _i(r[2])) if len(r) > 2 else (0, 0)
        return _ticket_status(_i(r[0]), fence, expires)

    async def round(
        self, instance: str, node: str, lease: float, keys: list[str], tickets: list[int]
    ) -> RoundResult:
        renewed_rows, ticket_rows = await self._run(
            "round", instance, node, round(lease * _US), len(keys), *keys, *tickets
        )
        renewed = {
            str(key): Renewed(_i(fence), _i(exp) / _US, bool(_i(stop)))
            for key, fence, exp, stop in renewed_rows
        }
        result = {
            _i(t): _ticket_status(_i(status), _i(fence), _i(exp))
            for t, status, fence, exp in ticket_rows
        }
        return RoundResult(renewed, result)

    async def release(self, key: str, instance: str, fence: int) -> bool:
        return bool(_i(await self._batch.call("release", key, instance, fence)))

    async def cancel(self, ticket: int, instance: str) -> None:
        await self._batch.call("cancel", ticket, instance)

    async def close_instance(self, instance: str) -> None:
        await self._run("close", instance)

    async def holders(self) -> list[Holding]:
        rows = await self._run("holders")
        return sorted(
            (Holding(str(k), str(n), _i(f), _i(e) / _US) for k, n, f, e in rows),
            key=lambda h: h.key,
        )

    async def waiting(self, key: str) -> int:
        return _i(await self._run("waiting", key))

    async def nodes(self, within: float) -> list[str]:
        return sorted(set(await self._run("nodes", round(within * _US))))


def _ticket_status(status: int, fence: int, expires_us: int) -> Granted | TicketStatus:
    if status == 0:
        return Granted(fence, expires_us / _US)
    if status == 1:
        return TicketStatus.WAITING
    return TicketStatus.SUPERSEDED if status == 5 else TicketStatus.GONE


class RedisCoordinator(LeaseEngine):
    """Ownership of keys across processes and hosts, kept in Redis (``redis.asyncio``).

    Keys under ``<prefix>:v1:`` are created on first use. Needs the extra
    ``taskvisor[redis]``, and a single Redis server or a Sentinel-managed primary (the
    scripts compute their keys, which Redis Cluster does not allow). Tokens survive a restart
    only with persistence (AOF with ``appendfsync always``); see ``docs/cluster.md``.

    Args:
        url: A ``redis://[:password@]host:port/db`` URL (or ``rediss://``, ``unix://``).
        node: The node name shown in ``holders()`` and ``nodes()`` (default
            ``<hostname>-<pid>``).
        lease: Lease length in seconds, finite and > 0 (default 15.0).
        prefix: Key prefix, lower-case ``[a-z][a-z0-9_]*`` (default ``"taskvisor"``).

    Raises:
        ImportError: redis is not installed.
        TypeError: An argument has the wrong type (the message names it).
        ValueError: An argument is out of range or the URL is not a Redis URL.
    """

    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        lease: float = 15.0,
        prefix: str = "taskvisor",
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        store = RedisStore(url, check_prefix(prefix), timeout=check_lease(lease) / 3)
        super().__init__(store, node=node, lease=lease)
