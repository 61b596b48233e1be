"""Helpers for the cluster tests: the services they need, factories, private servers, a proxy.

The shared services are PostgreSQL on 127.0.0.1:5432 (trust auth, database ``test``) and
Redis on 127.0.0.1:6379; ``TASKVISOR_TEST_PG`` (a DSN) and ``TASKVISOR_TEST_REDIS`` (a URL)
point elsewhere. Fault tests start private servers on free loopback ports in a temporary
directory (``initdb``/``pg_ctl`` as the ``postgres`` user, ``redis-server``). Whatever is
missing makes the test session FAIL with what to install: never a silent skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from taskvisor.cluster import MemoryCoordinator, PostgresCoordinator, RedisCoordinator

GUARD = 20.0
PG_DSN = os.environ.get("TASKVISOR_TEST_PG", "host=127.0.0.1 port=5432 dbname=test user=postgres")
REDIS_URL = os.environ.get("TASKVISOR_TEST_REDIS", "redis://127.0.0.1:6379/0")
BACKENDS = ("memory", "postgres", "redis")

HOW_TO_GET = (
    "the cluster tests need PostgreSQL 15 and Redis 7: on Debian `apt-get install -y "
    "postgresql redis-server` (server binaries initdb, pg_ctl, postgres, redis-server), and "
    "the services running on 127.0.0.1:5432 (trust auth, database 'test') and "
    "127.0.0.1:6379 — start them with `pg_ctlcluster 15 main start` and `redis-server "
    "--daemonize yes --port 6379 --save ''`, or point TASKVISOR_TEST_PG / "
    "TASKVISOR_TEST_REDIS elsewhere"
)


def pg_bin(name: str) -> str | None:
    """The path of a PostgreSQL server binary (PATH first, then Debian's versioned dir)."""
    found = shutil.which(name)
    if found:
        return found
    for path in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return path
    return None


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def require_services() -> None:
    """Raise with instructions when a binary or a service the cluster tests need is missing."""
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if pg_bin(b) is None]
    missing += [b for b in ("redis-server",) if shutil.which(b) is None]
    if "TASKVISOR_TEST_PG" not in os.environ and not _port_open("127.0.0.1", 5432):
        missing.append("a PostgreSQL server on 127.0.0.1:5432")
    if "TASKVISOR_TEST_REDIS" not in os.environ and not _port_open("127.0.0.1", 6379):
        missing.append("a Redis server on 127.0.0.1:6379")
    if missing:
        raise RuntimeError(f"missing: {', '.join(missing)}; {HOW_TO_GET}")


def new_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


def drop_prefix(backend: str, prefix: str, dsn: str = PG_DSN, url: str = REDIS_URL) -> None:
    """Remove what a test's coordinators created (best effort)."""
    if backend == "postgres":
        import psycopg

        p = f"{prefix}_v1"
        with contextlib.suppress(psycopg.Error), psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {p}_keys, {p}_tickets, {p}_nodes CASCADE")
            conn.execute(f"DROP SEQUENCE IF EXISTS {p}_seq")
            for fn in ("round", "take", "acquire", "grant", "lock", "release", "cancel", "close"):
                conn.execute(f"DROP FUNCTION IF EXISTS {p}_{fn}")
    elif backend == "redis":
        import redis

        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def make_coordinator(
    backend: str,
    prefix: str,
    *,
    node: str,
    lease: float,
    dsn: str = PG_DSN,
    url: str = REDIS_URL,
) -> MemoryCoordinator | PostgresCoordinator | RedisCoordinator:
    if backend == "memory":
        return MemoryCoordinator(node=node, lease=lease, prefix=prefix)
    if backend == "postgres":
        return PostgresCoordinator(dsn, node=node, lease=lease, prefix=prefix)
    if backend == "redis":
        return RedisCoordinator(url, node=node, lease=lease, prefix=prefix)
    raise ValueError(backend)


async def wait_until(
    predicate: Callable[[], object], timeout: float = GUARD, what: str = ""
) -> None:
    """Poll a condition every 10 ms until it holds; fail after ``timeout`` (a guard)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- private servers


class PrivatePostgres:
    """A throwaway PostgreSQL cluster in a temp dir, run as the ``postgres`` user."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tv-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run([pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"])
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nfsync = on\n"
                "max_connections = 200\nshared_buffers = 32MB\n"
            )

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres"

    def _run(self, argv: list[Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in argv]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> None:
        self._run(
            [pg_bin("pg_ctl"), "-D", self.data, "-l", self.dir / "log", "-w", "-t", "60", "start"]
        )

    def stop(self, mode: str = "fast") -> None:
        self._run([pg_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"], check=False)

    def restart(self) -> None:
        self.stop("immediate")
        self.start()

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A throwaway redis-server on a free loopback port; AOF on so tokens survive a restart."""

    def __init__(self, persist: bool = True) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tv-redis-"))
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes" if self.persist else "no",
            "--appendfsync",
            "always",
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not _port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self, mode: str = "kill") -> None:
        """SIGKILL: with ``appendfsync always`` every acknowledged write is on disk."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_server(backend: str) -> Iterator[PrivatePostgres | PrivateRedis]:
    server: PrivatePostgres | PrivateRedis = (
        PrivatePostgres() if backend == "postgres" else PrivateRedis()
    )
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# --------------------------------------------------------------------------- a TCP proxy


class Proxy:
    """A loopback TCP proxy the test can cut: ``cut()`` blackholes every connection (bytes
    are swallowed, nothing is closed, new connections hang), ``heal()`` forwards again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_off = False
        self._healed = asyncio.Event()
        self._healed.set()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.cut_off = True
        self._healed.clear()

    def heal(self) -> None:
        """Forward again; connections that lived through the cut are closed (as TCP would)."""
        self.cut_off = False
        self._healed.set()
        for w in list(self._conns):
            w.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._healed.wait()  # a new connection hangs while cut
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, uw))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    if self.cut_off:
                        continue  # swallowed: a blackhole, not a reset
                    w.write(data)
                    await w.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
        self._conns.difference_update((writer, uw))

    async def close(self) -> None:
        for w in list(self._conns):
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[Proxy]:
    proxy = Proxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
