"""The status server: one supervisor's tasks over HTTP, served on the supervisor's own loop.

Routes (all ``GET``):

- ``/tasks``: JSON ``{"tasks": [...], "finished": [...], "closed": bool, "recent_events":
  [...]}``: every registered task as ``Supervisor.list()`` gives it, then the outcomes of
  finished tasks (newest last, at most ``keep_finished``), then the latest events. A
  ``details`` source adds fields per task name (the command line adds ``after``, probe
  results, the pid and the last output lines); ``hidden`` names are left out.
- ``/events``: server-sent events, one ``data:`` JSON object per supervisor event (the same
  fields as ``Event``, ``None`` left out), fed by ``sup.events()``; ends after shutdown.
- ``/metrics``: Prometheus text, when a metrics source was given.
- ``/``: a self-contained HTML page that polls ``/tasks`` and shows every task live.

Needs aiohttp (the ``status`` extra). Everything runs on the loop that runs the supervisor;
nothing here calls the supervisor from another thread. There is no authentication: keep it
on loopback (the default) or behind something that adds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import fields
from importlib import resources
from typing import Any

from aiohttp import web

from ._context import TaskId
from ._events import Event, EventKind
from ._fanout import EventStream
from ._outcome import TaskHandle, TaskOutcome
from ._registry import TaskInfo
from ._supervisor import Supervisor

_log = logging.getLogger("taskvisor.status")

MetricsSource = Callable[[], tuple[bytes, str]]
"""Returns the Prometheus exposition text and its content type."""

DetailsSource = Callable[[], Mapping[str, Mapping[str, Any]]]
"""Returns extra JSON fields per task name (the command line's dependencies, probes, output)."""

_KEEPALIVE = 15.0
"""Seconds between comment lines on an idle ``/events`` stream (proxies drop silent ones)."""

_CLIENT_BACKLOG = 1024
"""Events queued for one slow ``/events`` client before it is disconnected (it reconnects)."""

_EVENT_FIELDS = tuple(f.name for f in fields(Event))


def event_json(event: Event) -> dict[str, Any]:
    """An event as a JSON-ready dict: enums as their labels, ``None`` fields left out."""
    out: dict[str, Any] = {}
    for name in _EVENT_FIELDS:
        value = getattr(event, name)
        if value is None or name == "error":  # the exception's text is the reason already
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, TaskId):
            value = int(value)
        out[name] = value
    return out


def info_json(info: TaskInfo) -> dict[str, Any]:
    """A ``TaskInfo`` as a JSON-ready dict."""
    return {
        "id": int(info.id),
        "name": info.name,
        "state": info.state.value,
        "attempt": info.attempt,
        "restarts": info.restarts,
        "last_error": info.last_error,
    }


class _Client:
    """One ``/events`` connection's queue."""

    __slots__ = ("closed", "items", "wakeup")

    def __init__(self) -> None:
        self.items: deque[dict[str, Any]] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False

    def offer(self, item: dict[str, Any]) -> None:
        if len(self.items) >= _CLIENT_BACKLOG:
            self.close()  # too slow: drop it rather than grow without bound
        else:
            self.items.append(item)
            self.wakeup.set()

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()


