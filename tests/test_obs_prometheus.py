"""``taskvisor.contrib.prometheus.PrometheusSubscriber``, scraped with the real client."""

from __future__ import annotations

import asyncio
import gc
import math
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import taskvisor as tv
from conftest import make_event
from taskvisor.contrib.prometheus import PrometheusSubscriber
from taskvisor.testing import EventRecorder

E = tv.EventKind
ROOT = Path(__file__).resolve().parent.parent
FAST = tv.BackoffPolicy.constant(0.001)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of the registry's text exposition, by name and label set."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def quiet(**kw: object) -> tv.SupervisorConfig:
    return tv.SupervisorConfig(handle_signals=False, **kw)  # type: ignore[arg-type]


async def fail_twice_then_succeed(ctx: tv.TaskContext) -> None:
    if ctx.attempt <= 2:
        raise tv.Fail("not yet", exit_code=3)


async def test_counters_after_a_task_fails_twice_then_succeeds(
    registry: CollectorRegistry,
) -> None:
    prom = PrometheusSubscriber(registry)
    sup = tv.Supervisor(quiet(), subscribers=[prom])
    prom.bind(sup)
    async with asyncio.timeout(10):
        await sup.run([tv.TaskSpec.restartable("flaky", fail_twice_then_succeed, backoff=FAST)])
    s = scrape(registry)
    assert value(s, "taskvisor_attempts_total", task="flaky", result="failed") == 2
    assert value(s, "taskvisor_attempts_total", task="flaky", result="succeeded") == 1
    assert value(s, "taskvisor_attempts_total", task="flaky", result="timed_out") is None
    assert value(s, "taskvisor_restarts_total", task="flaky") == 2
    assert value(s, "taskvisor_task_outcomes_total", task="flaky", outcome="completed") == 1
    assert total(s, "taskvisor_task_outcomes_total") == 1
    assert total(s, "taskvisor_attempt_duration_seconds_count", task="flaky") == 3
    failed_count = "taskvisor_attempt_duration_seconds_count"
    assert value(s, failed_count, task="flaky", result="failed") == 2
    inf = value(
        s, "taskvisor_attempt_duration_seconds_bucket", task="flaky", result="failed", le="+Inf"
    )
    assert inf == 2
    assert value(s, "taskvisor_events_total", kind="attempt_starting") == 3
    assert value(s, "taskvisor_events_total", kind="backoff_scheduled") == 2
    assert value(s, "taskvisor_events_total", kind="all_stopped_within_grace") == 1
    assert value(s, "taskvisor_events_total", kind="grace_exceeded") == 0  # every kind, from 0
    for state in ("waiting", "running", "backoff", "stopping"):
        assert value(s, "taskvisor_tasks", state=state) == 0  # all finished


async def test_state_gauge_is_read_from_the_supervisor_at_scrape_time(
    registry: CollectorRegistry,
) -> None:
    prom = PrometheusSubscriber(registry)
    rec = EventRecorder()
    sup = tv.Supervisor(quiet(max_concurrent=1), subscribers=[prom, rec])
    prom.bind(sup)

    async def fail() -> None:
        raise tv.Fail("down")

    async def block() -> None:
        await asyncio.Event().wait()

    def states() -> dict[str, float | None]:
        s = scrape(registry)
        return {
            st: value(s, "taskvisor_tasks", state=st)
            for st in ("waiting", "running", "backoff", "stopping")
        }

    async with asyncio.timeout(10), sup:
        sup.add(tv.TaskSpec.restartable("retrying", fail, backoff=tv.BackoffPolicy.constant(30)))
        await rec.wait_for(E.BACKOFF_SCHEDULED, task="retrying")
        assert states() == {"waiting": 0, "running": 0, "backoff": 1, "stopping": 0}
        sup.add(tv.TaskSpec.once("busy", block))
        await rec.wait_for(E.ATTEMPT_STARTING, task="busy")
        sup.add(tv.TaskSpec.once("queued", block))  # the one concurrency slot is taken
        assert states() == {"waiting": 1, "running": 1, "backoff": 1, "stopping": 0}
        # A scrape usually comes from the HTTP server's thread: same answer from there.
        from_thread = await asyncio.to_thread(scrape, registry)
        assert value(from_thread, "taskvisor_tasks", state="running") == 1
        assert sup.remove("busy") is True
        assert states() == {"waiting": 1, "running": 0, "backoff": 1, "stopping": 1}
    assert states() == {"waiting": 0, "running": 0, "backoff": 0, "stopping": 0}


