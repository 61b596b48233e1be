"""Prometheus metrics for taskvisor (extra ``prometheus``: ``pip install 'taskvisor[prometheus]'``).

Metric names (with the default ``namespace="taskvisor"``; the ``task`` label only when
``task_label=True``):

==========================================  =========  =====================================
``taskvisor_events_total``                  counter    ``kind``
``taskvisor_attempts_total``                counter    ``task``, ``result``
``taskvisor_attempt_duration_seconds``      histogram  ``task``, ``result``
``taskvisor_restarts_total``                counter    ``task``
``taskvisor_task_outcomes_total``           counter    ``task``, ``outcome``
``taskvisor_rejections_total``              counter    ``task``, ``rejection``
``taskvisor_tasks``                         gauge      ``state`` (read from the supervisor)
``taskvisor_subscriber_overflows_total``    counter    ``subscriber``, ``reason``
``taskvisor_subscriber_panics_total``       counter    ``subscriber``
==========================================  =========  =====================================

``result`` is ``succeeded``, ``failed``, ``timed_out`` or ``canceled``; ``outcome`` an
``OutcomeKind`` label; ``state`` a ``TaskState`` label.

Design: ``on_event`` only adds to plain counts under one lock (no per-series objects, so a
new task name costs a few dictionary entries); the metric families are built when the
registry is scraped, from any thread. This is a custom collector in prometheus_client terms.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        "taskvisor.contrib.prometheus needs the prometheus_client package; "
        "install the extra: pip install 'taskvisor[prometheus]'",
        name=exc.name,
    ) from exc

from .. import Event, EventKind, OutcomeKind, RejectionKind, Subscriber, Supervisor, TaskState

__all__ = ["DEFAULT_BUCKETS", "PrometheusSubscriber"]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""Attempt duration buckets (seconds, ``+Inf`` implied): from quick jobs to hour-long attempts."""

_RESULTS: dict[EventKind, str] = {
    EventKind.ATTEMPT_SUCCEEDED: "succeeded",
    EventKind.ATTEMPT_FAILED: "failed",
    EventKind.ATTEMPT_TIMED_OUT: "timed_out",
    EventKind.ATTEMPT_CANCELED: "canceled",
}
_NAMESPACE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")

Key = tuple[str, ...]


def _check_buckets(buckets: object) -> tuple[float, ...]:
    if isinstance(buckets, str) or not isinstance(buckets, Iterable):
        raise TypeError(f"buckets must be a sequence of numbers, got {type(buckets).__name__}")
    bounds: list[float] = []
    for b in buckets:
        if isinstance(b, bool) or not isinstance(b, int | float):
            raise TypeError(f"buckets must hold numbers, got {b!r}")
        bounds.append(float(b))
    if bounds and bounds[-1] == math.inf:
        bounds.pop()  # +Inf is always there
    if not bounds:
        raise ValueError("buckets must hold at least one finite upper bound")
    for lo, hi in itertools.pairwise(bounds):
        if not lo < hi:
            raise ValueError(f"buckets must be strictly increasing, got {lo} before {hi}")
    if not all(math.isfinite(b) for b in bounds):
        raise ValueError("buckets must be finite (+Inf is implied)")
    return tuple(bounds)


