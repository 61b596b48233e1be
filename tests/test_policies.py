"""Restart and backoff policies: exact delays, jitter bounds, the decorrelated recurrence,
named constructors and validation (SPEC §2)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskvisor import BackoffPolicy, JitterPolicy, RestartMode, RestartPolicy

# Durations the policies accept: finite, >= 0, small enough to keep arithmetic exact-ish.
durations = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
factors = st.floats(min_value=1.0, max_value=10.0, allow_nan=False, allow_infinity=False)
retries = st.integers(min_value=0, max_value=10_000)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def policies(draw: st.DrawFn, jitter: JitterPolicy) -> BackoffPolicy:
    first = draw(durations)
    maximum = draw(st.floats(min_value=first, max_value=2e6, allow_nan=False))
    return BackoffPolicy(first=first, max=maximum, factor=draw(factors), jitter=jitter)


# ---------------------------------------------------------------- BackoffPolicy: exact values


def test_defaults_match_the_spec() -> None:
    p = BackoffPolicy()
    assert (p.first, p.max, p.factor, p.jitter) == (0.2, 30.0, 2.0, JitterPolicy.EQUAL)


def test_no_jitter_grows_by_factor_from_first() -> None:
    p = BackoffPolicy(first=0.1, max=100.0, factor=3.0, jitter=JitterPolicy.NONE)
    assert [p.delay(i) for i in range(5)] == pytest.approx([0.1, 0.3, 0.9, 2.7, 8.1])


def test_no_jitter_is_capped_at_max() -> None:
    p = BackoffPolicy(first=1.0, max=5.0, factor=2.0, jitter=JitterPolicy.NONE)
    assert [p.delay(i) for i in range(6)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_factor_one_is_constant() -> None:
    p = BackoffPolicy(first=0.5, max=10.0, factor=1, jitter=JitterPolicy.NONE)
    assert {p.delay(i) for i in range(50)} == {0.5}


@pytest.mark.parametrize("retry", [1_100, 10**6, 10**100])
def test_huge_retry_index_gives_max_without_overflow(retry: int) -> None:
    p = BackoffPolicy(first=0.2, max=30.0, factor=2.0, jitter=JitterPolicy.NONE)
    assert p.delay(retry) == 30.0
    assert p.base(retry) == 30.0


def test_huge_retry_index_with_zero_first_stays_zero() -> None:
    # 0 × factor**i is 0 for every i, even where factor**i itself overflows a float.
    p = BackoffPolicy(first=0.0, max=30.0, factor=2.0, jitter=JitterPolicy.NONE)
    assert p.delay(10**6) == 0.0


def test_constant_is_exactly_the_delay_every_time() -> None:
    p = BackoffPolicy.constant(0.25)
    assert (p.first, p.max, p.factor, p.jitter) == (0.25, 0.25, 1.0, JitterPolicy.NONE)
    assert {p.delay(i, rng=random.Random(i)) for i in range(100)} == {0.25}


def test_constant_zero_is_allowed() -> None:
    assert BackoffPolicy.constant(0).delay(3) == 0.0


def test_exponential_keywords() -> None:
    p = BackoffPolicy.exponential(0.5, factor=3.0, max=4.0, jitter=JitterPolicy.NONE)
    assert p == BackoffPolicy(first=0.5, max=4.0, factor=3.0, jitter=JitterPolicy.NONE)
    assert [p.delay(i) for i in range(3)] == [0.5, 1.5, 4.0]
    d = BackoffPolicy.exponential(0.1)
    assert (d.factor, d.max, d.jitter) == (2.0, 30.0, JitterPolicy.EQUAL)


def test_backoff_policy_is_frozen_and_hashable() -> None:
    p = BackoffPolicy()
    with pytest.raises(AttributeError):
        p.first = 1.0  # type: ignore[misc]
    assert hash(p) == hash(BackoffPolicy())


def test_int_arguments_are_stored_as_float() -> None:
    p = BackoffPolicy(first=1, max=8, factor=2, jitter=JitterPolicy.NONE)
    assert all(type(v) is float for v in (p.first, p.max, p.factor))


# ---------------------------------------------------------------- jitter bounds (properties)


@given(policies(JitterPolicy.NONE), retries)
def test_none_jitter_equals_base(p: BackoffPolicy, retry: int) -> None:
    expected = p.first  # min(first * factor**retry, max), computed without overflowing
    for _ in range(retry):
        if expected >= p.max:
            break
        expected *= p.factor
    expected = min(expected, p.max)
    assert p.delay(retry) == p.base(retry) == pytest.approx(expected, rel=1e-9)


@given(policies(JitterPolicy.FULL), retries, seeds)
def test_full_jitter_in_zero_to_base(p: BackoffPolicy, retry: int, seed: int) -> None:
    rng = random.Random(seed)
    base = p.base(retry)
    for _ in range(20):
        assert 0.0 <= p.delay(retry, rng=rng) <= base


@given(policies(JitterPolicy.EQUAL), retries, seeds)
def test_equal_jitter_in_half_base_to_base(p: BackoffPolicy, retry: int, seed: int) -> None:
    rng = random.Random(seed)
    base = p.base(retry)
    for _ in range(20):
        assert base / 2 <= p.delay(retry, rng=rng) <= base


@given(
    policies(JitterPolicy.DECORRELATED),
    retries,
    st.one_of(st.none(), durations),
    seeds,
)
def test_decorrelated_within_first_and_three_times_previous(
    p: BackoffPolicy, retry: int, previous: float | None, seed: int
) -> None:
    rng = random.Random(seed)
    prev = p.first if previous is None else previous
    upper = max(p.first, min(p.max, 3 * prev))
    for _ in range(20):
        assert p.first <= p.delay(retry, previous, rng) <= upper


@given(policies(JitterPolicy.DECORRELATED), seeds)
def test_decorrelated_recurrence_never_leaves_its_bounds(p: BackoffPolicy, seed: int) -> None:
    rng = random.Random(seed)
    previous: float | None = None
    for retry in range(30):
        d = p.delay(retry, previous, rng)
        prev = p.first if previous is None else previous
        assert p.first <= d <= max(p.first, min(p.max, 3 * prev))
        previous = d


def test_jitter_uses_the_whole_range() -> None:
    # Not only the bounds: draws spread over the range (a constant would pass the bounds).
    rng = random.Random(7)
    full = BackoffPolicy(first=1.0, max=1.0, jitter=JitterPolicy.FULL)
    equal = BackoffPolicy(first=1.0, max=1.0, jitter=JitterPolicy.EQUAL)
    f = [full.delay(0, rng=rng) for _ in range(2000)]
    e = [equal.delay(0, rng=rng) for _ in range(2000)]
    assert min(f) < 0.05
    assert max(f) > 0.95
    assert min(e) < 0.55
    assert max(e) > 0.95


def test_same_seed_same_delays() -> None:
    p = BackoffPolicy(jitter=JitterPolicy.FULL)
    a = [p.delay(i, rng=random.Random(3)) for i in range(10)]
    b = [p.delay(i, rng=random.Random(3)) for i in range(10)]
    assert a == b


def test_shared_generator_is_used_without_rng() -> None:
    p = BackoffPolicy(first=1.0, max=1.0, jitter=JitterPolicy.FULL)
    draws = {p.delay(0) for _ in range(50)}
    assert len(draws) > 1
    assert all(0.0 <= d <= 1.0 for d in draws)


# ---------------------------------------------------------------- the decorrelated recurrence


def test_decorrelated_previous_none_starts_at_first() -> None:
    # previous=None behaves as previous=first: uniform in [first, 3 × first].
    p = BackoffPolicy(first=1.0, max=100.0, jitter=JitterPolicy.DECORRELATED)
    for seed in range(20):
        assert p.delay(0, None, random.Random(seed)) == p.delay(0, 1.0, random.Random(seed))
    draws = [p.delay(0, rng=random.Random(s)) for s in range(200)]
    assert all(1.0 <= d <= 3.0 for d in draws)
    assert max(draws) > 2.5


def test_decorrelated_depends_on_previous() -> None:
    p = BackoffPolicy(first=1.0, max=1000.0, jitter=JitterPolicy.DECORRELATED)
    # Same random draw, larger previous → larger delay (the upper end grows with previous).
    small = p.delay(0, 2.0, random.Random(42))
    large = p.delay(0, 100.0, random.Random(42))
    assert small < large
    assert max(p.delay(0, 100.0, random.Random(s)) for s in range(100)) > 200.0
    assert max(p.delay(0, 2.0, random.Random(s)) for s in range(100)) <= 6.0


def test_decorrelated_ignores_the_retry_index() -> None:
    p = BackoffPolicy(first=1.0, max=1000.0, jitter=JitterPolicy.DECORRELATED)
    assert p.delay(0, 5.0, random.Random(1)) == p.delay(40, 5.0, random.Random(1))


def test_decorrelated_is_capped_at_max() -> None:
    p = BackoffPolicy(first=1.0, max=4.0, jitter=JitterPolicy.DECORRELATED)
    draws = [p.delay(0, 1000.0, random.Random(s)) for s in range(200)]
    assert all(1.0 <= d <= 4.0 for d in draws)
    assert max(draws) > 3.5


def test_decorrelated_three_times_previous_below_first_gives_first() -> None:
    p = BackoffPolicy(first=1.0, max=10.0, jitter=JitterPolicy.DECORRELATED)
    for seed in range(20):
        assert p.delay(3, 0.2, random.Random(seed)) == 1.0
    assert p.delay(0, 0.0) == 1.0


# ---------------------------------------------------------------- delay() arguments


@pytest.mark.parametrize(
    ("kwargs", "exc", "param"),
    [
        ({"retry": -1}, ValueError, "retry"),
        ({"retry": 1.0}, TypeError, "retry"),
        ({"retry": True}, TypeError, "retry"),
        ({"retry": "1"}, TypeError, "retry"),
        ({"retry": 0, "previous": -1.0}, ValueError, "previous"),
        ({"retry": 0, "previous": math.nan}, ValueError, "previous"),
        ({"retry": 0, "previous": math.inf}, ValueError, "previous"),
        ({"retry": 0, "previous": "1"}, TypeError, "previous"),
        ({"retry": 0, "rng": 42}, TypeError, "rng"),
    ],
)
def test_delay_argument_validation(
    kwargs: dict[str, Any], exc: type[Exception], param: str
) -> None:
    with pytest.raises(exc, match=param):
        BackoffPolicy().delay(**kwargs)


def test_delay_accepts_a_random_subclass() -> None:
    d = BackoffPolicy(jitter=JitterPolicy.FULL).delay(0, rng=random.SystemRandom())
    assert 0.0 <= d <= 0.2


# ---------------------------------------------------------------- BackoffPolicy validation


@pytest.mark.parametrize(
    ("kwargs", "exc", "param"),
    [
        ({"first": -0.1}, ValueError, "first"),
        ({"first": math.nan}, ValueError, "first"),
        ({"first": math.inf}, ValueError, "first"),
        ({"first": "1"}, TypeError, "first"),
        ({"first": None}, TypeError, "first"),
        ({"first": True}, TypeError, "first"),
        ({"max": -1.0}, ValueError, "max"),
        ({"max": math.inf}, ValueError, "max"),
        ({"max": math.nan}, ValueError, "max"),
        ({"max": [1]}, TypeError, "max"),
        ({"factor": 0.5}, ValueError, "factor"),
        ({"factor": 0}, ValueError, "factor"),
        ({"factor": -2.0}, ValueError, "factor"),
        ({"factor": math.inf}, ValueError, "factor"),
        ({"factor": math.nan}, ValueError, "factor"),
        ({"factor": "2"}, TypeError, "factor"),
        ({"factor": False}, TypeError, "factor"),
        ({"jitter": "equal"}, TypeError, "jitter"),
        ({"jitter": None}, TypeError, "jitter"),
        ({"first": 5.0, "max": 1.0}, ValueError, "first"),
    ],
)
def test_backoff_validation(kwargs: dict[str, Any], exc: type[Exception], param: str) -> None:
    with pytest.raises(exc, match=param):
        BackoffPolicy(**kwargs)


def test_first_greater_than_max_names_both() -> None:
    with pytest.raises(ValueError, match=r"first.*max"):
        BackoffPolicy(first=2.0, max=1.0)


@pytest.mark.parametrize(
    ("delay", "exc"),
    [(-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("1", TypeError)],
)
def test_constant_validation(delay: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="delay"):
        BackoffPolicy.constant(delay)


@pytest.mark.parametrize(
    ("args", "kwargs", "param"),
    [
        ((-1.0,), {}, "first"),
        ((1.0,), {"factor": 0.9}, "factor"),
        ((1.0,), {"max": math.inf}, "max"),
        ((5.0,), {"max": 1.0}, "first"),
    ],
)
def test_exponential_validation(args: tuple[Any, ...], kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        BackoffPolicy.exponential(*args, **kwargs)


# ---------------------------------------------------------------- RestartPolicy


def test_restart_never_and_on_failure() -> None:
    never, on_failure = RestartPolicy.NEVER, RestartPolicy.ON_FAILURE
    assert never.mode is RestartMode.NEVER
    assert on_failure.mode is RestartMode.ON_FAILURE
    assert never.interval is on_failure.interval is None
    assert (never.restarts_on_success, never.restarts_on_failure) == (False, False)
    assert (on_failure.restarts_on_success, on_failure.restarts_on_failure) == (False, True)


def test_restart_always() -> None:
    plain = RestartPolicy.always()
    timed = RestartPolicy.always(interval=0.5)
    assert plain.mode is timed.mode is RestartMode.ALWAYS
    assert plain.interval is None
    assert timed.interval == 0.5
    assert (timed.restarts_on_success, timed.restarts_on_failure) == (True, True)
    assert RestartPolicy.always(interval=2).interval == 2.0
    assert RestartPolicy.always(1.0) == RestartPolicy.always(interval=1.0)
    assert RestartPolicy.always(1.0) != RestartPolicy.always(2.0)


def test_restart_reprs_read_like_the_api() -> None:
    assert repr(RestartPolicy.NEVER) == "RestartPolicy.NEVER"
    assert repr(RestartPolicy.ON_FAILURE) == "RestartPolicy.ON_FAILURE"
    assert repr(RestartPolicy.always(interval=1.5)) == "RestartPolicy.always(interval=1.5)"


def test_restart_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        RestartPolicy.NEVER.interval = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("interval", "exc"),
    [
        (0, ValueError),
        (-1.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_restart_always_interval_validation(interval: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match="interval"):
        RestartPolicy.always(interval=interval)


def test_restart_policy_constructor_validation() -> None:
    with pytest.raises(TypeError, match="mode"):
        RestartPolicy("never")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        RestartPolicy(RestartMode.ON_FAILURE, 1.0)