async def test_outcomes_rejections_panics_and_overflows(registry: CollectorRegistry) -> None:
    gate = asyncio.Event()

    class Boom(tv.Subscriber):
        def on_event(self, event: tv.Event) -> None:
            if event.kind is E.TASK_ADDED:
                raise RuntimeError("broken")

    class Slow(tv.Subscriber):
        queue_capacity = 1

        async def on_event(self, event: tv.Event) -> None:
            await gate.wait()

    async def fatal() -> None:
        raise tv.Fatal("bad config")

    async def failing() -> None:
        raise tv.Fail("nope")

    async def slow() -> None:
        await asyncio.Event().wait()

    prom = PrometheusSubscriber(registry)
    rec = EventRecorder()
    sup = tv.Supervisor(quiet(), subscribers=[prom, rec, Boom(), Slow()])
    async with asyncio.timeout(10):
        async with sup:
            sup.add(tv.TaskSpec.once("fatal", fatal))
            sup.add(tv.TaskSpec.once("failing", failing))
            sup.add(tv.TaskSpec.once("timeout", slow, timeout=0.01))
            sup.add(tv.TaskSpec.once("canceled", slow))
            with pytest.raises(tv.TaskAlreadyExists):
                sup.add(tv.TaskSpec.once("canceled", slow))
            for name in ("fatal", "failing", "timeout"):
                await rec.wait_for(E.TASK_FINISHED, task=name)
            await rec.wait_for(E.ATTEMPT_STARTING, task="canceled")
            assert await sup.cancel("canceled") is True
            gate.set()
    s = scrape(registry)
    outcomes = "taskvisor_task_outcomes_total"
    assert value(s, outcomes, task="fatal", outcome="fatal") == 1
    assert value(s, outcomes, task="failing", outcome="failed") == 1
    assert value(s, outcomes, task="timeout", outcome="failed") == 1
    assert value(s, outcomes, task="canceled", outcome="canceled") == 1
    assert value(s, outcomes, task="canceled", outcome="rejected") == 1
    assert value(s, "taskvisor_rejections_total", task="canceled", rejection="already_exists") == 1
    assert value(s, "taskvisor_attempts_total", task="timeout", result="timed_out") == 1
    assert value(s, "taskvisor_attempts_total", task="canceled", result="canceled") == 1
    assert value(s, "taskvisor_attempts_total", task="fatal", result="failed") == 1
    assert value(s, "taskvisor_subscriber_panics_total", subscriber="Boom") == 4
    overflows = rec.select(E.SUBSCRIBER_OVERFLOW, task="Slow")
    assert overflows  # capacity 1 and a blocked worker: most events were dropped for it
    for reason in ("full", "recovered"):
        assert value(
            s, "taskvisor_subscriber_overflows_total", subscriber="Slow", reason=reason
        ) == len([e for e in overflows if e.reason == reason])
    assert value(s, "taskvisor_subscriber_dropped_events_total", subscriber="Slow") == sum(
        e.dropped or 0 for e in overflows
    )
    assert value(s, "taskvisor_events_total", kind="subscriber_overflow") == len(
        rec.select(E.SUBSCRIBER_OVERFLOW)
    )


