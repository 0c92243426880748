"""TTL and idle timeouts on a fake clock: a warning event first, then the action."""

from __future__ import annotations

import asyncio

import pytest

from genos.orchestrator import Engine, FakeClock, Registry, State, User
from genos.spec import Lifetime
from tests.orchestrator.conftest import MakeEngine
from tests.orchestrator.doubles import HookedDriver, make_spec
from tests.orchestrator.helpers import story

pytestmark = pytest.mark.anyio
WAIT = 10.0
HOUR = 3600


async def running(engine: Engine, owner: str, lifetime: Lifetime) -> str:
    """The id of a new environment with ``lifetime``, once it runs."""
    env = await engine.request(owner, make_spec(lifetime=lifetime))
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    return env.id


async def test_ttl_warns_then_terminates(
    engine: Engine, registry: Registry, driver: HookedDriver, clock: FakeClock, alice: User
) -> None:
    """60 s before the TTL a warning event is stored; at the TTL the environment is terminated."""
    env_id = await running(engine, alice.id, Lifetime(ttl_seconds=HOUR, idle_timeout_seconds=None))
    clock.advance(HOUR - 61)
    await engine.tick()
    assert (await story(registry, env_id))[-1] == ("state", "running", "running: provisioned")
    clock.advance(1)
    await engine.tick()
    assert (await story(registry, env_id))[-1] == ("warning", "running", "ttl: terminating in 60s")
    assert (await engine.get(env_id)).state is State.RUNNING
    clock.advance(60)
    await engine.tick()
    assert (await story(registry, env_id))[-2:] == [
        ("warning", "running", "ttl: terminating in 60s"),
        ("state", "terminated", "terminated: ttl: 3600s reached"),
    ]
    assert driver.envs == {}


async def test_a_deadline_already_past_still_warns_first(
    engine: Engine, registry: Registry, clock: FakeClock, alice: User
) -> None:
    """When a tick comes late, the warning is stored and the action follows at once."""
    env_id = await running(engine, alice.id, Lifetime(ttl_seconds=HOUR, idle_timeout_seconds=None))
    clock.advance(2 * HOUR)
    await engine.tick()
    assert (await story(registry, env_id))[-2:] == [
        ("warning", "running", "ttl: terminating in 0s"),
        ("state", "terminated", "terminated: ttl: 3600s reached"),
    ]


async def test_idle_warns_then_suspends_and_activity_postpones_it(
    engine: Engine, registry: Registry, clock: FakeClock, alice: User
) -> None:
    """Idle for the timeout suspends (after a warning); activity in between moves the deadline."""
    lifetime = Lifetime(ttl_seconds=4 * HOUR, idle_timeout_seconds=600, on_idle="suspend")
    env_id = await running(engine, alice.id, lifetime)
    clock.advance(540)
    await engine.tick()
    assert (await story(registry, env_id))[-1] == ("warning", "running", "idle: suspending in 60s")
    await engine.activity(env_id)
    clock.advance(60)
    await engine.tick()
    assert (await engine.get(env_id)).state is State.RUNNING
    clock.advance(480)
    await engine.tick()
    assert (await story(registry, env_id))[-1] == ("warning", "running", "idle: suspending in 60s")
    clock.advance(60)
    await engine.tick()
    suspended = await engine.get(env_id)
    assert suspended.state is State.SUSPENDED
    assert (await story(registry, env_id))[-1] == (
        "state", "suspended", "suspended: idle: no activity for 600s"
    )  # fmt: skip


async def test_idle_can_terminate(
    engine: Engine, registry: Registry, clock: FakeClock, alice: User
) -> None:
    """on_idle=terminate ends the environment instead of suspending it."""
    lifetime = Lifetime(ttl_seconds=4 * HOUR, idle_timeout_seconds=300, on_idle="terminate")
    env_id = await running(engine, alice.id, lifetime)
    clock.advance(300)
    await engine.tick()
    assert (await story(registry, env_id))[-2:] == [
        ("warning", "running", "idle: terminating in 0s"),
        ("state", "terminated", "terminated: idle: no activity for 300s"),
    ]


async def test_ttl_also_ends_a_suspended_environment(
    engine: Engine, clock: FakeClock, alice: User
) -> None:
    """A suspended environment is not idle-checked, but its lifetime still runs out."""
    lifetime = Lifetime(ttl_seconds=HOUR, idle_timeout_seconds=600)
    env_id = await running(engine, alice.id, lifetime)
    await engine.suspend(env_id)
    clock.advance(HOUR - 30)
    await engine.tick()
    assert (await engine.get(env_id)).state is State.SUSPENDED
    clock.advance(30)
    await engine.tick()
    assert (await engine.get(env_id)).state is State.TERMINATED


async def test_the_maintenance_loop_ticks_on_the_clock(
    make_engine: MakeEngine, clock: FakeClock, alice: User
) -> None:
    """With maintenance on, moving the clock past the TTL terminates without calling tick()."""
    engine = await make_engine(maintenance=True, tick_interval=30.0)
    env_id = await running(engine, alice.id, Lifetime(ttl_seconds=HOUR, idle_timeout_seconds=None))
    await asyncio.wait_for(clock.sleeping(), WAIT)  # the loop is asleep on the fake clock
    clock.advance(HOUR + 30)
    assert (await engine.wait(env_id, State.TERMINATED, timeout=WAIT)).state is State.TERMINATED
