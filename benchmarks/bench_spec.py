"""What building a ``TaskSpec`` costs, next to a plain frozen dataclass (issue 19).

Every case builds ``n`` specs with the six constructor fields given — a different name per
spec, the same body for all, as a program that registers many tasks of one kind does — cost
per spec. The names are made before timing.

- ``dataclass``: a ``@dataclass(frozen=True, slots=True)`` with the same six fields (name,
  fn, restart, backoff, timeout, max_retries) and no checks: the baseline;
- ``TaskSpec``: ``TaskSpec(name, body, restart=…, backoff=…, timeout=…, max_retries=…)``,
  every argument checked. Goal: ≤ 1.5× ``dataclass`` (before issue 19: ~2.4×, 2.35 µs
  against ~1.0 µs): what is checked per function is cached, not checked per spec;
- ``TaskSpec name+body``: ``TaskSpec(name, body)``, the rest inherited from the defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.harness import Case, CheckFailed, Goal, start_clock
from taskvisor import BackoffPolicy, RestartPolicy, TaskSpec

OPS = 100_000
_RESTART = RestartPolicy.ON_FAILURE
_BACKOFF = BackoffPolicy.exponential(0.5, max=10.0)
_TIMEOUT = 30.0
_RETRIES = 5


async def body() -> None:
    pass


@dataclass(frozen=True, slots=True)
class PlainSpec:
    """The same six fields as a ``TaskSpec``, unchecked."""

    name: str
    fn: Callable[[], object]
    restart: RestartPolicy
    backoff: BackoffPolicy
    timeout: float | None
    max_retries: int | None


def _names(n: int) -> list[str]:
    return [f"worker-{i}" for i in range(n)]


def plain(n: int) -> float:
    names = _names(n)
    spec = None
    t0 = start_clock()
    for name in names:
        spec = PlainSpec(
            name,
            body,
            restart=_RESTART,
            backoff=_BACKOFF,
            timeout=_TIMEOUT,
            max_retries=_RETRIES,
        )
    elapsed = time.perf_counter() - t0
    if spec is None or spec.name != names[-1]:
        raise CheckFailed(f"the last spec built is {spec!r}")
    return elapsed


def taskspec(n: int) -> float:
    names = _names(n)
    spec = None
    t0 = start_clock()
    for name in names:
        spec = TaskSpec(
            name,
            body,
            restart=_RESTART,
            backoff=_BACKOFF,
            timeout=_TIMEOUT,
            max_retries=_RETRIES,
        )
    elapsed = time.perf_counter() - t0
    if spec is None or (spec.name, spec.timeout, spec.max_retries) != (names[-1], 30.0, 5):
        raise CheckFailed(f"the last spec built is {spec!r}")
    return elapsed


def taskspec_minimal(n: int) -> float:
    names = _names(n)
    spec = None
    t0 = start_clock()
    for name in names:
        spec = TaskSpec(name, body)
    elapsed = time.perf_counter() - t0
    if spec is None or spec.name != names[-1]:
        raise CheckFailed(f"the last spec built is {spec!r}")
    return elapsed


CASES: list[Case] = [
    Case("dataclass", plain, OPS, unit="spec"),
    Case("TaskSpec", taskspec, OPS, unit="spec", baseline="dataclass", goal=Goal(max_ratio=1.5)),
    Case("TaskSpec name+body", taskspec_minimal, OPS, unit="spec", baseline="dataclass"),
]