async def test_task_label_off_keeps_label_sets_bounded(registry: CollectorRegistry) -> None:
    prom = PrometheusSubscriber(registry, task_label=False)
    s = scrape(registry)
    # Bounded label sets exist from the start, at 0.
    for result in ("succeeded", "failed", "timed_out", "canceled"):
        assert value(s, "taskvisor_attempts_total", result=result) == 0
    assert value(s, "taskvisor_task_outcomes_total", outcome="force_aborted") == 0
    assert value(s, "taskvisor_rejections_total", rejection="queue_full") == 0
    assert value(s, "taskvisor_restarts_total") == 0
    specs = [
        tv.TaskSpec.restartable(f"job-{i}", fail_twice_then_succeed, backoff=FAST) for i in range(3)
    ]
    async with asyncio.timeout(10):
        await tv.Supervisor(quiet(), subscribers=[prom]).run(specs)
    s = scrape(registry)
    assert not any("task" in dict(labels) for _, labels in s)
    assert value(s, "taskvisor_attempts_total", result="failed") == 6
    assert value(s, "taskvisor_restarts_total") == 6
    assert value(s, "taskvisor_task_outcomes_total", outcome="completed") == 3
    assert value(s, "taskvisor_attempt_duration_seconds_count", result="succeeded") == 3


