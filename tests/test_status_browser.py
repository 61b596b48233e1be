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


def test_the_page_of_a_run_shows_dependencies_probes_and_output(tmp_path: Path) -> None:
    """``taskvisor run`` with ``after``, probes and output; the page as a browser renders it.

    Set ``TASKVISOR_SCREENSHOT=/path/shot.png`` to keep a screenshot of the page.
    """
    import json
    import subprocess
    import sys
    import time
    import urllib.request

    chromium = find_chromium()
    sh = '["sh", "-c", "echo db listening; exec sleep 60"]'
    web = '["sh", "-c", "echo serving on 8000; echo warming cache >&2; exec sleep 60"]'
    crash = json.dumps([sys.executable, "-c", "raise SystemExit('config missing')"])
    (tmp_path / "page.toml").write_text(
        f"""
[[task]]
name = "db"
command = {sh}
ready = {{ log = "listening", timeout = 30 }}

[[task]]
name = "web"
command = {web}
after = ["db"]
health = {{ command = ["true"], every = 0.1 }}

[[task]]
name = "worker"
command = {crash}
after = ["web"]
backoff = {{ first = 5.0, max = 5.0 }}

[status]
listen = "127.0.0.1:0"
""",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskvisor", "run", str(tmp_path / "page.toml")],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = ""
        while not url:
            line = proc.stderr.readline()
            assert line, "taskvisor run ended early"
            if "status page at http://" in line:
                url = line.strip().rsplit(" ", 1)[1]
        deadline = time.monotonic() + BROWSER_GUARD
        while True:  # poll until the health probe and the worker's failure are on the page
            with urllib.request.urlopen(url + "tasks", timeout=BROWSER_GUARD) as resp:
                tasks = {t["name"]: t for t in json.load(resp)["tasks"]}
            if (tasks.get("web") or {}).get("health_probe", {}).get("at") and (
                tasks.get("worker") or {}
            ).get("last_error"):
                break
            assert time.monotonic() < deadline, tasks
            time.sleep(0.05)
        page = asyncio.run(dump_dom(chromium, url, tmp_path / "profile"))
        shot = os.environ.get("TASKVISOR_SCREENSHOT")
        if shot:
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    f"--user-data-dir={tmp_path / 'profile2'}",
                    "--window-size=1280,640",
                    "--virtual-time-budget=3000",
                    f"--screenshot={shot}",
                    url,
                ],
                capture_output=True,
                timeout=BROWSER_GUARD,
                check=True,
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(BROWSER_GUARD)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
    rows = Rows()
    rows.feed(page)
    assert set(rows.rows) == {"db", "web", "worker"}, page
    assert rows.rows["web"]["after"] == "db"
    assert rows.rows["worker"]["after"] == "web"
    assert "✓ ready log /listening/" in rows.rows["db"]["probes"]
    assert "✓ health command ['true']" in rows.rows["web"]["probes"]
    assert rows.rows["worker"]["last-error"].endswith("exited with code 1: config missing")
    assert rows.rows["web"]["pid"].isdigit()
    assert 'data-output-for="web"' in page
    assert "serving on 8000" in page
    assert "warming cache" in page
