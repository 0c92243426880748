"""Warm pools: fill, claim, refill, trim, remove, restart and reconcile (fake driver)."""

from __future__ import annotations

import asyncio

import pytest

from genos.errors import CapacityError, InputError
from genos.orchestrator import Capacity, Engine, FakeClock, Registry, State, User
from genos.orchestrator.pools import POOL_PRIORITY, POOL_USER_ID, pool_digest
from genos.orchestrator.pressure import HostMemory, PressurePolicy
from genos.spec import EnvironmentSpec, Lifetime, Persistence, PersistenceMode, Provenance, Tier
from tests.orchestrator.conftest import MakeEngine
from tests.orchestrator.doubles import HookedDriver
from tests.orchestrator.helpers import story

pytestmark = pytest.mark.anyio
WAIT = 10.0
DESKTOP = EnvironmentSpec(name="pooled", provenance=Provenance(prompt="a desktop"))
MINE = EnvironmentSpec(
    name="mine", provenance=Provenance(prompt="a plain desktop please"),
    lifetime=Lifetime(ttl_seconds=600),
)  # fmt: skip


async def settle(engine: Engine, want_ready: int, pool_id: str | None = None) -> None:
    """Refill until the pool has ``want_ready`` running members (or fail after WAIT)."""
    async with asyncio.timeout(WAIT):
        while True:
            await engine.pools.refill()
            statuses = await engine.pools.all()
            status = next(s for s in statuses if pool_id in (None, s.pool.id))
            if status.ready == want_ready and status.starting == 0:
                return
            await asyncio.sleep(0.01)


async def test_digest_ignores_who_asked_and_for_how_long() -> None:
    """Two specs differing only in name, provenance and lifetime share a digest; any other
    field changes it."""
    assert pool_digest(DESKTOP) == pool_digest(MINE)
    other = DESKTOP.model_copy(update={"tier": Tier.GVISOR})
    assert pool_digest(other) != pool_digest(DESKTOP)


async def test_a_pool_fills_and_a_matching_request_takes_a_ready_environment(
    make_engine: MakeEngine, alice: User, registry: Registry, clock: FakeClock
) -> None:
    """Setting a pool starts its environments for the pool user at the lowest priority; a
    request with the same digest gets one running at once, made the requester's (spec, name,
    TTL from now), with an event saying so; the pool starts another."""
    engine = await make_engine()
    status = await engine.pools.set(DESKTOP, 2, prompt="a desktop", actor=alice.id)
    await settle(engine, 2)
    members = await engine.list(POOL_USER_ID)
    assert {(e.owner, e.priority, e.pool_id, e.claimed) for e in members} == {
        (POOL_USER_ID, POOL_PRIORITY, status.pool.id, None)
    }
    clock.advance(3600)
    env = await engine.request(alice.id, MINE, request_id="r1")
    assert env.state is State.RUNNING
    assert (env.owner, env.name, env.pool_id) == (alice.id, "mine", status.pool.id)
    assert env.id in {m.id for m in members}
    assert env.claimed == clock.now() == env.started
    assert env.spec.lifetime.ttl_seconds == 600
    assert (await story(registry, env.id))[-1] == (
        "progress", "running", f"claimed from warm pool {status.pool.id}"
    )  # fmt: skip
    assert (await engine.request(alice.id, MINE, request_id="r1")).id == env.id  # idempotent
    await settle(engine, 2)
    ready = await engine.list(POOL_USER_ID, [State.RUNNING])
    assert env.id not in {e.id for e in ready}
    assert len(ready) == 2


async def test_a_claimed_environment_never_returns_to_its_pool(
    make_engine: MakeEngine, alice: User
) -> None:
    """Ending a claimed environment leaves the pool as it is; the next claim gets another."""
    engine = await make_engine()
    await engine.pools.set(DESKTOP, 1, prompt=None, actor=alice.id)
    await settle(engine, 1)
    first = await engine.request(alice.id, MINE)
    await settle(engine, 1)
    await engine.terminate(first.id)
    second = await engine.request(alice.id, MINE)
    assert second.state is State.RUNNING
    assert second.id != first.id
    assert second.pool_id is not None


async def test_a_different_spec_is_made_as_usual(make_engine: MakeEngine, alice: User) -> None:
    """A spec with another digest is provisioned, not claimed."""
    engine = await make_engine()
    await engine.pools.set(DESKTOP, 1, prompt=None, actor=alice.id)
    await settle(engine, 1)
    env = await engine.request(alice.id, MINE.model_copy(update={"tier": Tier.GVISOR}))
    assert env.state is State.PROVISIONING
    assert env.pool_id is None


async def test_a_pool_fills_only_as_far_as_it_fits_and_never_queues(
    make_engine: MakeEngine, alice: User, registry: Registry
) -> None:
    """With room for three 1200 MiB requests the pool of five holds three and nothing waits."""
    engine = await make_engine(Capacity(cpus=4, memory_mb=4096))
    big = EnvironmentSpec.model_validate({"resources": {"request": {"memory_mb": 1200}}})
    await engine.pools.set(big, 5, prompt=None, actor=alice.id)
    await settle(engine, 3)
    assert await registry.queue() == []


