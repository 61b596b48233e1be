"""Readiness and health probes of a command task: the TOML keys, and one check of each kind.

``ready = { tcp = "host:port" | http = "URL" | command = [...] | log = "regex", timeout = 60,
every = 0.5 }`` and ``health = { tcp | http | command, every = 10, timeout = 5, failures = 3 }``.
How probes drive an attempt is in ``_program.py``; what readiness means, in ``_ready.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ._table import MISSING, Table, show

__all__ = ["Probe", "ProbeResult", "check", "read_probe"]

READY_KINDS = ("command", "http", "log", "tcp")
HEALTH_KINDS = ("command", "http", "tcp")
READY_DEFAULTS = {"timeout": 60.0, "every": 0.5}
HEALTH_DEFAULTS = {"timeout": 5.0, "every": 10.0, "failures": 3}
CHECK_LIMIT = 5.0
"""Longest single readiness check (a connection that hangs); the probe's ``timeout`` bounds
the whole wait for readiness."""


@dataclass(frozen=True)
class Probe:
    """One probe, checked: ``kind`` and its ``target``, and the timing keys."""

    kind: str
    target: Any  # (host, port) | URL str | tuple of argv | compiled regex
    timeout: float
    every: float
    failures: int = 1

    def describe(self) -> str:
        """``tcp 127.0.0.1:8000``, ``http http://…``, ``command [...]``, ``log /re/``."""
        if self.kind == "tcp":
            host, port = self.target
            return f"tcp {host}:{port}"
        if self.kind == "http":
            return f"http {self.target}"
        if self.kind == "command":
            return f"command {list(self.target)}"
        return f"log /{self.target.pattern}/"


@dataclass(frozen=True)
class ProbeResult:
    """The last check of a probe: passed or not, what it found, when (epoch seconds)."""

    ok: bool
    detail: str
    at: float

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"ok": self.ok, "detail": self.detail, "at": self.at}


def _tcp_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError('expected "HOST:PORT", like "127.0.0.1:8000"')
    return host, int(port)


def _http_target(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError('expected an http:// or https:// URL, like "http://127.0.0.1:8000/health"')
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise ValueError("expected a URL with a valid port") from None
    return text


def read_probe(parent: Table, key: str) -> Any:
    """The ``ready`` or ``health`` table of a task as a ``Probe``; ``MISSING`` if absent/bad."""
    t = parent.sub(key)
    if t is None:
        return MISSING
    kinds = READY_KINDS if key == "ready" else HEALTH_KINDS
    defaults: dict[str, Any] = dict(READY_DEFAULTS if key == "ready" else HEALTH_DEFAULTS)
    timing = ("every", "timeout") + (("failures",) if key == "health" else ())
    t.only((*kinds, *timing))
    before = len(t.errors)
    present = [k for k in kinds if t.has(k)]
    example = 'ready = { tcp = "127.0.0.1:8000" }' if key == "ready" else "health = { tcp = … }"
    if len(present) != 1:
        got = "none" if not present else ", ".join(present)
        t.error("kind", f"expected exactly one of {', '.join(kinds)} (like {example}), got {got}")
        return MISSING
    kind = present[0]
    value = t.raw(kind)
    target: Any = MISSING
    if kind == "command":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) for v in value)
            or not value[0]
        ):
            t.error(
                kind,
                f'expected a non-empty array of strings, like ["pg_isready"], got {show(value)}',
            )
        else:
            target = tuple(value)
    elif not isinstance(value, str) or not value:
        t.error(kind, f"expected a non-empty string, got {show(value)}")
    else:
        try:
            if kind == "tcp":
                target = _tcp_target(value)
            elif kind == "http":
                target = _http_target(value)
            else:
                target = re.compile(value)
        except re.error as exc:
            t.error(kind, f"expected a regular expression: {exc}, got {show(value)}")
        except ValueError as exc:
            t.error(kind, f"{exc}, got {show(value)}")
    for name in ("every", "timeout"):
        v = t.number(name, positive=True)
        if v is not MISSING:
            defaults[name] = v
    if key == "health":
        failures = t.integer("failures", minimum=1)
        if failures is not MISSING:
            defaults["failures"] = failures
    if len(t.errors) > before or target is MISSING:
        return MISSING
    return Probe(
        kind,
        target,
        float(defaults["timeout"]),
        float(defaults["every"]),
        int(defaults.get("failures", 1)),
    )


# ---------------------------------------------------------------------- checks


async def check(
    probe: Probe, timeout: float, cwd: str | None, env: dict[str, str] | None
) -> ProbeResult:
    """Run one check of ``probe`` (not ``log``), bounded by ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            if probe.kind == "tcp":
                ok, detail = await _tcp(*probe.target)
            elif probe.kind == "http":
                ok, detail = await _http(probe.target)
            else:
                ok, detail = await _command(probe.target, cwd, env)
    except TimeoutError:
        ok, detail = False, f"no answer within {timeout:g} s"
    except OSError as exc:
        ok, detail = False, exc.strerror or str(exc) or type(exc).__name__
    return ProbeResult(ok, detail, time.time())


async def _tcp(host: str, port: int) -> tuple[bool, str]:
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, "connected"


async def _http(url: str) -> tuple[bool, str]:
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    context = ssl.create_default_context() if secure else None
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        netloc = parts.netloc.rpartition("@")[2]
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: taskvisor-probe\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        status_line = (await reader.readline()).decode("latin-1").strip()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        return False, f"not an HTTP answer: {status_line[:80]!r}"
    code = int(fields[1])
    return 200 <= code < 300, f"HTTP {code}"


async def _command(
    argv: tuple[str, ...], cwd: str | None, env: dict[str, str] | None
) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        process_group=0,
    )
    try:
        code = await proc.wait()
    except BaseException:  # timed out or stopped: the check's group must not outlive it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
        raise
    return code == 0, f"exit code {code}"
