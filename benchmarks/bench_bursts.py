"""Realistic subscribers at their default capacity under a batch (issue 19, SPEC §14).

Each case is one ``Supervisor.run`` of 10 000 instant one-shot tasks (60 002 events: six per
task, two for the shutdown), timed from the call to the returned report (the subscribers'
drain included), cost per task. No subscriber sets ``queue_capacity``: each has the default
(1024), which is what a user gets. Every case also has a *witness*, a sync subscriber with a
huge capacity that counts every event it gets and never drops any: it checks that the run
published its 60 002 events and counts the ``SUBSCRIBER_OVERFLOW`` reports (the ``note``
column: how many there were, and the sum of ``dropped`` over the ``recovered`` ones).

- ``no subscriber``: the witness alone (the baseline);
- ``1 plain sync``: one sync subscriber that counts its events;
- ``LogSubscriber``: a logger at INFO, propagate off, one ``StreamHandler`` on ``os.devnull``;
- ``JsonLinesSubscriber``: to ``os.devnull`` (``blocking``: it writes from its own thread);
- ``Log + JSONL + 2 plain``: those four together;
- ``8 plain``: eight plain sync subscribers.

Every subscriber that keeps up (all of these: sync ones, and a blocking one writing to
``/dev/null``) must receive every published event: one that lost any fails the case
(``CheckFailed``), naming the events it got and the drops reported for it.

Before issue 19 (same cases, ``make bench`` on this machine; each subscriber received about
2 000 of the 60 000 events, and a ``SUBSCRIBER_OVERFLOW`` was published per drop):

=============================  ===========  ==========================
case                           µs per task  ``SUBSCRIBER_OVERFLOW``s
=============================  ===========  ==========================
no subscriber (witness only)          12.8                           0
1 plain sync                          63.9                      57 952
LogSubscriber                         64.1                      57 952
JsonLinesSubscriber                   34.6                      58 978
Log + JSONL + 2 plain                193.1                     234 370
8 plain                              513                       463 616
=============================  ===========  ==========================

``--quick`` keeps the 10 000 tasks (the batch size is what the cases measure) and runs
fewer rounds.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import taskvisor as tv
from benchmarks.harness import Case, CheckFailed, start_clock
from taskvisor.subscribers import JsonLinesSubscriber, LogSubscriber

TASKS = 10_000
EVENTS_PER_TASK = 6
"""Add requested, added, attempt starting, attempt succeeded, finished, removed."""
EVENTS_PER_RUN = 2
"""Shutdown requested, all stopped within grace."""
_OVERFLOW = tv.EventKind.SUBSCRIBER_OVERFLOW
_PANICKED = tv.EventKind.SUBSCRIBER_PANICKED
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - shared by the log handler, never closed


class Witness:
    """Counts every event, and the overflow reports by subscriber; never drops any."""

    name = "witness"
    queue_capacity = 1 << 22

    def __init__(self) -> None:
        self.events = 0
        self.overflows = 0
        self.panics = 0
        self.dropped: Counter[str] = Counter()
        """The sum of ``dropped`` over each subscriber's ``recovered`` reports."""
        self.closed: list[str] = []

    def on_event(self, event: tv.Event) -> None:
        self.events += 1
        if event.kind is _OVERFLOW:
            self.overflows += 1
            assert event.task is not None
            if event.reason == "recovered":
                self.dropped[event.task] += event.dropped or 0
            elif event.reason == "closed":
                self.closed.append(event.task)
        elif event.kind is _PANICKED:
            self.panics += 1


class Plain:
    """A plain sync subscriber: counts its events."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = 0

    def on_event(self, event: tv.Event) -> None:
        self.received += 1


class Counted:
    """A ready-made subscriber, counting the events it is handed; delivery settings its own."""

    def __init__(self, inner: tv.Subscriber, name: str) -> None:
        self.name = name
        self.received = 0
        self._inner = inner
        self._call = inner.on_event
        # The inner subscriber's own values (the class defaults): none is changed here.
        self.queue_capacity = inner.queue_capacity
        self.blocking = inner.blocking
        self.event_kinds = inner.event_kinds

    def on_event(self, event: tv.Event) -> None:
        self.received += 1
        self._call(event)

    def close(self) -> None:
        if isinstance(self._inner, JsonLinesSubscriber):
            self._inner.close()


Counting = Plain | Counted


def _logger() -> logging.Logger:
    logger = logging.getLogger("taskvisor.bench.bursts")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(_DEVNULL)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def _log() -> Counted:
    return Counted(LogSubscriber(_logger()), "log")


def _jsonl() -> Counted:
    return Counted(JsonLinesSubscriber(os.devnull), "jsonl")


def _plain(k: int) -> list[Counting]:
    return [Plain(f"plain-{i + 1}") for i in range(k)]


async def _empty() -> None:
    pass


def burst(make: Callable[[], list[Counting]]) -> Callable[[int], Awaitable[tuple[float, str]]]:
    """``run()`` of ``n`` instant one-shot tasks with a witness and ``make()``'s subscribers."""

    async def run(n: int) -> tuple[float, str]:
        specs = [tv.TaskSpec.once(f"t{i}", _empty) for i in range(n)]
        witness = Witness()
        subs = make()
        sup = tv.Supervisor(
            tv.SupervisorConfig(handle_signals=False, subscriber_shutdown_timeout=60.0),
            subscribers=[witness, *subs],
        )
        t0 = start_clock()
        report = await sup.run(specs)
        elapsed = time.perf_counter() - t0
        for s in subs:
            if isinstance(s, Counted):
                s.close()
        note = f"{witness.overflows:,} overflow, {sum(witness.dropped.values()):,} dropped"
        _check(n, report, witness, subs, note)
        return elapsed, note

    return run


def _check(
    n: int, report: tv.ShutdownReport, witness: Witness, subs: list[Counting], note: str
) -> None:
    """Raise ``CheckFailed`` unless the run published every event and everybody got them."""
    if report.grace_exceeded:
        raise CheckFailed(f"shutdown exceeded its grace: {report.stuck[:5]}")
    expected = EVENTS_PER_TASK * n + EVENTS_PER_RUN
    published = witness.events - witness.overflows - witness.panics
    if published != expected:
        raise CheckFailed(f"the run published {published:,} events, not {expected:,} ({note})")
    if witness.panics:
        raise CheckFailed(f"{witness.panics} SUBSCRIBER_PANICKED events ({note})")
    if witness.closed:
        raise CheckFailed(f"subscribers reported closed: {witness.closed} ({note})")
    behind = [
        f"{s.name} got {s.received:,} of {witness.events:,} "
        f"({witness.dropped[s.name]:,} reported dropped)"
        for s in subs
        if s.received < witness.events
    ]
    if behind:
        raise CheckFailed(f"subscribers lost events: {'; '.join(behind)} ({note})")


SETS: list[tuple[str, Callable[[], list[Counting]]]] = [
    ("1 plain sync", lambda: _plain(1)),
    ("LogSubscriber", lambda: [_log()]),
    ("JsonLinesSubscriber", lambda: [_jsonl()]),
    ("Log + JSONL + 2 plain", lambda: [_log(), _jsonl(), *_plain(2)]),
    ("8 plain", lambda: _plain(8)),
]
"""The subscribers of each case, besides the witness."""

CASES: list[Case] = [
    Case("no subscriber", burst(lambda: []), TASKS, unit="task", quick_ops=TASKS),
    *(
        Case(name, burst(make), TASKS, unit="task", baseline="no subscriber", quick_ops=TASKS)
        for name, make in SETS
    ),
]
