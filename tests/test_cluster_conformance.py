"""One conformance suite, run against every coordinator: the §11 semantics, backend-blind.

Two coordinators with the same prefix are two nodes of one cluster (for the memory backend,
two instances in this process). Leases are short (0.3–0.6 s) to keep the suite fast; every
wait is on a condition with a generous guard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest

from cluster_support import (
    BACKENDS,
    GUARD,
    drop_prefix,
    make_coordinator,
    new_prefix,
    require_services,
    wait_until,
)
from taskvisor.cluster import Coordinator, Holding
from taskvisor.cluster._protocol import (
    CoordinatorClosed,
    Lease,
    LeaseSignal,
    LeaseState,
    LostReason,
    QueueFull,
    Superseded,
)

require_services()  # fails the session (collection error) with what to install

Factory = Callable[..., Any]


@pytest.fixture(params=BACKENDS)
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """``make(node, lease=0.6)`` opens a coordinator of the parametrized backend."""
    backend: str = request.param
    prefix = new_prefix()
    made: list[Any] = []

    async def make(node: str, lease: float = 0.6, open: bool = True) -> Any:
        coord = make_coordinator(backend, prefix, node=node, lease=lease)
        made.append(coord)
        if open:
            await coord.open()
        return coord

    make.backend = backend  # type: ignore[attr-defined]
    yield make
    for coord in made:
        await coord.close()
    drop_prefix(backend, prefix)


class Signals:
    """Records every signal given to ``on_signal``."""

    def __init__(self) -> None:
        self.got: list[tuple[Lease, LeaseSignal]] = []

    def __call__(self, lease: Lease, signal: LeaseSignal) -> None:
        self.got.append((lease, signal))

    def kinds(self) -> list[LeaseSignal]:
        return [s for _, s in self.got]


async def test_a_coordinator_is_a_coordinator(cluster: Factory) -> None:
    a = await cluster("a")
    assert isinstance(a, Coordinator)
    assert a.node == "a"
    assert a.lease == 0.6
    assert len(a.instance) == 32


async def test_acquire_grants_a_free_key_with_a_positive_token(cluster: Factory) -> None:
    a = await cluster("a")
    lease = await a.acquire("job")
    assert lease.key == "job"
    assert lease.node == "a"
    assert lease.fence >= 1
    assert lease.state is LeaseState.HELD
    assert lease.valid
    assert lease.expires_at > time.time() - 5  # a server epoch, near ours
    (holding,) = await a.holders()
    assert holding == Holding("job", "a", lease.fence, holding.expires_at)


async def test_renewal_keeps_a_lease_alive_for_several_lease_periods(cluster: Factory) -> None:
    # A lease long enough that a loaded machine's scheduling delays never reach the
    # self-fencing deadline (2/3 of it), short enough to see three periods quickly.
    a = await cluster("a", lease=1.0)
    b = await cluster("b", lease=1.0)
    signals = Signals()
    lease = await a.acquire("job", on_signal=signals)
    first = lease.expires_at
    await wait_until(lambda: lease.expires_at > first + 3 * 1.0, what="three lease periods")
    assert lease.valid
    assert lease.state is LeaseState.HELD
    assert await b.try_acquire("job") is None
    assert signals.got == []
    (holding,) = await b.holders()
    assert holding.fence == lease.fence


async def test_release_frees_the_key_and_reports_once(cluster: Factory) -> None:
    a = await cluster("a")
    b = await cluster("b")
    lease = await a.acquire("job")
    assert await a.release(lease) is True
    assert lease.state is LeaseState.RELEASED
    assert not lease.valid
    assert await a.release(lease) is False
    assert await a.holders() == []
    other = await b.try_acquire("job")
    assert other is not None
    assert other.fence > lease.fence


async def test_tokens_strictly_increase_across_nodes_and_reacquisitions(cluster: Factory) -> None:
    a = await cluster("a")
    b = await cluster("b")
    fences = []
    for coord in (a, b, a, a, b, b, a):
        lease = await coord.acquire("job")
        fences.append(lease.fence)
        assert await coord.release(lease)
    assert fences == sorted(set(fences))
    # another key has its own counter
    other = await b.acquire("other")
    assert other.fence == 1


async def test_a_waiter_takes_over_when_the_holder_is_released(cluster: Factory) -> None:
    a = await cluster("a")
    b = await cluster("b")
    held = await a.acquire("job")
    waiter = asyncio.create_task(b.acquire("job"))
    await wait_until(lambda: b.waiting("job"), what="b queued")
    assert not waiter.done()
    await a.release(held)
    got = await asyncio.wait_for(waiter, GUARD)
    assert got.fence > held.fence
    assert got.node == "b"


async def test_a_holder_that_stops_renewing_loses_the_key_to_a_waiter(cluster: Factory) -> None:
    lease_s = 0.6
    a = await cluster("a", lease=lease_s)
    b = await cluster("b", lease=lease_s)
    signals = Signals()
    held = await a.acquire("job", on_signal=signals)
    waiter = asyncio.create_task(b.acquire("job"))
    await wait_until(lambda: b.waiting("job"), what="b queued")
    expiry = held.expires_at
    await a.close(release=False)  # as a crash: nothing released, nothing renewed
    assert signals.kinds() == [LeaseSignal.LOST]
    assert held.lost_reason is LostReason.CLOSED
    got = await asyncio.wait_for(waiter, GUARD)
    taken = time.time()
    assert got.fence > held.fence
    # within lease / 3 of the expiry (server clock = this host's here), plus slack for CI
    assert taken - expiry <= lease_s / 3 + 0.5, taken - expiry
    assert await a.release(held) is False


async def test_a_starved_event_loop_self_fences_at_once(cluster: Factory) -> None:
    lease_s = 0.3
    a = await cluster("a", lease=lease_s)
    signals = Signals()
    held = await a.acquire("job", on_signal=signals)
    time.sleep(lease_s * 1.5)  # noqa: ASYNC251 - the point: the loop is blocked (a freeze)
    assert not held.valid  # at once, before any callback ran
    await wait_until(lambda: held.state is LeaseState.LOST, timeout=lease_s, what="LOST")
    assert signals.kinds()[-1] is LeaseSignal.LOST
    assert held.lost_reason in (LostReason.OVERDUE, LostReason.EXPIRED)
    assert await a.release(held) is False
    again = await asyncio.wait_for(a.acquire("job"), GUARD)
    assert again.fence > held.fence


async def test_queue_order_is_fifo_across_two_nodes(cluster: Factory) -> None:
    a = await cluster("a")
    b = await cluster("b")
    holder = await a.acquire("job")
    order: list[str] = []
    tasks = []
    for i, coord in enumerate((b, a, b, a, b)):

        async def wait_turn(coord: Any = coord, i: int = i) -> Lease:
            lease: Lease = await coord.acquire("job")
            order.append(f"{coord.node}{i}")
            return lease

        tasks.append(asyncio.create_task(wait_turn()))
        await wait_until(partial(_eq_waiting, a, "job", i + 1), what=f"{i + 1} queued")
    await a.release(holder)
    for task in tasks:
        lease = await asyncio.wait_for(task, GUARD)
        coord = a if lease.node == "a" else b
        await coord.release(lease)
    assert order == ["b0", "a1", "b2", "a3", "b4"]


async def _eq_waiting(coord: Any, key: str, n: int) -> bool:
    return bool(await coord.waiting(key) == n)


async def _eq(awaitable: Any, n: int) -> bool:
    return bool(await awaitable == n)


async def test_replace_stops_the_holder_supersedes_the_head_and_goes_next(
    cluster: Factory,
) -> None:
    a = await cluster("a")
    b = await cluster("b")
    signals = Signals()
    holder = await a.acquire("job", on_signal=signals)
    head = asyncio.create_task(a.acquire("job"))
    await wait_until(lambda: _eq(b.waiting("job"), 1), what="head queued")
    tail = asyncio.create_task(b.acquire("job"))
    await wait_until(lambda: _eq(b.waiting("job"), 2), what="tail queued")
    replacer = asyncio.create_task(b.acquire("job", replace=True))
    with pytest.raises(Superseded) as info:
        await asyncio.wait_for(head, GUARD)
    assert info.value.key == "job"
    await wait_until(lambda: holder.stop_requested, what="stop request")
    assert signals.kinds() == [LeaseSignal.STOP_REQUESTED]
    assert holder.state is LeaseState.HELD  # asked, not forced
    assert not replacer.done()
    await a.release(holder)
    got = await asyncio.wait_for(replacer, GUARD)
    assert got.fence > holder.fence
    assert not got.stop_requested
    await b.release(got)
    last = await asyncio.wait_for(tail, GUARD)  # the rest of the queue kept its order
    assert last.fence > got.fence


async def test_replace_into_a_free_key_is_a_plain_grant(cluster: Factory) -> None:
    a = await cluster("a")
    lease = await a.acquire("job", replace=True)
    assert lease.state is LeaseState.HELD
    assert not lease.stop_requested


async def test_try_acquire_is_refused_while_held_or_queued(cluster: Factory) -> None:
    a = await cluster("a")
    b = await cluster("b")
    first = await b.try_acquire("job")
    assert first is not None
    await b.release(first)
    holder = await a.acquire("job")
    assert await b.try_acquire("job") is None
    waiter = asyncio.create_task(a.acquire("job"))
    await wait_until(lambda: _eq(b.waiting("job"), 1), what="queued")
    assert await b.try_acquire("job") is None
    await a.release(holder)
    second = await asyncio.wait_for(waiter, GUARD)
    assert await b.try_acquire("job") is None
    await a.release(second)
    assert await b.try_acquire("job") is not None


async def test_cancelling_a_waiter_removes_its_ticket(cluster: Factory) -> None:
    a = await cluster("a")
    b = await cluster("b")
    holder = await a.acquire("job")
    waiter = asyncio.create_task(b.acquire("job"))
    await wait_until(lambda: _eq(a.waiting("job"), 1), what="queued")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await wait_until(lambda: _eq(a.waiting("job"), 0), what="ticket removed")
    await a.release(holder)
    assert await a.try_acquire("job") is not None  # nobody waits any more


async def test_max_queue_refuses_beyond_the_bound(cluster: Factory) -> None:
    a = await cluster("a")
    b = await cluster("b")
    await a.acquire("job")
    with pytest.raises(QueueFull):
        await b.acquire("job", max_queue=0)
    waiter = asyncio.create_task(b.acquire("job", max_queue=1))
    await wait_until(lambda: _eq(a.waiting("job"), 1), what="queued")
    with pytest.raises(QueueFull) as info:
        await a.acquire("job", max_queue=1)
    assert info.value.max_queue == 1
    waiter.cancel()


async def test_holders_and_nodes_show_the_cluster(cluster: Factory) -> None:
    a = await cluster("a")
    b = await cluster("b")
    la = await a.acquire("x")
    lb = await b.acquire("y")
    await wait_until(lambda: _eq_list(a.nodes(), ["a", "b"]), what="both nodes seen")
    holders = await b.holders()
    assert [(h.key, h.node, h.fence) for h in holders] == [
        ("x", "a", la.fence),
        ("y", "b", lb.fence),
    ]
    assert all(h.expires_at > time.time() - 5 for h in holders)
    await b.close()
    await wait_until(lambda: _eq_list(a.nodes(), ["a"]), what="b gone from nodes()")
    assert [h.key for h in await a.holders()] == ["x"]


async def _eq_list(awaitable: Any, expected: list[str]) -> bool:
    return bool(await awaitable == expected)


async def test_close_releases_everything_and_ends_waits(cluster: Factory) -> None:
    a = await cluster("a")
    b = await cluster("b")
    signals = Signals()
    held = await a.acquire("x", on_signal=signals)
    await b.acquire("y")
    waiter = asyncio.create_task(a.acquire("y"))
    await wait_until(lambda: _eq(b.waiting("y"), 1), what="queued")
    await a.close()
    await a.close()  # idempotent
    assert held.state is LeaseState.LOST
    assert held.lost_reason is LostReason.CLOSED
    with pytest.raises(CoordinatorClosed):
        await waiter
    assert [h.key for h in await b.holders()] == ["y"]
    assert await b.waiting("y") == 0
    assert await b.try_acquire("x") is not None  # freed at once, no expiry wait
    with pytest.raises(CoordinatorClosed):
        await a.acquire("z")
    with pytest.raises(CoordinatorClosed):
        await a.open()


async def test_a_coordinator_must_be_opened_first(cluster: Factory) -> None:
    a = await cluster("a", open=False)
    with pytest.raises(CoordinatorClosed):
        await a.acquire("x")
    with pytest.raises(CoordinatorClosed):
        await a.holders()


async def test_a_restarted_node_inherits_nothing(cluster: Factory) -> None:
    a1 = await cluster("same")
    held = await a1.acquire("job")
    a2 = await cluster("same")  # the same node name: a new instance
    assert await a2.try_acquire("job") is None
    await a1.close(release=False)
    got = await asyncio.wait_for(a2.acquire("job"), GUARD)
    assert got.fence > held.fence


async def test_signal_callbacks_that_raise_are_contained(
    cluster: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    a = await cluster("a")

    def boom(lease: Lease, signal: LeaseSignal) -> None:
        raise RuntimeError("boom")

    held = await a.acquire("job", on_signal=boom)
    await a.close(release=False)
    assert held.state is LeaseState.LOST
    assert "boom" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"lease": 0}, ValueError, "lease"),
        ({"lease": -1.0}, ValueError, "lease"),
        ({"lease": float("inf")}, ValueError, "lease"),
        ({"lease": float("nan")}, ValueError, "lease"),
        ({"lease": "15"}, TypeError, "lease"),
        ({"lease": True}, TypeError, "lease"),
        ({"node": ""}, ValueError, "node"),
        ({"node": 3}, TypeError, "node"),
        ({"node": "x" * 201}, ValueError, "node"),
        ({"prefix": "Bad-Prefix"}, ValueError, "prefix"),
        ({"prefix": 1}, TypeError, "prefix"),
    ],
)
def test_bad_constructor_arguments_name_the_parameter(
    kwargs: dict[str, Any], exc: type[Exception], words: str
) -> None:
    for backend in BACKENDS:
        args: dict[str, Any] = {"node": "n", "lease": 1.0, "prefix": "p", **kwargs}
        with pytest.raises(exc, match=words):
            make_coordinator(backend, args.pop("prefix"), **args)


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda c: c.acquire(""), ValueError, "key"),
        (lambda c: c.acquire(3), TypeError, "key"),
        (lambda c: c.acquire("x" * 1025), ValueError, "key"),
        (lambda c: c.acquire("k", replace=1), TypeError, "replace"),
        (lambda c: c.acquire("k", max_queue=-1), ValueError, "max_queue"),
        (lambda c: c.acquire("k", max_queue=1.5), TypeError, "max_queue"),
        (lambda c: c.acquire("k", on_signal=3), TypeError, "on_signal"),
        (lambda c: c.try_acquire(None), TypeError, "key"),
        (lambda c: c.release("lease"), TypeError, "lease"),
    ],
)
async def test_bad_call_arguments_name_the_parameter(
    cluster: Factory, call: Callable[[Any], Any], exc: type[Exception], words: str
) -> None:
    a = await cluster("a")
    with pytest.raises(exc, match=words):
        await call(a)
