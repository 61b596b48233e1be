"""What the ready-made subscribers cost: per event, and on a batch of tasks.

Per event (``on_event`` called directly on pre-built events, no fan-out): a realistic mix —
each task's life is add requested, added, attempt 1 starting, failed, backoff, attempt 2
starting, succeeded, finished, removed — over 50 task names.

- ``event noop``: a subscriber that does nothing (the baseline of the per-event rows);
- ``event recorder``: ``taskvisor.testing.EventRecorder``;
- ``event log off``: ``LogSubscriber`` on a logger disabled for every level;
- ``event log on``: ``LogSubscriber`` at DEBUG, a ``StreamHandler`` writing to ``os.devnull``
  (goal ≤ 13.5 µs per event, the figure before issue 19);
- ``event jsonl``: ``JsonLinesSubscriber`` on ``os.devnull`` (json, write and flush per line;
  goal ≤ 4.7 µs per event, the figure before issue 19);
- ``event prometheus``: ``PrometheusSubscriber`` (fresh registry; task label on), and
  ``event prometheus no-task`` with ``task_label=False``;
- ``event otel``: ``OpenTelemetrySubscriber`` on an SDK ``TracerProvider`` with a
  ``SimpleSpanProcessor`` and an exporter that drops the spans.

Batch (per task): ``n`` one-shot tasks with an empty body through ``Supervisor.run``, timed
from the call to the returned report (shutdown and subscriber drain included):

- ``batch none``: no subscriber — the supervisor skips building events altogether;
- ``batch null``: one no-op subscriber — the cost of building and fanning out the events;
- ``batch prometheus``: the ``PrometheusSubscriber`` attached. Goal: within 1.6× of
  ``batch none``; ``batch prometheus vs null`` is the same run compared with ``batch null``
  (what the Prometheus subscriber itself adds; goal 1.5×);
- ``batch jsonl``, ``batch log``, ``batch otel``: for comparison (``jsonl`` goes through the
  fan-out's thread for blocking subscribers; ``log`` is at INFO to ``os.devnull``).

Run: ``.venv/bin/python -m benchmarks subscribers`` (``--quick`` for a short run).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

import taskvisor as tv
from benchmarks.harness import Case, Goal
from taskvisor.contrib.otel import OpenTelemetrySubscriber
from taskvisor.contrib.prometheus import PrometheusSubscriber
from taskvisor.subscribers import JsonLinesSubscriber, LogSubscriber
from taskvisor.testing import EventRecorder

EVENT_OPS = 20_000
BATCH_OPS = 2_000
E = tv.EventKind
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - shared by the log handlers, never closed


class NoOp:
    """A subscriber that does nothing with its events."""

    queue_capacity = 1 << 20

    def on_event(self, event: tv.Event) -> None:
        pass


class DropSpans(SpanExporter):
    """An exporter that accepts spans and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


_seq = itertools.count(1)


def new_event(
    kind: tv.EventKind, task: str, task_id: tv.TaskId | None = None, **fields: Any
) -> tv.Event:
    return tv.Event(seq=next(_seq), at=time.time(), kind=kind, task=task, task_id=task_id, **fields)


def _life(i: int) -> list[tv.Event]:
    name = f"task-{i % 50}"
    tid = tv.TaskId(i + 1)
    return [
        new_event(E.TASK_ADD_REQUESTED, name),
        new_event(E.TASK_ADDED, name, tid),
        new_event(E.ATTEMPT_STARTING, name, tid, attempt=1),
        new_event(
            E.ATTEMPT_FAILED, name, tid, attempt=1, duration=0.012, reason="refused", exit_code=75
        ),
        new_event(
            E.BACKOFF_SCHEDULED,
            name,
            tid,
            attempt=1,
            delay=0.2,
            backoff_source=tv.BackoffSource.FAILURE,
            reason="refused",
        ),
        new_event(E.ATTEMPT_STARTING, name, tid, attempt=2),
        new_event(E.ATTEMPT_SUCCEEDED, name, tid, attempt=2, duration=0.034),
        new_event(E.TASK_FINISHED, name, tid, outcome=tv.OutcomeKind.COMPLETED),
        new_event(E.TASK_REMOVED, name, tid),
    ]


def _events(n: int) -> list[tv.Event]:
    events: list[tv.Event] = []
    i = 0
    while len(events) < n:
        events.extend(_life(i))
        i += 1
    return events[:n]


def _quiet_logger(name: str, level: int) -> logging.Logger:
    logger = logging.getLogger(f"taskvisor.bench.{name}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level)
    if level <= logging.CRITICAL:
        handler = logging.StreamHandler(_DEVNULL)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


def _otel() -> OpenTelemetrySubscriber:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(DropSpans()))
    return OpenTelemetrySubscriber(provider)


# --------------------------------------------------------------------------- per event


