"""OpenTelemetry tracing for taskvisor (extra ``otel``: ``pip install 'taskvisor[otel]'``).

One span per attempt, named after the task, from ``ATTEMPT_STARTING`` to the attempt's
terminal event (timestamps taken from the events, not from delivery). Attributes:

- ``taskvisor.task.name``, ``taskvisor.task.id``, ``taskvisor.attempt``;
- ``taskvisor.attempt.outcome``: ``succeeded``, ``failed``, ``timed_out`` or ``canceled``;
- ``taskvisor.exit_code`` (a ``Fail``/``Fatal`` exit code), ``taskvisor.timeout``;
- ``taskvisor.task.outcome`` on the task's last attempt (an ``OutcomeKind`` label).

A failed or timed-out attempt gets status ``ERROR`` with the reason as description, and an
``exception`` span event whose ``exception.message`` is the reason text (events carry the
reason, not the exception object, so there is no type or stack trace; ``TimeoutError`` is
the type of an attempt timeout). A ``BACKOFF_SCHEDULED`` that follows an attempt becomes a
``backoff`` span event on it (``taskvisor.backoff.delay``, ``taskvisor.backoff.source``).
"""

from __future__ import annotations

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        "taskvisor.contrib.otel needs the opentelemetry-api package (and an SDK to export); "
        "install the extra: pip install 'taskvisor[otel]'",
        name=exc.name,
    ) from exc

from .. import Event, EventKind, OutcomeKind, Subscriber, __version__

__all__ = ["OpenTelemetrySubscriber"]

_RESULTS: dict[EventKind, str] = {
    EventKind.ATTEMPT_SUCCEEDED: "succeeded",
    EventKind.ATTEMPT_FAILED: "failed",
    EventKind.ATTEMPT_TIMED_OUT: "timed_out",
    EventKind.ATTEMPT_CANCELED: "canceled",
}
_ERROR_OUTCOMES = frozenset({OutcomeKind.FAILED, OutcomeKind.FATAL, OutcomeKind.FORCE_ABORTED})


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class _Open:
    """An attempt span not yet ended; ``end_ns`` is set once its attempt has ended."""

    __slots__ = ("attempt", "end_ns", "span", "start_ns")

    def __init__(self, span: Span, attempt: int | None, start_ns: int) -> None:
        self.span = span
        self.attempt = attempt
        self.start_ns = start_ns
        self.end_ns: int | None = None


class OpenTelemetrySubscriber(Subscriber):
    """Turns attempts into OpenTelemetry spans (see the module docstring for attributes).

    ``tracer_provider``: the provider to use; ``None`` uses the global one (as configured
    now or later through ``opentelemetry.trace.set_tracer_provider``). ``blocking=True``
    calls the tracer from a dedicated thread instead of the event loop (useful with a
    ``SimpleSpanProcessor`` whose exporter does I/O; a ``BatchSpanProcessor`` needs no such).

    Attempt spans are root spans: they are built from events after the fact, so spans that
    a task body opens are not their children. An attempt span ends when the task's next
    event arrives (its backoff, its finish), so that the backoff can be recorded on it; its
    end time is still the attempt's own.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        blocking: bool = False,
    ) -> None:
        if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
            raise TypeError(
                "tracer_provider must be an opentelemetry TracerProvider or None, "
                f"got {type(tracer_provider).__name__}"
            )
        if not isinstance(blocking, bool):
            raise TypeError(f"blocking must be a bool, got {type(blocking).__name__}")
        self.blocking = blocking
        self._tracer = trace.get_tracer("taskvisor", __version__, tracer_provider)
        self._root = Context()  # an empty context: attempt spans have no parent
        self._open: dict[int, _Open] = {}  # by task id

    def on_event(self, event: Event) -> None:
        """Start, annotate or end the attempt span that ``event`` is about."""
        kind = event.kind
        if event.task_id is None:
            return
        key = int(event.task_id)
        if kind is EventKind.ATTEMPT_STARTING:
            self._end(key)  # a previous attempt whose follow-up event was dropped
            self._start(event, key, _ns(event.at))
            return
        result = _RESULTS.get(kind)
        if result is not None:
            self._attempt_ended(event, key, result)
        elif kind is EventKind.BACKOFF_SCHEDULED:
            cur = self._open.get(key)
            if cur is not None:
                at = _ns(event.at)
                attributes: dict[str, str | float] = {}
                if event.delay is not None:
                    attributes["taskvisor.backoff.delay"] = event.delay
                if event.backoff_source is not None:
                    attributes["taskvisor.backoff.source"] = event.backoff_source.value
                cur.span.add_event("backoff", attributes, timestamp=at)
                self._end(key, at)
        elif kind is EventKind.TASK_FINISHED:
            cur = self._open.get(key)
            if cur is not None:
                span = cur.span
                if event.outcome is not None:
                    span.set_attribute("taskvisor.task.outcome", event.outcome.value)
                    if cur.end_ns is None and event.outcome in _ERROR_OUTCOMES:
                        # The attempt never reported its end (e.g. abandoned after grace).
                        span.set_status(Status(StatusCode.ERROR, event.reason))
                self._end(key, _ns(event.at))
        elif kind is EventKind.TASK_REMOVED:
            self._end(key, _ns(event.at))

    def _start(self, event: Event, key: int, start_ns: int) -> _Open:
        attributes: dict[str, str | int] = {"taskvisor.task.id": key}
        if event.task is not None:
            attributes["taskvisor.task.name"] = event.task
        if event.attempt is not None:
            attributes["taskvisor.attempt"] = event.attempt
        span = self._tracer.start_span(
            event.task or "taskvisor.attempt",
            context=self._root,
            attributes=attributes,
            start_time=start_ns,
        )
        cur = self._open[key] = _Open(span, event.attempt, start_ns)
        return cur

    def _attempt_ended(self, event: Event, key: int, result: str) -> None:
        cur = self._open.get(key)
        if cur is None or cur.attempt != event.attempt or cur.end_ns is not None:
            self._end(key)
            # Its ATTEMPT_STARTING was dropped (overflow): rebuild the span from the duration.
            start = _ns(event.at - (event.duration or 0.0))
            cur = self._start(event, key, start)
        span = cur.span
        span.set_attribute("taskvisor.attempt.outcome", result)
        if event.exit_code is not None:
            span.set_attribute("taskvisor.exit_code", event.exit_code)
        if event.timeout is not None:
            span.set_attribute("taskvisor.timeout", event.timeout)
        if result == "failed" or result == "timed_out":
            reason = event.reason
            if reason is None and event.timeout is not None:
                reason = f"attempt timed out after {event.timeout}s"
            exc_attrs: dict[str, str] = {"exception.message": reason or result}
            if result == "timed_out":
                exc_attrs["exception.type"] = "TimeoutError"
            span.add_event("exception", exc_attrs, timestamp=_ns(event.at))
            span.set_status(Status(StatusCode.ERROR, reason))
        end = _ns(event.at)
        if event.duration is not None:
            end = cur.start_ns + _ns(event.duration)
        cur.end_ns = end

    def _end(self, key: int, at: int | None = None) -> None:
        cur = self._open.pop(key, None)
        if cur is None:
            return
        cur.span.end(end_time=cur.end_ns if cur.end_ns is not None else at)
