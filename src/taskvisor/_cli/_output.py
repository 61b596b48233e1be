"""Where a program's output goes, and the last lines kept for ``ctl tail`` and the page.

Output goes to the terminal (a log record per line, on the logger named after the task) or
to rotated files (``stdout``/``stderr = "path"``, ``max_bytes``, ``backups``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ._table import MISSING, Table, resolve_path

__all__ = ["Output", "OutputPlan", "RotatingFile", "read_output"]

KEEP_LINES = 200
"""Lines of output kept per task for ``ctl tail`` and the status page."""

FOLLOW_BACKLOG = 10_000
"""Lines queued for one ``ctl tail`` client that does not read before it is dropped."""

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """Where a command's stdout and stderr go: a file path each, or ``None`` (the terminal)."""

    stdout: str | None = None
    stderr: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS


def read_output(t: Table, base: Any) -> Any:
    """The ``stdout``, ``stderr``, ``max_bytes`` and ``backups`` keys of a task."""
    before = len(t.errors)
    paths: dict[str, str | None] = {"stdout": None, "stderr": None}
    for key in paths:
        value = t.string(key, "a file path")
        if value is not MISSING:
            paths[key] = resolve_path(base, value)
    max_bytes = t.integer("max_bytes", minimum=1)
    backups = t.integer("backups", minimum=0)
    if (max_bytes is not MISSING or backups is not MISSING) and not any(paths.values()):
        key = "max_bytes" if max_bytes is not MISSING else "backups"
        t.error(key, 'only valid with stdout = "path" or stderr = "path"')
    if len(t.errors) > before:
        return MISSING
    return OutputPlan(
        paths["stdout"],
        paths["stderr"],
        DEFAULT_MAX_BYTES if max_bytes is MISSING else max_bytes,
        DEFAULT_BACKUPS if backups is MISSING else backups,
    )


class RotatingFile:
    """Appends to ``path``; past ``max_bytes`` the file becomes ``path.1``.

    ``path.1`` becomes ``path.2``, and so on up to ``backups``; ``backups = 0`` truncates.
    """

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating first if it would pass ``max_bytes``."""
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        os.write(self._fd, data)
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.backups == 0:
            os.truncate(self.path, 0)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{i}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_NO_FILES: dict[str, RotatingFile] = {}


class Output:
    """One task's output across its attempts: the destination, the last lines, the followers.

    The buffers are made on first use: most supervised programs write little or nothing, and
    a few hundred of them should cost little.
    """

    __slots__ = ("_files", "_followers", "plan", "recent", "task")

    def __init__(self, task: str, plan: OutputPlan, files: dict[str, RotatingFile]) -> None:
        self.task = task
        self.plan = plan
        self.recent: deque[tuple[float, str, str]] | None = None
        self._followers: set[asyncio.Queue[tuple[str, str] | None]] | None = None
        self._files = _NO_FILES
        if plan.stdout is not None or plan.stderr is not None:
            self._files = {
                stream: _shared(files, path, plan)
                for stream, path in (("stdout", plan.stdout), ("stderr", plan.stderr))
                if path is not None
            }

    @property
    def log(self) -> logging.Logger:
        """The task's logger (made on first use: most programs say nothing)."""
        return logging.getLogger(f"taskvisor.process.{self.task}")

    def write(self, stream: str, text: str, pid: int | None) -> None:
        """One record of the program (a line, or a whole traceback)."""
        now = time.time()
        lines = text.split("\n")
        recent = self.recent
        if recent is None:
            recent = self.recent = deque(maxlen=KEEP_LINES)
        for line in lines:
            recent.append((now, stream, line))
        for queue in list(self._followers or ()):
            for line in lines:
                if queue.qsize() >= FOLLOW_BACKLOG:
                    self.unfollow(queue)
                    queue.put_nowait(None)
                    break
                queue.put_nowait((stream, line))
        target = self._files.get(stream)
        if target is not None:
            try:
                target.write((text + "\n").encode("utf-8", "replace"))
            except OSError as exc:
                self.log.error("cannot write %s to %s: %s", stream, target.path, exc.strerror)
            return
        level = logging.WARNING if stream == "stderr" else logging.INFO
        if self.log.isEnabledFor(level):
            self.log.log(
                level, "%s", text, extra={"taskvisor_stream": stream, "taskvisor_pid": pid}
            )

    def last(self, count: int) -> list[tuple[float, str, str]]:
        """The last ``count`` lines: (epoch seconds, stream, text)."""
        if count <= 0:
            return []
        items = list(self.recent or ())
        return items[-count:]

    def follow(self) -> asyncio.Queue[tuple[str, str] | None]:
        """A queue receiving every later line as ``(stream, text)``; ``None`` ends it."""
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        if self._followers is None:
            self._followers = set()
        self._followers.add(queue)
        return queue

    def unfollow(self, queue: asyncio.Queue[tuple[str, str] | None]) -> None:
        """Stop feeding ``queue``."""
        if self._followers is not None:
            self._followers.discard(queue)

    def close(self) -> None:
        """End every follower (the task is gone for good)."""
        for queue in list(self._followers or ()):
            queue.put_nowait(None)
        self._followers = None


def _shared(files: dict[str, RotatingFile], path: str, plan: OutputPlan) -> RotatingFile:
    """One writer per path, so ``stdout`` and ``stderr`` may share a file."""
    writer = files.get(path)
    if writer is None:
        writer = files[path] = RotatingFile(path, plan.max_bytes, plan.backups)
    return writer
