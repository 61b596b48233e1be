"""Prometheus metrics for a supervisor (``python -m examples.metrics_prometheus``).

Needs the extra: ``pip install 'taskvisor[prometheus]'``. The example serves ``/metrics``
on 127.0.0.1 (a free port), lets a few tasks run, scrapes the endpoint once the way
Prometheus would, prints the ``taskvisor_*`` series, and shuts down by itself.

In a real service: build the subscriber once, ``bind`` it to the supervisor so the
``taskvisor_tasks{state}`` gauge is read from the supervisor at scrape time, and serve the
registry (``start_http_server(9000)``, or your web framework's metrics endpoint).
"""

from __future__ import annotations

import asyncio
import sys
import urllib.request

from prometheus_client import CollectorRegistry, start_http_server

import taskvisor as tv
from taskvisor.contrib.prometheus import PrometheusSubscriber
from taskvisor.testing import EventRecorder


async def main(short: bool = False) -> int:
    registry = CollectorRegistry()  # the global REGISTRY by default; a fresh one here
    metrics = PrometheusSubscriber(registry)  # task_label=False for unbounded task names
    events = EventRecorder()  # only to know when to scrape in this example
    sup = tv.Supervisor(
        tv.SupervisorConfig(handle_signals=False, grace=1.0), subscribers=[metrics, events]
    )
    # Built with the subscriber, sup has bound it: tasks{state} and events_total come from sup.
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]

    failures = 1 if short else 3

    async def sync_prices(ctx: tv.TaskContext) -> None:
        await ctx.sleep(0.01)
        if ctx.attempt <= failures:
            raise tv.Fail("price feed timed out", exit_code=75)

    async def stream_quotes(ctx: tv.TaskContext) -> None:
        await ctx.cancelled()  # runs until shutdown

    async def heartbeat() -> None:
        return None

    try:
        async with sup:
            sup.add(
                tv.TaskSpec.restartable(
                    "sync-prices", sync_prices, backoff=tv.BackoffPolicy.constant(0.02)
                )
            )
            sup.add(tv.TaskSpec.once("stream-quotes", stream_quotes))
            sup.add(tv.TaskSpec.periodic("heartbeat", heartbeat, every=0.05 if short else 0.2))
            await events.wait_for(tv.EventKind.TASK_FINISHED, task="sync-prices")
            await events.wait_for(tv.EventKind.ATTEMPT_SUCCEEDED, task="heartbeat", count=3)
            url = f"http://127.0.0.1:{port}/metrics"
            body = await asyncio.to_thread(_fetch, url)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    print(f"scraped {url} while running:")
    for line in body.splitlines():
        if line.startswith("taskvisor_") and "_created" not in line and "_bucket" not in line:
            print("  " + line)
    return 0


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