class _Histogram:
    """Counts per bucket (not cumulative; the last one is ``+Inf``) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


class PrometheusSubscriber(Subscriber):
    """Exports supervision metrics to Prometheus (see the module docstring for the names).

    ``registry``: where to register (default: ``prometheus_client.REGISTRY``); one
    ``PrometheusSubscriber`` per registry and namespace. ``task_label``: label per-task metrics
    with the task name; turn it off when task names are unbounded (e.g. one per request).
    ``namespace``: the metric name prefix. ``buckets``: attempt duration upper bounds.

    Call ``bind(supervisor)`` to export ``<namespace>_tasks{state}``: it is read from the
    supervisor's registry at scrape time (exact, never guessed from events), safely from the
    scraping thread. ``on_event`` runs on the event loop and only adds to in-memory counts.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        task_label: bool = True,
        *,
        namespace: str = "taskvisor",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if registry is None:
            registry = REGISTRY
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a prometheus_client CollectorRegistry or None, "
                f"got {type(registry).__name__}"
            )
        if not isinstance(task_label, bool):
            raise TypeError(f"task_label must be a bool, got {type(task_label).__name__}")
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
        if not _NAMESPACE.match(namespace):
            raise ValueError(f"namespace must be a valid Prometheus metric name, got {namespace!r}")
        self.registry = registry
        self.task_label = task_label
        self.namespace = namespace
        self._bounds = _check_buckets(buckets)
        self._lock = threading.Lock()
        self._supervisors: list[weakref.ref[Supervisor]] = []
        self._events: dict[EventKind, int] = dict.fromkeys(EventKind, 0)
        self._attempts: dict[Key, int] = {}
        self._durations: dict[Key, _Histogram] = {}
        self._restarts: dict[Key, int] = {}
        self._outcomes: dict[Key, int] = {}
        self._rejections: dict[Key, int] = {}
        self._overflows: dict[Key, int] = {}
        self._panics: dict[Key, int] = {}
        if not task_label:  # bounded label sets: every series exists from the start, at 0
            for result in _RESULTS.values():
                self._attempts[(result,)] = 0
                self._durations[(result,)] = _Histogram(len(self._bounds) + 1)
            self._outcomes.update({(o.value,): 0 for o in OutcomeKind})
            self._rejections.update({(r.value,): 0 for r in RejectionKind})
            self._restarts[()] = 0
        self._collector = _Collector(self)
        try:
            registry.register(self._collector)
        except ValueError as exc:
            raise ValueError(
                f"{exc}: one PrometheusSubscriber per registry and namespace "
                "(pass another registry= or namespace=)"
            ) from None

    def unregister(self) -> None:
        """Remove this subscriber's metrics from its registry (e.g. between tests). Idempotent."""
        with contextlib.suppress(KeyError):
            self.registry.unregister(self._collector)

    def bind(self, supervisor: Supervisor) -> None:
        """Export ``<namespace>_tasks{state}`` from ``supervisor`` (several bound add up).

        Only a weak reference is kept: binding never keeps a supervisor alive.
        """
        if not isinstance(supervisor, Supervisor):
            raise TypeError(f"supervisor must be a Supervisor, got {type(supervisor).__name__}")
        with self._lock:
            self._supervisors = [r for r in self._supervisors if r() is not None]
            if not any(r() is supervisor for r in self._supervisors):
                self._supervisors.append(weakref.ref(supervisor))

    def on_event(self, event: Event) -> None:
        """Count one event."""
        kind = event.kind
        task: Key = (event.task or "",) if self.task_label else ()
        with self._lock:
            self._events[kind] = self._events.get(kind, 0) + 1
            if kind is EventKind.ATTEMPT_STARTING:
                if event.attempt is not None and event.attempt > 1:
                    self._restarts[task] = self._restarts.get(task, 0) + 1
                return
            result = _RESULTS.get(kind)
            if result is not None:
                key = (*task, result)
                self._attempts[key] = self._attempts.get(key, 0) + 1
                duration = event.duration
                if duration is not None:
                    h = self._durations.get(key)
                    if h is None:
                        h = self._durations[key] = _Histogram(len(self._bounds) + 1)
                    h.counts[bisect.bisect_left(self._bounds, duration)] += 1
                    h.total += duration
            elif kind is EventKind.TASK_FINISHED:
                if event.outcome is not None:
                    key = (*task, event.outcome.value)
                    self._outcomes[key] = self._outcomes.get(key, 0) + 1
            elif kind is EventKind.TASK_ADD_FAILED or kind is EventKind.CONTROLLER_REJECTED:
                if event.outcome is not None:
                    key = (*task, event.outcome.value)
                    self._outcomes[key] = self._outcomes.get(key, 0) + 1
                if event.rejection is not None:
                    key = (*task, event.rejection.value)
                    self._rejections[key] = self._rejections.get(key, 0) + 1
            elif kind is EventKind.SUBSCRIBER_OVERFLOW:
                key = (event.task or "", event.reason or "")
                self._overflows[key] = self._overflows.get(key, 0) + 1
            elif kind is EventKind.SUBSCRIBER_PANICKED:
                key = (event.task or "",)
                self._panics[key] = self._panics.get(key, 0) + 1


