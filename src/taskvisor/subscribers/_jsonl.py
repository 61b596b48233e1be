"""``JsonLinesSubscriber``: one JSON object per event, one per line."""

from __future__ import annotations

import io
import json
import os
import threading
from typing import IO, Any

from .. import Event, Subscriber
from ._fields import plain_fields


class JsonLinesSubscriber(Subscriber):
    """Writes each event as one JSON object on its own line, flushed at once.

    ``stream_or_path``: a path (``str`` or ``os.PathLike``), opened for appending as UTF-8
    and owned by this subscriber; or an open stream (text, or binary: the line is UTF-8
    encoded), which stays the caller's.

    Schema (stable): keys are ``Event`` field names in declaration order — ``seq``, ``at``
    (epoch seconds), ``kind``, then ``task``, ``task_id``, ``attempt``, ``reason``,
    ``exit_code``, ``delay``, ``timeout``, ``duration``, ``backoff_source``, ``outcome``,
    ``rejection``, ``slot`` — each present only when set (``None`` fields are left out).
    Enums are their lower-case labels, durations float seconds, ``task_id`` an int.

    ``blocking = True``: writes run in a dedicated thread, never on the event loop.
    ``close()`` (or leaving ``with``) closes a file this subscriber opened; call it after the
    supervisor's shutdown, which drains every queued event first. Events that arrive after
    ``close()`` are dropped. A stream passed in is flushed but never closed.
    """

    blocking = True

    def __init__(self, stream_or_path: str | os.PathLike[str] | IO[Any]) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._binary = False
        if isinstance(stream_or_path, str | os.PathLike):
            path = os.fspath(stream_or_path)
            if not path:
                raise ValueError("stream_or_path must be a non-empty path or a stream")
            self._stream: IO[Any] = open(path, "a", encoding="utf-8", newline="\n")  # noqa: SIM115
            self._owned = True
            self.path: str | None = path
        elif callable(getattr(stream_or_path, "write", None)):
            self._stream = stream_or_path
            self._owned = False
            self.path = None
            mode = getattr(stream_or_path, "mode", "")
            self._binary = isinstance(stream_or_path, io.RawIOBase | io.BufferedIOBase) or (
                isinstance(mode, str) and "b" in mode
            )
        else:
            raise TypeError(
                "stream_or_path must be a path or a writable stream, "
                f"got {type(stream_or_path).__name__}"
            )

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def on_event(self, event: Event) -> None:
        """Write ``event`` as one line and flush (in this subscriber's own thread)."""
        line = json.dumps(plain_fields(event), separators=(",", ":")) + "\n"
        with self._lock:
            if self._closed:
                return
            stream = self._stream
            stream.write(line.encode() if self._binary else line)
            stream.flush()

    def close(self) -> None:
        """Stop writing; close the file if this subscriber opened it.

        A stream passed in stays open. Idempotent, and safe while the writer thread is busy.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._owned:
                self._stream.close()

    def __enter__(self) -> JsonLinesSubscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
