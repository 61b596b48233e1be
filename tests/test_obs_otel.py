"""``taskvisor.contrib.otel.OpenTelemetrySubscriber``, captured by the SDK in-memory exporter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import taskvisor as tv
from conftest import make_event
from taskvisor.contrib.otel import OpenTelemetrySubscriber
from taskvisor.testing import EventRecorder

E = tv.EventKind
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp
    tp.shutdown()


def quiet() -> tv.SupervisorConfig:
    return tv.SupervisorConfig(handle_signals=False)


def spans_of(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    spans = [s for s in exporter.get_finished_spans() if s.name == name]
    return sorted(spans, key=lambda s: s.start_time or 0)


async def fail_twice_then_succeed(ctx: tv.TaskContext) -> None:
    await ctx.sleep(0.002)
    if ctx.attempt <= 2:
        raise tv.Fail(f"db down ({ctx.attempt})", exit_code=3)


async def test_one_span_per_attempt_with_outcome_status_and_backoff(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    rec = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[OpenTelemetrySubscriber(provider), rec])
    async with asyncio.timeout(10):
        await sup.run(
            [
                tv.TaskSpec.restartable(
                    "db", fail_twice_then_succeed, backoff=tv.BackoffPolicy.constant(0.005)
                )
            ]
        )
    spans = spans_of(exporter, "db")
    assert len(spans) == 3 == len(exporter.get_finished_spans())
    task_id = rec.select(E.TASK_ADDED)[0].task_id
    for n, span in enumerate(spans, start=1):
        attrs = dict(span.attributes or {})
        assert attrs["taskvisor.task.id"] == task_id
        assert attrs["taskvisor.task.name"] == "db"
        assert attrs["taskvisor.attempt"] == n
        assert span.parent is None  # attempt spans are roots
        assert span.start_time is not None
        assert span.end_time is not None
        assert span.end_time - span.start_time >= 1_000_000  # the body slept 2 ms
    first, second, third = spans
    for n, span in ((1, first), (2, second)):
        attrs = dict(span.attributes or {})
        assert attrs["taskvisor.attempt.outcome"] == "failed"
        assert attrs["taskvisor.exit_code"] == 3
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == f"db down ({n})"
        names = [e.name for e in span.events]
        assert names == ["exception", "backoff"]
        exc = dict(span.events[0].attributes or {})
        assert exc == {"exception.message": f"db down ({n})"}
        backoff = dict(span.events[1].attributes or {})
        assert backoff == {"taskvisor.backoff.delay": 0.005, "taskvisor.backoff.source": "failure"}
    attrs = dict(third.attributes or {})
    assert attrs["taskvisor.attempt.outcome"] == "succeeded"
    assert attrs["taskvisor.task.outcome"] == "completed"
    assert "taskvisor.exit_code" not in attrs
    assert third.status.status_code is StatusCode.UNSET
    assert third.events == ()
    assert first.end_time is not None
    assert second.start_time is not None
    assert first.end_time <= second.start_time  # the attempt's own end, not the delivery time


async def test_timeout_and_cancellation(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    rec = EventRecorder()

    async def block() -> None:
        await asyncio.Event().wait()

    sup = tv.Supervisor(quiet(), subscribers=[OpenTelemetrySubscriber(provider), rec])
    async with asyncio.timeout(10), sup:
        sup.add(tv.TaskSpec.once("slow", block, timeout=0.01))
        sup.add(tv.TaskSpec.once("stopped", block))
        await rec.wait_for(E.TASK_FINISHED, task="slow")
        await rec.wait_for(E.ATTEMPT_STARTING, task="stopped")
        assert await sup.cancel("stopped") is True
    (slow,) = spans_of(exporter, "slow")
    attrs = dict(slow.attributes or {})
    assert attrs["taskvisor.attempt.outcome"] == "timed_out"
    assert attrs["taskvisor.timeout"] == 0.01
    assert attrs["taskvisor.task.outcome"] == "failed"
    assert slow.status.status_code is StatusCode.ERROR
    assert slow.status.description == "attempt timed out after 0.01s"
    assert dict(slow.events[0].attributes or {}) == {
        "exception.message": "attempt timed out after 0.01s",
        "exception.type": "TimeoutError",
    }
    (stopped,) = spans_of(exporter, "stopped")
    attrs = dict(stopped.attributes or {})
    assert attrs["taskvisor.attempt.outcome"] == "canceled"
    assert attrs["taskvisor.task.outcome"] == "canceled"
    assert stopped.status.status_code is StatusCode.UNSET  # a stop is not a failure


def test_spans_survive_dropped_events(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    sub = OpenTelemetrySubscriber(provider)
    tid = tv.TaskId(99)
    # ATTEMPT_STARTING lost to an overflow: the span is rebuilt from the terminal event.
    ended = make_event(E.ATTEMPT_FAILED, "t", tid, attempt=1, duration=0.25, reason="x")
    sub.on_event(ended)
    sub.on_event(make_event(E.TASK_REMOVED, "t", tid))  # TASK_FINISHED lost too: still ends
    (span,) = exporter.get_finished_spans()
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.end_time - span.start_time == pytest.approx(250_000_000, abs=2_000)
    assert span.status.status_code is StatusCode.ERROR
    # A terminal event never came: the next attempt's start ends the previous span.
    sub.on_event(make_event(E.ATTEMPT_STARTING, "t", tid, attempt=2))
    sub.on_event(make_event(E.ATTEMPT_STARTING, "t", tid, attempt=3))
    assert len(exporter.get_finished_spans()) == 2
    sub.on_event(make_event(E.SHUTDOWN_REQUESTED, reason="x"))  # no task id: ignored
    sub.on_event(
        make_event(E.TASK_FINISHED, "t", tid, outcome=tv.OutcomeKind.FORCE_ABORTED, reason="forced")
    )
    last = exporter.get_finished_spans()[-1]
    assert dict(last.attributes or {})["taskvisor.attempt"] == 3
    assert last.status.status_code is StatusCode.ERROR
    assert last.status.description == "forced"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="tracer_provider"):
        OpenTelemetrySubscriber(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="blocking"):
        OpenTelemetrySubscriber(blocking="yes")  # type: ignore[arg-type]
    assert OpenTelemetrySubscriber(blocking=True).blocking is True


def test_default_is_the_global_tracer_provider() -> None:
    # The global provider can be set once per process: check it in a fresh interpreter.
    code = textwrap.dedent(
        """
        import asyncio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import taskvisor as tv
        from taskvisor.contrib.otel import OpenTelemetrySubscriber

        sub = OpenTelemetrySubscriber()  # built before the global provider is configured
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        async def work():
            return None

        cfg = tv.SupervisorConfig(handle_signals=False)
        asyncio.run(tv.Supervisor(cfg, subscribers=[sub]).run([tv.TaskSpec.once("w", work)]))
        print([s.name for s in exporter.get_finished_spans()])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "['w']"


def test_example_otel_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.tracing_otel", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "span fetch-rates attempt=1 outcome=failed status=ERROR" in out.stdout
    assert "span fetch-rates attempt=2 outcome=succeeded status=UNSET" in out.stdout
