"""Capacity, the queue (priority, then age), cancelling, and per-user quotas."""

from __future__ import annotations

import pytest

from genos.errors import CapacityError, QuotaError, StateError
from genos.orchestrator import Capacity, FakeClock, Quota, Registry, State, Usage, User
from genos.orchestrator.capacity import Requests
from tests.orchestrator.conftest import MakeEngine
from tests.orchestrator.doubles import HookedDriver, make_spec
from tests.orchestrator.helpers import steps

pytestmark = pytest.mark.anyio
WAIT = 10.0
TWO_CPUS = Capacity(cpus=2, memory_mb=8192)
# Each environment reserves its limits: the queue's arithmetic stays visible in the specs.
STRICT = Requests.limits()


async def test_third_request_waits_and_starts_when_one_ends(
    make_engine: MakeEngine, registry: Registry, alice: User
) -> None:
    """With room for two, the third is queued at position 1 and runs once one is terminated."""
    engine = await make_engine(TWO_CPUS, requests=STRICT)
    first, second, third = [await engine.request(alice.id, make_spec(f"e{n}")) for n in range(3)]
    assert (first.state, second.state) == (State.PROVISIONING, State.PROVISIONING)
    assert (third.state, third.queue_position) == (State.QUEUED, 1)
    await engine.wait(second.id, State.RUNNING, timeout=WAIT)
    host = await engine.host()
    assert host.used == Usage(environments=2, cpus=2.0, memory_mb=2048)
    assert host.free == Usage(environments=0, cpus=0.0, memory_mb=6144)
    assert [(q.env_id, q.position) for q in host.queue] == [(third.id, 1)]
    await engine.terminate(first.id)
    assert (await engine.wait(third.id, State.RUNNING, timeout=WAIT)).queue_position is None
    assert await steps(registry, third.id) == [
        ("requested", "queued"),
        ("queued", "provisioning"),
        ("provisioning", "running"),
    ]
    assert (await engine.host()).queue == []


async def test_queue_serves_priority_then_age(
    make_engine: MakeEngine, clock: FakeClock, alice: User
) -> None:
    """Higher priority first; among equals, the older request first."""
    engine = await make_engine(Capacity(cpus=1, memory_mb=8192), requests=STRICT)
    holder = await engine.request(alice.id, make_spec("holder"))
    waiting = {}
    for name, priority in (("low1", 0), ("high1", 5), ("low2", 0), ("high2", 5)):
        clock.advance(1)
        waiting[name] = (await engine.request(alice.id, make_spec(name), priority=priority)).id
    order = [q.env_id for q in (await engine.host()).queue]
    assert order == [waiting["high1"], waiting["high2"], waiting["low1"], waiting["low2"]]
    await engine.terminate(holder.id)
    await engine.wait(waiting["high1"], State.RUNNING, timeout=WAIT)
    positions = {e.name: e.queue_position for e in await engine.list(states=[State.QUEUED])}
    assert positions == {"high2": 1, "low1": 2, "low2": 3}


async def test_nothing_overtakes_the_head_of_the_queue(
    make_engine: MakeEngine, clock: FakeClock, alice: User
) -> None:
    """A small request behind a large waiting one waits too, even if it would fit."""
    engine = await make_engine(TWO_CPUS, requests=STRICT)
    holder = await engine.request(alice.id, make_spec("holder", cpus=1))
    big = await engine.request(alice.id, make_spec("big", cpus=2))
    clock.advance(1)
    tiny = await engine.request(alice.id, make_spec("tiny", cpus=1))
    assert [(e.state, e.queue_position) for e in (big, tiny)] == [
        (State.QUEUED, 1),
        (State.QUEUED, 2),
    ]
    await engine.terminate(holder.id)
    await engine.wait(big.id, State.RUNNING, timeout=WAIT)
    assert (await engine.get(tiny.id)).state is State.QUEUED


async def test_cancel_a_queued_request(
    make_engine: MakeEngine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """Cancelling a queued request terminates it without touching the driver, and the spec
    kept for its provisioning goes with it."""
    engine = await make_engine(Capacity(cpus=1, memory_mb=8192), requests=STRICT)
    running = await engine.request(alice.id, make_spec("a"))
    queued = await engine.request(alice.id, make_spec("b"))
    later = await engine.request(alice.id, make_spec("c"))
    assert queued.id in engine._life._specs
    cancelled = await engine.cancel(queued.id, actor=alice.id)
    assert cancelled.state is State.TERMINATED
    assert queued.id not in engine._life._specs
    assert await steps(registry, queued.id) == [("requested", "queued"), ("queued", "terminated")]
    assert [call for call in driver.calls if call[1] == queued.id] == []
    assert (await engine.get(later.id)).queue_position == 1
    with pytest.raises(StateError) as caught:
        await engine.cancel(running.id)
    assert caught.value.required == ("requested", "queued")


async def test_a_request_larger_than_the_host_is_refused(
    make_engine: MakeEngine, alice: User
) -> None:
    """A spec that could never fit raises CapacityError and stores nothing."""
    engine = await make_engine(TWO_CPUS, requests=STRICT)
    with pytest.raises(CapacityError):
        await engine.request(alice.id, make_spec(cpus=4))
    assert await engine.list() == []


@pytest.mark.parametrize(
    ("quota", "limit"),
    [
        (Quota(environments=2), "environments"),
        (Quota(cpus=2.5), "cpus"),
        (Quota(memory_mb=2500), "memory_mb"),
    ],
)
async def test_quota_refuses_the_request_that_exceeds_it(
    make_engine: MakeEngine, alice: User, quota: Quota, limit: str
) -> None:
    """Two 1-CPU 1 GiB environments fit the quota; the third is a QuotaError naming the limit."""
    engine = await make_engine(quota=quota, requests=STRICT)
    first = await engine.request(alice.id, make_spec("a"))
    await engine.request(alice.id, make_spec("b"))
    with pytest.raises(QuotaError) as caught:
        await engine.request(alice.id, make_spec("c"))
    assert (caught.value.limit, caught.value.code) == (limit, "quota")
    await engine.terminate(first.id)
    assert (await engine.request(alice.id, make_spec("c"))).name == "c"


async def test_queued_requests_count_toward_the_quota(make_engine: MakeEngine, alice: User) -> None:
    """A waiting request already uses the owner's quota."""
    engine = await make_engine(
        Capacity(cpus=1, memory_mb=8192), quota=Quota(environments=2), requests=STRICT
    )
    await engine.request(alice.id, make_spec("a"))
    queued = await engine.request(alice.id, make_spec("b"))
    assert queued.state is State.QUEUED
    with pytest.raises(QuotaError):
        await engine.request(alice.id, make_spec("c"))
