"""Prometheus metrics for taskvisor (extra ``prometheus``: ``pip install 'taskvisor[prometheus]'``).

Metric names (with the default ``namespace="taskvisor"``; the ``task`` label only when
``task_label=True``):

=============================================  =========  =====================================
``taskvisor_events_total``                     counter    ``kind``
``taskvisor_attempts_total``                   counter    ``task``, ``result``
``taskvisor_attempt_duration_seconds``         histogram  ``task``, ``result``
``taskvisor_restarts_total``                   counter    ``task``
``taskvisor_task_outcomes_total``              counter    ``task``, ``outcome``
``taskvisor_rejections_total``                 counter    ``task``, ``rejection``
``taskvisor_tasks``                            gauge      ``state`` (read from the supervisor)
``taskvisor_subscriber_overflows_total``       counter    ``subscriber``, ``reason``
``taskvisor_subscriber_dropped_events_total``  counter    ``subscriber``
``taskvisor_subscriber_panics_total``          counter    ``subscriber``
=============================================  =========  =====================================

``result`` is ``succeeded``, ``failed``, ``timed_out`` or ``canceled``; ``outcome`` an
``OutcomeKind`` label; ``state`` a ``TaskState`` label. ``subscriber_overflows_total`` counts
overflow reports (``reason`` ``full`` when an episode begins, ``recovered`` when it ends,
``closed``); ``subscriber_dropped_events_total`` adds up the events the ended episodes lost.
``restarts_total`` counts restarts as they are scheduled (one per ``BACKOFF_SCHEDULED``: the
next attempt starts after the delay, unless the task is stopped first).

Design: the subscriber is attached to each supervisor it is given to (``on_attach``), and two
metrics are read from there at scrape time, exact rather than rebuilt from events:
``tasks{state}`` (``Supervisor.state_counts()``) and ``events_total{kind}``
(``Supervisor.event_counts()``). So it asks only for the events that carry per-task data
(``event_kinds``: attempt ends, backoffs, final outcomes, rejections, subscriber trouble); a
task that starts and succeeds at once costs it two events, and the others are never built
for it. ``on_event`` only adds to plain counts under one lock; the metric families are built
when the registry is scraped, from any thread (a custom collector in prometheus_client terms).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

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

from .. import (
    Event,
    EventKind,
    OutcomeKind,
    RejectionKind,
    Subscriber,
    Supervisor,
    TaskState,
)

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
_BACKOFF = EventKind.BACKOFF_SCHEDULED
_FINISHED = EventKind.TASK_FINISHED
_ADD_FAILED = EventKind.TASK_ADD_FAILED
_REJECTED = EventKind.CONTROLLER_REJECTED
_OVERFLOW = EventKind.SUBSCRIBER_OVERFLOW
_PANICKED = EventKind.SUBSCRIBER_PANICKED
_KINDS = frozenset({*_RESULTS, _BACKOFF, _FINISHED, _ADD_FAILED, _REJECTED, _OVERFLOW, _PANICKED})
_NAMESPACE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")

Key = tuple[str, ...]
_L = TypeVar("_L", OutcomeKind, RejectionKind)


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


# One attempt series (a task, a result) is a plain list, cheaper to make and update than an
# object: [attempts, sum of durations, count in bucket 0, bucket 1, ..., +Inf] (not cumulative).
_N, _SUM, _BUCKETS = 0, 1, 2
_OUTCOME_LABELS = {o: o.value for o in OutcomeKind}  # ``member.value`` is a slow property
_REJECTION_LABELS = {r: r.value for r in RejectionKind}

# The per-task series are kept as one table per label value (result, outcome, rejection):
# label value -> task name ("" without the task label) -> series. ``on_event`` then finds its
# series with two plain lookups, and builds no key tuple.


class PrometheusSubscriber(Subscriber):
    """Exports supervision metrics to Prometheus (see the module docstring for the names).

    ``registry``: where to register (default: ``prometheus_client.REGISTRY``); one
    ``PrometheusSubscriber`` per registry and namespace. ``task_label``: label per-task metrics
    with the task name; turn it off when task names are unbounded (e.g. one per request).
    ``namespace``: the metric name prefix. ``buckets``: attempt duration upper bounds.

    Each ``Supervisor`` given this subscriber binds it (``on_attach``); ``bind(supervisor)``
    does so explicitly. A bound supervisor's ``<namespace>_tasks{state}`` and
    ``<namespace>_events_total{kind}`` are read from it at scrape time (exact, never guessed
    from events), safely from the scraping thread. ``on_event`` runs on the event loop and
    only adds to in-memory counts.
    """

    event_kinds = _KINDS
    """Only the events that carry per-task data; the supervisor counts the rest."""

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
        # Each bound supervisor's live event counts: kept after the supervisor is gone, so
        # events_total never goes backwards.
        self._event_counts: list[Mapping[EventKind, int]] = []
        self._zero_row: list[float] = [0, 0.0] + [0] * (len(self._bounds) + 1)
        self._attempts: dict[EventKind, dict[str, list[float]]] = {kind: {} for kind in _RESULTS}
        self._outcomes: dict[OutcomeKind, dict[str, int]] = {o: {} for o in OutcomeKind}
        self._rejections: dict[RejectionKind, dict[str, int]] = {r: {} for r in RejectionKind}
        self._restarts: dict[str, int] = {}
        self._overflows: dict[Key, int] = {}
        self._dropped: dict[str, int] = {}
        self._panics: dict[Key, int] = {}
        if not task_label:  # bounded label sets: every series exists from the start, at 0
            for rows in self._attempts.values():
                rows[""] = self._zero_row.copy()
            for counts in (*self._outcomes.values(), *self._rejections.values()):
                counts[""] = 0
            self._restarts[""] = 0
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
        """Export ``supervisor``'s task states and event counts (several bound add up).

        Called by every ``Supervisor`` this subscriber is given to. Only a weak reference to
        the supervisor is kept: binding never keeps it alive. Binding twice counts once.
        """
        if not isinstance(supervisor, Supervisor):
            raise TypeError(f"supervisor must be a Supervisor, got {type(supervisor).__name__}")
        with self._lock:
            self._supervisors = [r for r in self._supervisors if r() is not None]
            if not any(r() is supervisor for r in self._supervisors):
                self._supervisors.append(weakref.ref(supervisor))
                self._event_counts.append(supervisor.event_counts())

    def on_attach(self, supervisor: Supervisor) -> None:
        """Bind ``supervisor`` (called when a supervisor is built with this subscriber)."""
        self.bind(supervisor)

    def on_event(self, event: Event) -> None:
        """Count one event."""
        kind = event.kind
        task = (event.task or "") if self.task_label else ""
        with self._lock:
            rows = self._attempts.get(kind)
            if rows is not None:  # an attempt ended
                row = rows.get(task)
                if row is None:
                    row = rows[task] = self._zero_row.copy()
                row[_N] += 1
                duration = event.duration
                if duration is not None:
                    row[_BUCKETS + bisect_left(self._bounds, duration)] += 1
                    row[_SUM] += duration
            elif kind is _FINISHED:
                if event.outcome is not None:
                    counts = self._outcomes[event.outcome]
                    counts[task] = counts.get(task, 0) + 1
            elif kind is _BACKOFF:
                self._restarts[task] = self._restarts.get(task, 0) + 1
            elif kind is _ADD_FAILED or kind is _REJECTED:
                if event.outcome is not None:
                    counts = self._outcomes[event.outcome]
                    counts[task] = counts.get(task, 0) + 1
                if event.rejection is not None:
                    counts = self._rejections[event.rejection]
                    counts[task] = counts.get(task, 0) + 1
            elif kind is _OVERFLOW:
                sub = event.task or ""
                key: Key = (sub, event.reason or "")
                self._overflows[key] = self._overflows.get(key, 0) + 1
                if event.dropped:
                    self._dropped[sub] = self._dropped.get(sub, 0) + event.dropped
            elif kind is _PANICKED:
                name: Key = (event.task or "",)
                self._panics[name] = self._panics.get(name, 0) + 1


class _Collector:
    """Builds the metric families of one ``PrometheusSubscriber`` when the registry is scraped."""

    def __init__(self, sub: PrometheusSubscriber) -> None:
        self._sub = sub
        ns = sub.namespace
        tl = ["task"] if sub.task_label else []
        self._specs: list[tuple[str, str, list[str]]] = [
            (f"{ns}_events", "Events published, by kind", ["kind"]),
            (f"{ns}_attempts", "Finished attempts, by result", [*tl, "result"]),
            (f"{ns}_restarts", "Restarts scheduled (one per BACKOFF_SCHEDULED)", tl),
            (f"{ns}_task_outcomes", "Final task outcomes (rejections included)", [*tl, "outcome"]),
            (f"{ns}_rejections", "Rejected admissions, by rejection", [*tl, "rejection"]),
            (
                f"{ns}_subscriber_overflows",
                "Overflow reports, by subscriber and reason (full, recovered or closed)",
                ["subscriber", "reason"],
            ),
            (
                f"{ns}_subscriber_dropped_events",
                "Events dropped for a subscriber in its ended overflow episodes",
                ["subscriber"],
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

    def _key(self, task: str, *labels: str) -> Key:
        """The label values of a per-task series."""
        return (task, *labels) if self._sub.task_label else labels

    def _flatten(
        self, tables: Mapping[_L, dict[str, int]], names: Mapping[_L, str]
    ) -> dict[Key, int]:
        """One counter's series from its per-label tables."""
        return {
            self._key(task, names[label]): n
            for label, counts in tables.items()
            for task, n in counts.items()
        }

    def describe(self) -> Iterator[Metric]:
        for name, doc, labels in self._specs:
            yield CounterMetricFamily(name, doc, labels=labels)
        name, doc, labels = self._histogram
        yield HistogramMetricFamily(name, doc, labels=labels)
        yield GaugeMetricFamily(*self._gauge, labels=["state"])

    def collect(self) -> Iterator[Metric]:
        sub = self._sub
        with sub._lock:  # a consistent copy; the families are built outside the lock
            events = dict.fromkeys(EventKind, 0)
            for live in sub._event_counts:
                for kind, n in dict(live).items():  # one C-level copy per supervisor
                    events[kind] += n
            durations = {
                self._key(task, _RESULTS[kind]): row.copy()
                for kind, rows in sub._attempts.items()
                for task, row in rows.items()
            }
            counters: list[dict[Key, int]] = [
                {(k.value,): n for k, n in events.items()},
                {k: int(row[_N]) for k, row in durations.items()},
                {self._key(task): n for task, n in sub._restarts.items()},
                self._flatten(sub._outcomes, _OUTCOME_LABELS),
                self._flatten(sub._rejections, _REJECTION_LABELS),
                dict(sub._overflows),
                {(name,): n for name, n in sub._dropped.items()},
                dict(sub._panics),
            ]
            supervisors = [s for s in (r() for r in sub._supervisors) if s is not None]
        for (name, doc, labels), values in zip(self._specs, counters, strict=True):
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, n in values.items():
                family.add_metric(list(key), n)
            yield family
        name, doc, labels = self._histogram
        histogram = HistogramMetricFamily(name, doc, labels=labels)
        for key, row in durations.items():
            running = 0.0
            buckets: list[tuple[str, float]] = []
            for le, in_bucket in zip(self._les, row[_BUCKETS:], strict=True):
                running += in_bucket
                buckets.append((le, running))
            histogram.add_metric(list(key), buckets, row[_SUM])
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
