"""The status page in a real headless browser (Debian's ``chromium``).

The page is loaded once; a task then advances one attempt per ``/tasks`` response the page
receives, so the attempt count in the final DOM can only have been reached after the page
loaded: it proves that the page updates itself without a reload.

Skipped when chromium is absent, except in CI (``CI`` set), where it must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="the status server needs the status extra (aiohttp)")

from aiohttp import web

import taskvisor as tv
from conftest import FAST, SupervisorFactory, forever
from taskvisor.status import StatusServer

BROWSER_GUARD = 120.0
"""Generous bound for one headless chromium run on a loaded 2-core machine."""

ATTEMPTS = 4
"""The counter task completes on this attempt; each attempt needs one more /tasks response."""


def find_chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs Debian's chromium package)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return path


class Rows(HTMLParser):
    """Collects the status table: task name → {cell class: text}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self._row: dict[str, str] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-task"):
            self._row = {}
            self.rows[found["data-task"] or ""] = self._row
        elif tag == "td" and self._row is not None:
            self._cell = (found.get("class") or "").split()[0]
            self._row[self._cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cell is not None:
            self._row[self._cell] += data


async def dump_dom(chromium: str, url: str, profile: Path) -> str:
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Virtual time jumps over the page's 1 s poll timers but waits for each request:
        # 30 virtual seconds are about 30 polls, in far less real time.
        "--virtual-time-budget=30000",
        "--dump-dom",
        url,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # so that every chromium process can be ended together
    )
    try:
        async with asyncio.timeout(BROWSER_GUARD):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def test_the_page_renders_every_task_and_updates_live(
    make_supervisor: SupervisorFactory, tmp_path: Path
) -> None:
    chromium = find_chromium()
    served = 0
    progressed = asyncio.Event()

    async def count_polls(request: web.Request, response: web.StreamResponse) -> None:
        nonlocal served
        if request.path == "/tasks":
            served += 1
            progressed.set()

    async def counter(ctx: tv.TaskContext) -> None:
        # Attempt n waits for the n-th /tasks response: the page must keep polling.
        while served < ctx.attempt:
            progressed.clear()
            await progressed.wait()
        if ctx.attempt < ATTEMPTS:
            raise tv.Fail(f"not yet ({ctx.attempt})")

    sup = make_supervisor()
    server = StatusServer(sup, "127.0.0.1", 0)
    server.app.on_response_prepare.append(count_polls)
    await server.start()
    try:
        sup.add(tv.TaskSpec.once("steady", forever))
        counted = sup.add(tv.TaskSpec.restartable("counter", counter, backoff=FAST))
        server.track(counted)
        page = await dump_dom(chromium, server.url, tmp_path / "profile")
    finally:
        await server.stop()
    rows = Rows()
    rows.feed(page)
    assert set(rows.rows) == {"steady", "counter"}, page
    assert rows.rows["steady"]["state"] == "running"
    assert rows.rows["steady"]["attempt"] == "1"
    final = rows.rows["counter"]
    assert final["outcome"] == "completed", page
    assert final["attempt"] == str(ATTEMPTS)  # reached only after 3 polls answered
    assert final["restarts"] == str(ATTEMPTS - 1)
    assert final["last-error"] == f"not yet ({ATTEMPTS - 1})"
    assert served > ATTEMPTS  # and the page went on polling after that
    assert "live" in page