class StatusServer:
    """Serves ``sup``'s state on ``host:port`` (port 0: any free port; see ``url``)."""

    def __init__(
        self,
        sup: Supervisor,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        metrics: MetricsSource | None = None,
        keep_finished: int = 1000,
        keep_events: int = 50,
        details: DetailsSource | None = None,
        hidden: Collection[str] = (),
    ) -> None:
        self._sup = sup
        self._details = details
        self._hidden = frozenset(hidden)
        self._host = host
        self._port = port
        self._metrics = metrics
        self._keep_finished = keep_finished
        self._finished: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._exact: set[int] = set()  # finished entries taken from a handle's outcome
        self._attempts: dict[int, int] = {}
        self._errors: dict[int, str] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep_events)
        self._clients: set[_Client] = set()
        self._ended = False
        self._watchers: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None
        """The bound host and port, once started."""
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/tasks", self._tasks)
        app.router.add_get("/events", self._events)
        app.router.add_get("/metrics", self._metrics_view)
        self.app = app
        """The aiohttp application (add routes or signals before ``start``)."""

    @property
    def url(self) -> str:
        """``http://host:port/`` of the running server."""
        if self.address is None:
            raise RuntimeError("the status server is not started")
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    async def start(self) -> None:
        """Subscribe to the supervisor's events and start listening."""
        stream = self._sup.events(capacity=4096)
        self._pump = asyncio.create_task(self._consume(stream), name="taskvisor:status-events")
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            self._pump.cancel()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.address = (str(host), int(port))
        _log.info("status page at %s", self.url)

    def track(self, handle: TaskHandle) -> None:
        """Report ``handle``'s exact outcome (rather than the event's) once it finishes."""
        task = asyncio.create_task(self._watch(handle))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def stop(self) -> None:
        """End every ``/events`` stream and stop listening. Idempotent."""
        self._ended = True
        for client in list(self._clients):
            client.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for task in (self._pump, *self._watchers):
            if task is not None:
                task.cancel()
        pending = [t for t in (self._pump, *self._watchers) if t is not None]
        if pending:
            await asyncio.wait(pending)

    # ------------------------------------------------------------------ state

    async def _watch(self, handle: TaskHandle) -> None:
        outcome = await handle
        self._record(int(handle.id), handle.name, outcome)

    def _record(self, task_id: int, name: str, outcome: TaskOutcome) -> None:
        self._exact.add(task_id)
        self._remember(
            task_id,
            name,
            outcome.kind.value,
            outcome.reason,
            outcome.exit_code,
            outcome.attempts,
        )

    def _remember(
        self,
        task_id: int,
        name: str,
        outcome: str,
        reason: str | None,
        exit_code: int | None,
        attempts: int,
    ) -> None:
        finished = self._finished
        finished[task_id] = {
            "id": task_id,
            "name": name,
            "state": "finished",
            "outcome": outcome,
            "reason": reason,
            "exit_code": exit_code,
            "attempt": attempts,
            "restarts": max(0, attempts - 1),
            "last_error": self._errors.get(task_id),
        }
        finished.move_to_end(task_id)
        while len(finished) > self._keep_finished:
            old, _ = finished.popitem(last=False)
            self._exact.discard(old)
            self._attempts.pop(old, None)
            self._errors.pop(old, None)

    def _note(self, event: Event) -> None:
        task_id = event.task_id
        if task_id is None:
            return
        key = int(task_id)
        kind = event.kind
        if kind is EventKind.ATTEMPT_STARTING and event.attempt is not None:
            self._attempts[key] = event.attempt
        elif kind is EventKind.ATTEMPT_FAILED and event.reason is not None:
            self._errors[key] = event.reason
        elif kind is EventKind.ATTEMPT_TIMED_OUT:
            self._errors[key] = f"attempt timed out after {event.timeout}s"
        elif kind is EventKind.TASK_FINISHED:
            if key not in self._exact and event.outcome is not None and event.task is not None:
                self._remember(
                    key,
                    event.task,
                    event.outcome.value,
                    event.reason,
                    event.exit_code,
                    self._attempts.get(key, 0),
                )
            elif key in self._finished:
                self._finished[key]["last_error"] = self._errors.get(key)

    async def _consume(self, stream: EventStream) -> None:
        try:
            async for event in stream:
                self._note(event)
                item = event_json(event)
                self._recent.append(item)
                for client in list(self._clients):
                    client.offer(item)
        finally:
            self._ended = True
            for client in list(self._clients):
                client.close()
            await stream.aclose()

    # ------------------------------------------------------------------ views

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=_page_html(),
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    async def _tasks(self, request: web.Request) -> web.Response:
        sup = self._sup
        hidden = self._hidden
        live = [info_json(info) for info in sup.list() if info.name not in hidden]
        ids = {item["id"] for item in live}
        finished = [
            item
            for key, item in self._finished.items()
            if key not in ids and item["name"] not in hidden
        ]
        if self._details is not None:
            details = self._details()
            live = [{**item, **details.get(item["name"], {})} for item in live]
            finished = [{**item, **details.get(item["name"], {})} for item in finished]
        events = (
            [e for e in self._recent if e.get("task") not in hidden] if hidden else self._recent
        )
        body = {
            "tasks": live,
            "finished": finished,
            "closed": sup.closed,
            "recent_events": list(events),
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def _metrics_view(self, request: web.Request) -> web.Response:
        if self._metrics is None:
            return web.Response(
                status=404,
                text="no metrics: install prometheus_client (the prometheus extra)\n",
            )
        body, content_type = self._metrics()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        client = _Client()
        if self._ended:
            client.close()
        else:
            self._clients.add(client)
        try:
            await resp.write(b"retry: 2000\n\n")
            while True:
                while client.items:
                    item = client.items.popleft()
                    data = json.dumps(item, separators=(",", ":"))
                    await resp.write(f"id: {item['seq']}\ndata: {data}\n\n".encode())
                if client.closed:
                    break
                client.wakeup.clear()
                try:
                    async with asyncio.timeout(_KEEPALIVE):
                        await client.wakeup.wait()
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            self._clients.discard(client)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp


def _page_html() -> str:
    return resources.files("taskvisor").joinpath("_status_page.html").read_text("utf-8")