class _Collector:
    """Builds the metric families of one ``PrometheusSubscriber`` when the registry is scraped."""

    def __init__(self, sub: PrometheusSubscriber) -> None:
        self._sub = sub
        ns = sub.namespace
        tl = ["task"] if sub.task_label else []
        self._specs: list[tuple[str, str, list[str]]] = [
            (f"{ns}_events", "Events published, by kind", ["kind"]),
            (f"{ns}_attempts", "Finished attempts, by result", [*tl, "result"]),
            (f"{ns}_restarts", "Attempts started after a task's first", tl),
            (f"{ns}_task_outcomes", "Final task outcomes (rejections included)", [*tl, "outcome"]),
            (f"{ns}_rejections", "Rejected admissions, by rejection", [*tl, "rejection"]),
            (
                f"{ns}_subscriber_overflows",
                "Events dropped for a subscriber, by subscriber and reason (full or closed)",
                ["subscriber", "reason"],
            ),
            (
                f"{ns}_subscriber_panics",
                "Exceptions raised by a subscriber's on_event, by subscriber",
                ["subscriber"],
            ),
        ]
        self._histogram = (
            f"{ns}_attempt_duration_seconds",
            "Attempt duration in seconds, by result",
            [*tl, "result"],
        )
        self._gauge = (f"{ns}_tasks", "Registered tasks by state (read from the supervisor)")
        les = [repr(b) for b in sub._bounds]
        self._les = [*les, "+Inf"]

    def describe(self) -> Iterator[Metric]:
        for name, doc, labels in self._specs:
            yield CounterMetricFamily(name, doc, labels=labels)
        name, doc, labels = self._histogram
        yield HistogramMetricFamily(name, doc, labels=labels)
        yield GaugeMetricFamily(*self._gauge, labels=["state"])

    def collect(self) -> Iterator[Metric]:
        sub = self._sub
        with sub._lock:  # a consistent copy; the families are built outside the lock
            counters: list[dict[Key, int]] = [
                {(k.value,): n for k, n in sub._events.items()},
                dict(sub._attempts),
                dict(sub._restarts),
                dict(sub._outcomes),
                dict(sub._rejections),
                dict(sub._overflows),
                dict(sub._panics),
            ]
            durations = {k: (list(h.counts), h.total) for k, h in sub._durations.items()}
            supervisors = [s for s in (r() for r in sub._supervisors) if s is not None]
        for (name, doc, labels), values in zip(self._specs, counters, strict=True):
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, n in values.items():
                family.add_metric(list(key), n)
            yield family
        name, doc, labels = self._histogram
        histogram = HistogramMetricFamily(name, doc, labels=labels)
        for key, (counts, total) in durations.items():
            running = 0
            buckets: list[tuple[str, float]] = []
            for le, n in zip(self._les, counts, strict=True):
                running += n
                buckets.append((le, running))
            histogram.add_metric(list(key), buckets, total)
        yield histogram
        gauge = GaugeMetricFamily(*self._gauge, labels=["state"])
        if supervisors:
            states = dict.fromkeys(TaskState, 0)
            for sup in supervisors:
                for state, n in sup.state_counts().items():
                    states[state] += n
            for state, n in states.items():
                gauge.add_metric([state.value], n)
        yield gauge
