"""``taskvisor ctl``: the control socket of a running ``taskvisor run``, both ends.

The protocol (``docs/cli.md``): one connection per request, over a Unix socket of mode 0600.
The client sends one JSON object on one line: ``{"command": "status"}``, ``{"command":
"start" | "stop" | "restart", "name": NAME}``, ``{"command": "reload"}``, ``{"command": "tail",
"name": NAME, "lines": 10, "follow": true}``. The server answers with JSON lines: first
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``; ``status`` adds ``"tasks"``, the
others a ``"message"``; ``tail`` then sends ``{"stream": "stdout"|"stderr", "line": "..."}``
lines, and ``{"end": true}`` when the task is gone for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import sys
from typing import Any

from ._runtime import ControlError, Runner

__all__ = ["ControlServer", "SocketInUse", "client"]

log = logging.getLogger("taskvisor.cli")

MAX_REQUEST = 64 * 1024
COMMANDS = ("reload", "restart", "start", "status", "stop", "tail")
NAMED = ("restart", "start", "stop", "tail")


class SocketInUse(Exception):
    """Another ``taskvisor run`` answers on the socket (or the path is not a socket)."""


def _dump(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


class ControlServer:
    """Serves ``runner`` on the Unix socket ``path`` (mode 0600), on the run's loop."""

    def __init__(self, runner: Runner, path: str) -> None:
        self.runner = runner
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._clients: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Listen; ``SocketInUse`` if a live server has it, ``OSError`` if it cannot listen."""
        path = self.path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise SocketInUse(f"{path} exists and is not a socket")
            if _answers(path):
                raise SocketInUse(f"another taskvisor is running with the control socket {path}")
            os.unlink(path)  # left behind by a run that was killed
        old = os.umask(0o177)  # born 0600: no moment when others could connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path, limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._inode = os.lstat(path).st_ino

    async def stop(self) -> None:
        """Stop listening, end the open connections, remove the socket file."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(list(self._clients))
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._request(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
        except (ValueError, asyncio.LimitOverrunError) as exc:
            writer.write(_dump({"ok": False, "error": f"bad request: {exc}"}))
            await writer.drain()
            return
        command = request.get("command")
        name = request.get("name")
        runner = self.runner
        try:
            if command not in COMMANDS:
                raise ControlError(f"unknown command {command!r}; expected one of {COMMANDS}")
            if command in NAMED and not isinstance(name, str):
                raise ControlError(f"{command} needs a task name")
            if command == "status":
                reply: dict[str, Any] = {"ok": True, "tasks": runner.status()}
            elif command == "tail":
                await self._tail(reader, writer, runner, request)
                return
            elif command == "reload":
                message = await runner.reload()
                log.info("%s", message)
                reply = {"ok": True, "message": message}
            else:
                operation = {"start": runner.start, "stop": runner.stop, "restart": runner.restart}
                assert isinstance(name, str)
                message = await operation[command](name)
                log.info("ctl %s: %s", command, message)
                reply = {"ok": True, "message": message}
        except ControlError as exc:
            reply = {"ok": False, "error": str(exc)}
        writer.write(_dump(reply))
        await writer.drain()

    async def _tail(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        runner: Runner,
        request: dict[str, Any],
    ) -> None:
        output = runner.output(request["name"])
        lines = request.get("lines", 10)
        count = lines if isinstance(lines, int) and not isinstance(lines, bool) else 10
        follow = request.get("follow", True) is not False
        queue = output.follow() if follow else None
        try:
            writer.write(_dump({"ok": True}))
            for _, stream, text in output.last(count):
                writer.write(_dump({"stream": stream, "line": text}))
            await writer.drain()
            if queue is None:
                return
            gone = asyncio.ensure_future(reader.read())  # EOF: the client left
            try:
                while True:
                    item = asyncio.ensure_future(queue.get())
                    await asyncio.wait((item, gone), return_when=asyncio.FIRST_COMPLETED)
                    if not item.done():
                        item.cancel()
                        return
                    got = item.result()
                    if got is None:
                        writer.write(_dump({"end": True}))
                        await writer.drain()
                        return
                    writer.write(_dump({"stream": got[0], "line": got[1]}))
                    await writer.drain()
            finally:
                gone.cancel()
        finally:
            if queue is not None:
                output.unfollow(queue)


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------- the client


def check_socket(path: str) -> str | None:
    """Why ``ctl`` must not use ``path`` (wrong type, mode or owner), or ``None``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"{path} does not exist: is taskvisor run of this file running?"
    except OSError as exc:
        return f"cannot inspect {path}: {exc.strerror}"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} is not a socket; refusing to use it"
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o600:
        return (
            f"refusing {path}: its mode is {mode:04o}, expected 0600 (only its owner may "
            "read and write it); someone else may have made it"
        )
    if st.st_uid != os.geteuid():
        return f"refusing {path}: it belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
    return None


def client(path: str, request: dict[str, Any], as_json: bool = False) -> int:
    """Send ``request`` to the server at ``path``; print the answer; the exit status."""
    problem = check_socket(path)
    if problem is not None:
        print(f"taskvisor ctl: error: {problem}", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            print(
                f"taskvisor ctl: error: cannot connect to {path}: {exc.strerror or exc} "
                "(is taskvisor run of this file running?)",
                file=sys.stderr,
            )
            return 1
        sock.sendall(_dump(request))
        with sock.makefile("r", encoding="utf-8", errors="replace") as stream:
            return _answer(stream, request, as_json)
    except KeyboardInterrupt:
        return 0 if request["command"] == "tail" else 130
    finally:
        sock.close()


def _answer(stream: Any, request: dict[str, Any], as_json: bool) -> int:
    first = stream.readline()
    if not first:
        print("taskvisor ctl: error: the server closed the connection", file=sys.stderr)
        return 1
    reply = json.loads(first)
    if not reply.get("ok"):
        print(f"taskvisor ctl: error: {reply.get('error')}", file=sys.stderr)
        return 1
    command = request["command"]
    if command == "status":
        tasks = reply["tasks"]
        if as_json:
            print(json.dumps({"tasks": tasks}))
        else:
            print(format_status(tasks))
        return 0
    if command == "tail":
        for line in stream:
            item = json.loads(line)
            if item.get("end"):
                break
            print(item["line"], flush=True)
        return 0
    print(reply.get("message", "ok"))
    return 0


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def format_status(tasks: list[dict[str, Any]]) -> str:
    """The ``status`` table: one line per task, like ``supervisorctl status``."""
    rows = [
        (
            t["name"],
            t["state"].upper(),
            f"pid {t['pid']}" if t["pid"] is not None else "pid -",
            f"uptime {_uptime(t['uptime'])}",
            f"restarts {t['restarts']}",
            t["last_error"] or "",
        )
        for t in tasks
    ]
    if not rows:
        return "(no tasks)"
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(5)]
        line = "  ".join(cells)
        if row[5]:
            line += "  last error: " + row[5]
        lines.append(line.rstrip())
    return "\n".join(lines)