class _HasOnEvent(Protocol):
    def on_event(self, event: tv.Event, /) -> object: ...


def per_event(make: Callable[[], _HasOnEvent]) -> Callable[[int], float]:
    """``n`` events handed straight to ``make()``'s ``on_event``."""

    def run(n: int) -> float:
        events = _events(n)
        sub = make()
        on_event = sub.on_event
        t0 = time.perf_counter()
        for e in events:
            on_event(e)
        elapsed = time.perf_counter() - t0
        _dispose(sub)
        return elapsed

    return run


def _dispose(sub: object) -> None:
    if isinstance(sub, JsonLinesSubscriber):
        sub.close()
    elif isinstance(sub, PrometheusSubscriber):
        sub.unregister()


# --------------------------------------------------------------------------- batch


async def _empty() -> None:
    pass


def batch(make: Callable[[], list[object]]) -> Callable[[int], Awaitable[float]]:
    """``n`` one-shot tasks through ``Supervisor.run`` with ``make()``'s subscribers."""

    async def run(n: int) -> float:
        specs = [tv.TaskSpec.once(f"t{i}", _empty) for i in range(n)]
        subs = make()
        sup = tv.Supervisor(
            tv.SupervisorConfig(handle_signals=False, subscriber_shutdown_timeout=60.0),
            subscribers=subs,
        )
        t0 = time.perf_counter()
        await sup.run(specs)
        elapsed = time.perf_counter() - t0
        for s in subs:
            _dispose(s)
        return elapsed

    return run


def _prometheus() -> PrometheusSubscriber:
    sub = PrometheusSubscriber(CollectorRegistry())
    sub.queue_capacity = 1 << 20
    return sub


def _jsonl() -> JsonLinesSubscriber:
    sub = JsonLinesSubscriber(os.devnull)
    sub.queue_capacity = 1 << 20
    return sub


def _log(level: int) -> LogSubscriber:
    sub = LogSubscriber(_quiet_logger(f"batch{level}", level))
    sub.queue_capacity = 1 << 20
    return sub


def _big_otel() -> OpenTelemetrySubscriber:
    sub = _otel()
    sub.queue_capacity = 1 << 20
    return sub


CASES: list[Case] = [
    Case("event noop", per_event(NoOp), EVENT_OPS, unit="event"),
    Case(
        "event recorder", per_event(EventRecorder), EVENT_OPS, unit="event", baseline="event noop"
    ),
    Case(
        "event log off",
        per_event(lambda: LogSubscriber(_quiet_logger("off", logging.CRITICAL + 1))),
        EVENT_OPS,
        unit="event",
        baseline="event noop",
        goal=Goal(max_per_op=1e-6),
    ),
    Case(
        "event log on",
        per_event(lambda: LogSubscriber(_quiet_logger("on", logging.DEBUG))),
        EVENT_OPS,
        unit="event",
        baseline="event noop",
        goal=Goal(max_per_op=13.5e-6),
    ),
    Case(
        "event jsonl",
        per_event(lambda: JsonLinesSubscriber(os.devnull)),
        EVENT_OPS,
        unit="event",
        baseline="event noop",
        goal=Goal(max_per_op=4.7e-6),
    ),
    Case(
        "event prometheus",
        per_event(lambda: PrometheusSubscriber(CollectorRegistry())),
        EVENT_OPS,
        unit="event",
        baseline="event noop",
        goal=Goal(max_per_op=2e-6),
    ),
    Case(
        "event prometheus no-task",
        per_event(lambda: PrometheusSubscriber(CollectorRegistry(), task_label=False)),
        EVENT_OPS,
        unit="event",
        baseline="event noop",
        goal=Goal(max_per_op=2e-6),
    ),
    Case("event otel", per_event(_otel), EVENT_OPS, unit="event", baseline="event noop"),
    Case("batch none", batch(list), BATCH_OPS, unit="task"),
    Case("batch null", batch(lambda: [NoOp()]), BATCH_OPS, unit="task", baseline="batch none"),
    Case(
        "batch prometheus",
        batch(lambda: [_prometheus()]),
        BATCH_OPS,
        unit="task",
        baseline="batch none",
        goal=Goal(max_ratio=1.6),
    ),
    Case(
        "batch prometheus vs null",
        batch(lambda: [_prometheus()]),
        BATCH_OPS,
        unit="task",
        baseline="batch null",
        goal=Goal(max_ratio=1.5),
    ),
    Case("batch jsonl", batch(lambda: [_jsonl()]), BATCH_OPS, unit="task", baseline="batch none"),
    Case(
        "batch log",
        batch(lambda: [_log(logging.INFO)]),
        BATCH_OPS,
        unit="task",
        baseline="batch none",
    ),
    Case("batch otel", batch(lambda: [_big_otel()]), BATCH_OPS, unit="task", baseline="batch none"),
]
