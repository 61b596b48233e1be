"""The status server over real HTTP on 127.0.0.1 (an OS-assigned port), with aiohttp's client."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the status server needs the status extra (aiohttp)")

import aiohttp

import taskvisor as tv
from conftest import FAST, GUARD, SupervisorFactory, forever
from taskvisor.status import StatusServer

Serve = Callable[..., Awaitable[StatusServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[StatusServer] = []

    async def start(sup: tv.Supervisor, **kwargs: Any) -> StatusServer:
        server = StatusServer(sup, "127.0.0.1", 0, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=GUARD)) as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        return await resp.json()


async def test_listens_on_an_os_assigned_loopback_port(
    make_supervisor: SupervisorFactory, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskvisor.status")
    server = await serve(make_supervisor())
    assert server.address is not None
    host, port = server.address
    assert host == "127.0.0.1"
    assert port > 0
    assert server.url == f"http://127.0.0.1:{port}/"
    assert any(server.url in r.getMessage() for r in caplog.records)


async def test_tasks_lists_registered_tasks_like_list(
    make_supervisor: SupervisorFactory, serve: Serve, http: aiohttp.ClientSession
) -> None:
    sup = make_supervisor()
    server = await serve(sup)
    sup.add(tv.TaskSpec.once("a", forever))
    sup.add(tv.TaskSpec.once("b", forever))
    data = await get_json(http, server.url + "tasks")
    expected = [
        {
            "id": int(info.id),
            "name": info.name,
            "state": info.state.value,
            "attempt": info.attempt,
            "restarts": info.restarts,
            "last_error": info.last_error,
        }
        for info in sup.list()
    ]
    assert data["tasks"] == expected
    assert [t["name"] for t in data["tasks"]] == ["a", "b"]
    assert data["finished"] == []
    assert data["closed"] is False


async def test_tasks_reports_outcomes_of_finished_tasks(
    make_supervisor: SupervisorFactory, serve: Serve, http: aiohttp.ClientSession
) -> None:
    sup = make_supervisor()
    server = await serve(sup)

    async def flaky(ctx: tv.TaskContext) -> None:
        raise tv.Fail(f"boom {ctx.attempt}", exit_code=9)

    tracked = sup.add(tv.TaskSpec.restartable("tracked", flaky, max_retries=2, backoff=FAST))
    server.track(tracked)
    async with asyncio.timeout(GUARD):
        outcome = await tracked
        untracked = await sup.add(tv.TaskSpec.once("quick", lambda_ok))
        # The untracked outcome comes from the server's own event stream, which may lag:
        # ask until it has caught up (each request yields to the loop).
        while True:
            data = await get_json(http, server.url + "tasks")
            if {f["name"] for f in data["finished"]} == {"tracked", "quick"}:
                break
    assert untracked.kind is tv.OutcomeKind.COMPLETED
    finished = {f["name"]: f for f in data["finished"]}
    assert finished["tracked"] == {
        "id": int(tracked.id),
        "name": "tracked",
        "state": "finished",
        "outcome": "failed",
        "reason": "boom 3",
        "exit_code": 9,
        "attempt": outcome.attempts,
        "restarts": 2,
        "last_error": "boom 3",
    }
    assert finished["quick"]["outcome"] == "completed"
    assert finished["quick"]["attempt"] == 1
    assert data["tasks"] == []


async def lambda_ok() -> None:
    return None


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Parse a server-sent events stream into its ``data`` objects."""
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


async def test_events_streams_supervisor_events_as_sse(
    make_supervisor: SupervisorFactory, serve: Serve, http: aiohttp.ClientSession
) -> None:
    sup = make_supervisor()
    server = await serve(sup)
    async with http.get(server.url + "events") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await resp.content.readline()
        assert first.startswith(b"retry: ")  # written once the client is subscribed
        sup.add(tv.TaskSpec.once("job", lambda_ok))
        kinds: list[str] = []
        async with asyncio.timeout(GUARD):
            async for event in sse_events(resp):
                if event.get("task") == "job":
                    kinds.append(event["kind"])
                    assert isinstance(event["seq"], int)
                    assert isinstance(event["at"], float)
                if event["kind"] == "task_removed":
                    assert event["task_id"] == 1 or isinstance(event["task_id"], int)
                    break
    assert kinds == [
        "task_add_requested",
        "task_added",
        "attempt_starting",
        "attempt_succeeded",
        "task_finished",
        "task_removed",
    ]


async def test_events_stream_ends_after_shutdown(
    make_supervisor: SupervisorFactory, serve: Serve, http: aiohttp.ClientSession
) -> None:
    sup = make_supervisor()
    server = await serve(sup)
    async with http.get(server.url + "events") as resp:
        await resp.content.readline()
        await sup.shutdown()
        kinds: list[str] = []
        async with asyncio.timeout(GUARD):
            async for event in sse_events(resp):  # ends: the server closes the stream
                kinds.append(event["kind"])
    assert kinds == ["shutdown_requested", "all_stopped_within_grace"]
    async with http.get(server.url + "events") as late, asyncio.timeout(GUARD):
        assert await late.read() == b"retry: 2000\n\n"  # a late client gets an ended stream
    data = await get_json(http, server.url + "tasks")
    assert data["closed"] is True


async def test_stop_ends_open_event_streams(
    make_supervisor: SupervisorFactory, http: aiohttp.ClientSession
) -> None:
    sup = make_supervisor()
    server = StatusServer(sup, "127.0.0.1", 0)
    await server.start()
    async with http.get(server.url + "events") as resp:
        await resp.content.readline()
        async with asyncio.timeout(GUARD):
            await server.stop()
            rest = await resp.content.read()
    assert rest.strip() == b""  # only the blank line ending the retry field
    await server.stop()  # idempotent


async def test_metrics_serves_the_given_source_or_404(
    make_supervisor: SupervisorFactory, serve: Serve, http: aiohttp.ClientSession
) -> None:
    sup = make_supervisor()

    def metrics() -> tuple[bytes, str]:
        return b"taskvisor_demo 1.0\n", "text/plain; version=0.0.4; charset=utf-8"

    with_metrics = await serve(sup, metrics=metrics)
    without = await serve(sup)
    async with http.get(with_metrics.url + "metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert await resp.text() == "taskvisor_demo 1.0\n"
    async with http.get(without.url + "metrics") as resp:
        assert resp.status == 404
        assert "prometheus" in await resp.text()


async def test_metrics_with_the_prometheus_subscriber(
    make_supervisor: SupervisorFactory, serve: Serve, http: aiohttp.ClientSession
) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from taskvisor.contrib.prometheus import PrometheusSubscriber

    registry = prometheus_client.CollectorRegistry()
    prom = PrometheusSubscriber(registry)
    sup = make_supervisor(subscribers=(prom,))
    prom.bind(sup)

    def metrics() -> tuple[bytes, str]:
        return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST

    server = await serve(sup, metrics=metrics)
    sup.add(tv.TaskSpec.once("idle", forever))
    async with http.get(server.url + "metrics") as resp:
        text = await resp.text()
    assert 'taskvisor_tasks{state="running"} 1.0' in text


async def test_the_page_is_self_contained_html(
    make_supervisor: SupervisorFactory, serve: Serve, http: aiohttp.ClientSession
) -> None:
    server = await serve(make_supervisor())
    async with http.get(server.url) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "<title>taskvisor status</title>" in page
    assert 'fetch("tasks"' in page  # live: it polls /tasks, relative to where it is served
    for external in ("http://", "https://", "<script src", "<link", "@import"):
        assert external not in page
