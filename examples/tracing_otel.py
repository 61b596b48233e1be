"""OpenTelemetry spans for every attempt (``python -m examples.tracing_otel``).

Needs the extra: ``pip install 'taskvisor[otel]'``. Each attempt becomes a span named after
its task, with the attempt number, its outcome, its exit code, status ``ERROR`` on failure
and a ``backoff`` span event when a retry is scheduled. Here spans go to the console, one
line each; in a service, configure your exporter (OTLP, …) on a ``TracerProvider`` with a
``BatchSpanProcessor`` and either pass it in or set it as the global provider.
"""

from __future__ import annotations

import asyncio
import sys

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import taskvisor as tv
from taskvisor.contrib.otel import OpenTelemetrySubscriber


def one_line(span: ReadableSpan) -> str:
    attrs = dict(span.attributes or {})
    duration_ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    events = ",".join(e.name for e in span.events) or "-"
    return (
        f"span {span.name} attempt={attrs.get('taskvisor.attempt')} "
        f"outcome={attrs.get('taskvisor.attempt.outcome')} "
        f"status={span.status.status_code.name} {duration_ms:.1f}ms events={events}"
        + (f" reason={span.status.description!r}" if span.status.description else "")
        + "\n"
    )


async def main(short: bool = False) -> int:
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout, formatter=one_line))
    )
    failures = 1 if short else 3

    async def fetch_rates(ctx: tv.TaskContext) -> None:
        await ctx.sleep(0.01)
        if ctx.attempt <= failures:
            raise tv.Fail("rates API returned 503", exit_code=75)

    async def slow_report(ctx: tv.TaskContext) -> None:
        await ctx.sleep(10)

    specs = [
        tv.TaskSpec.restartable(
            "fetch-rates", fetch_rates, backoff=tv.BackoffPolicy.constant(0.02)
        ),
        tv.TaskSpec.once("slow-report", slow_report, timeout=0.05),
    ]
    sup = tv.Supervisor(
        tv.SupervisorConfig(handle_signals=False),
        subscribers=[OpenTelemetrySubscriber(provider)],  # None: the global provider
    )
    await sup.run(specs)
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