def test_construction_is_checked_and_registration_all_or_nothing(
    registry: CollectorRegistry,
) -> None:
    with pytest.raises(TypeError, match="registry"):
        PrometheusSubscriber(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="task_label"):
        PrometheusSubscriber(registry, task_label=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        PrometheusSubscriber(registry, namespace="my-app")
    with pytest.raises(ValueError, match="buckets"):
        PrometheusSubscriber(registry, buckets=[1.0, 0.5])
    assert scrape(registry) == {}  # nothing half-registered by the failures above
    first = PrometheusSubscriber(registry)
    with pytest.raises(ValueError, match="one PrometheusSubscriber per registry"):
        PrometheusSubscriber(registry)
    other = PrometheusSubscriber(registry, namespace="jobs")
    s = scrape(registry)
    assert value(s, "taskvisor_events_total", kind="task_added") == 0
    assert value(s, "jobs_events_total", kind="task_added") == 0
    other.unregister()
    other.unregister()  # idempotent
    assert value(scrape(registry), "jobs_events_total", kind="task_added") is None
    with pytest.raises(TypeError, match="supervisor"):
        first.bind(object())  # type: ignore[arg-type]


def test_histogram_buckets_are_upper_bounds_inclusive(registry: CollectorRegistry) -> None:
    prom = PrometheusSubscriber(registry, task_label=False, buckets=[0.1, 1.0, math.inf])
    for duration in (0.05, 0.1, 0.5, 1.0, 7.0):
        prom.on_event(
            make_event(E.ATTEMPT_SUCCEEDED, "t", tv.TaskId(1), attempt=1, duration=duration)
        )
    s = scrape(registry)
    name = "taskvisor_attempt_duration_seconds"
    buckets = {
        le: value(s, f"{name}_bucket", result="succeeded", le=le) for le in ("0.1", "1.0", "+Inf")
    }
    assert buckets == {"0.1": 2, "1.0": 4, "+Inf": 5}  # cumulative, ``le`` inclusive
    assert value(s, f"{name}_count", result="succeeded") == 5
    assert value(s, f"{name}_sum", result="succeeded") == pytest.approx(8.65)
    assert value(s, f"{name}_count", result="failed") == 0


@pytest.mark.parametrize(
    ("buckets", "error"),
    [([], ValueError), ([0.5, 0.5], ValueError), ([math.nan], ValueError), (["1"], TypeError)],
)
def test_bad_buckets_are_refused(
    registry: CollectorRegistry, buckets: list[float], error: type[Exception]
) -> None:
    with pytest.raises(error, match="buckets"):
        PrometheusSubscriber(registry, buckets=buckets)


def test_unbound_or_collected_supervisor_exports_no_state_samples(
    registry: CollectorRegistry,
) -> None:
    prom = PrometheusSubscriber(registry)
    assert not [k for k in scrape(registry) if k[0] == "taskvisor_tasks"]
    sup = tv.Supervisor(quiet())
    prom.bind(sup)
    prom.bind(sup)  # binding twice counts once
    assert value(scrape(registry), "taskvisor_tasks", state="running") == 0
    del sup
    gc.collect()  # only a weak reference was kept
    assert not [k for k in scrape(registry) if k[0] == "taskvisor_tasks"]


def test_default_registry_is_the_global_one() -> None:
    prom = PrometheusSubscriber()
    try:
        assert prom.registry is REGISTRY
        assert value(scrape(REGISTRY), "taskvisor_events_total", kind="task_added") == 0
    finally:
        prom.unregister()
    assert value(scrape(REGISTRY), "taskvisor_events_total", kind="task_added") is None


def test_example_prometheus_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.metrics_prometheus", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert 'taskvisor_attempts_total{result="failed",task="sync-prices"} 1.0' in out.stdout
    assert 'taskvisor_tasks{state="running"}' in out.stdout


async def test_attached_without_bind_and_counts_outlive_the_supervisor(
    registry: CollectorRegistry,
) -> None:
    prom = PrometheusSubscriber(registry)
    # It asks only for the events with per-task data; the supervisor counts the others.
    assert E.ATTEMPT_STARTING not in prom.event_kinds
    assert E.TASK_ADDED not in prom.event_kinds
    sup = tv.Supervisor(quiet(), subscribers=[prom])  # no bind(): attached when built
    async with asyncio.timeout(10):
        await sup.run([tv.TaskSpec.once(f"job-{i}", fail_twice_then_succeed) for i in range(3)])
    s = scrape(registry)
    assert value(s, "taskvisor_events_total", kind="task_added") == 3
    assert value(s, "taskvisor_events_total", kind="attempt_starting") == 3
    assert value(s, "taskvisor_events_total", kind="attempt_failed") == 3
    assert value(s, "taskvisor_tasks", state="running") == 0  # the gauge is bound too
    assert total(s, "taskvisor_task_outcomes_total") == 3
    assert value(s, "taskvisor_task_outcomes_total", task="job-0", outcome="failed") == 1
    del sup
    # The run's report (its outcomes keep the failures' tracebacks, so the frames that held
    # the supervisor) is still referenced by the loop's wake-up of this test until its next
    # iteration: one step of the loop, not a wait for anything.
    await asyncio.sleep(0)
    gc.collect()
    s = scrape(registry)
    # A counter never goes backwards: the collected supervisor's counts stay.
    assert value(s, "taskvisor_events_total", kind="task_added") == 3
    assert not [k for k in s if k[0] == "taskvisor_tasks"]


async def _scenario(beside: list[object]) -> Samples:
    """Five quick tasks and a flaky one; the scrape (sums left out: durations vary)."""
    registry = CollectorRegistry()
    sup = tv.Supervisor(quiet(), subscribers=[PrometheusSubscriber(registry), *beside])
    specs = [tv.TaskSpec.once(f"quick-{i}", _quick) for i in range(5)]
    specs.append(tv.TaskSpec.restartable("flaky", fail_twice_then_succeed, backoff=FAST))
    async with asyncio.timeout(10):
        await sup.run(specs)
    return {key: v for key, v in scrape(registry).items() if not key[0].endswith("_sum")}


async def test_same_metrics_alone_or_beside_another_subscriber() -> None:
    """However the supervisor hands events out (alone, or beside a plain subscriber that needs
    every event), the metrics come out the same."""
    alone = await _scenario([])
    beside = await _scenario([EventRecorder()])
    assert alone == beside
    assert value(alone, "taskvisor_attempts_total", task="quick-3", result="succeeded") == 1
    assert value(alone, "taskvisor_attempts_total", task="flaky", result="failed") == 2
    assert value(alone, "taskvisor_task_outcomes_total", task="flaky", outcome="completed") == 1
    assert total(alone, "taskvisor_attempt_duration_seconds_count") == 8
    assert value(alone, "taskvisor_events_total", kind="task_finished") == 6


async def _quick() -> None:
    pass