async def test_shrinking_and_removing_a_pool_end_only_unclaimed_members(
    make_engine: MakeEngine, alice: User
) -> None:
    """A smaller size ends the extra members; removing the pool ends the rest; a claimed one
    stays its owner's."""
    engine = await make_engine()
    status = await engine.pools.set(DESKTOP, 3, prompt=None, actor=alice.id)
    await settle(engine, 3)
    mine = await engine.request(alice.id, MINE)
    await engine.pools.set(DESKTOP, 1, prompt=None, actor=alice.id)
    await settle(engine, 1)
    await engine.pools.remove(status.pool.id, actor=alice.id)
    assert await engine.list(POOL_USER_ID, [State.RUNNING]) == []
    assert (await engine.get(mine.id)).state is State.RUNNING
    assert await engine.pools.all() == []
    assert (await engine.request(alice.id, MINE)).state is State.PROVISIONING


async def test_pools_survive_a_restart_and_reconcile_replaces_a_lost_member(
    make_engine: MakeEngine, alice: User, driver: HookedDriver
) -> None:
    """A new engine on the same registry finds the pool and its members; a member that
    vanished from the host is failed by reconcile and replaced by the refill."""
    first = await make_engine()
    await first.pools.set(DESKTOP, 2, prompt=None, actor=alice.id)
    await settle(first, 2)
    members = [e.id for e in await first.list(POOL_USER_ID, [State.RUNNING])]
    await first.aclose()
    await driver.fake.destroy(members[0])  # gone from the host while no engine ran
    second = await make_engine()  # start(): reconcile, load the pools, refill
    await settle(second, 2)
    assert (await second.get(members[0])).state is State.FAILED
    assert (await second.get(members[1])).state is State.RUNNING
    claimed = await second.request(alice.id, MINE)
    assert claimed.state is State.RUNNING
    assert claimed.id != members[0]
    assert claimed.pool_id == (await second.get(members[1])).pool_id


async def test_unclaimed_members_have_no_ttl_until_claimed(
    make_engine: MakeEngine, alice: User, clock: FakeClock
) -> None:
    """A pooled environment outlives its spec's TTL; once claimed, the TTL counts from then."""
    engine = await make_engine(warning_lead=0)
    short = DESKTOP.model_copy(update={"lifetime": Lifetime(ttl_seconds=60)})
    await engine.pools.set(short, 1, prompt=None, actor=alice.id)
    await settle(engine, 1)
    clock.advance(7200)
    await engine.tick()
    [member] = await engine.list(POOL_USER_ID, [State.RUNNING])
    env = await engine.request(
        alice.id, MINE.model_copy(update={"lifetime": Lifetime(ttl_seconds=60)})
    )
    assert env.id == member.id
    clock.advance(30)
    await engine.tick()
    assert (await engine.get(env.id)).state is State.RUNNING
    clock.advance(31)
    await engine.tick()
    assert (await engine.get(env.id)).state is State.TERMINATED


async def test_bad_pools_are_refused(make_engine: MakeEngine, alice: User) -> None:
    """Volumes, links, sizes out of range and specs the host can never hold are refused."""
    engine = await make_engine(Capacity(cpus=2, memory_mb=4096))
    volume = DESKTOP.model_copy(
        update={"persistence": Persistence(mode=PersistenceMode.VOLUME, volume="v")}
    )
    with pytest.raises(InputError, match="volume belongs to its owner"):
        await engine.pools.set(volume, 1, prompt=None, actor=alice.id)
    with pytest.raises(InputError, match="0 to 1000"):
        await engine.pools.set(DESKTOP, 1001, prompt=None, actor=alice.id)
    huge = EnvironmentSpec.model_validate({"resources": {"memory_mb": 8192}})
    with pytest.raises(CapacityError):
        await engine.pools.set(huge, 1, prompt=None, actor=alice.id)
    assert await engine.pools.all() == []


async def test_pooled_members_are_the_first_freed_under_pressure(
    make_engine: MakeEngine, alice: User, clock: FakeClock
) -> None:
    """Under memory pressure an unclaimed member goes before a person's idle desktop, even
    one just started; and nothing is refilled while the host is short."""
    engine = await make_engine(pressure=PressurePolicy(cooldown=0.0))
    engine.pressure.read_host = lambda: HostMemory(24000, 20000, None)
    await engine.pools.set(DESKTOP, 1, prompt=None, actor=alice.id)
    await settle(engine, 1)
    person = await engine.request(alice.id, MINE.model_copy(update={"tier": Tier.GVISOR}))
    await engine.wait(person.id, State.RUNNING, timeout=WAIT)
    clock.advance(3600)
    [member] = await engine.list(POOL_USER_ID, [State.RUNNING])
    engine.pressure.read_host = lambda: HostMemory(24000, 100, None)
    assert await engine.pressure.check(clock.now()) == member.id
    await engine.pools.refill()
    assert await engine.list(POOL_USER_ID, [State.RUNNING, State.PROVISIONING]) == []
