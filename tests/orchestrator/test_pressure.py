"""Memory pressure: who is freed first, how, and who never is (fake driver, fake host memory)."""

from __future__ import annotations

import pytest

from genos.orchestrator import Capacity, Engine, FakeClock, Registry, State, User
from genos.orchestrator.pressure import HostMemory, PressurePolicy
from genos.runtime.driver import Usage
from genos.spec import EnvironmentSpec, Resources, Tier
from tests.orchestrator.conftest import MakeEngine
from tests.orchestrator.doubles import HookedDriver, make_spec
from tests.orchestrator.helpers import story

pytestmark = pytest.mark.anyio
WAIT = 10.0
MB = 1 << 20
ROOMY = HostMemory(total_mb=24000, available_mb=20000, psi_full_avg10=0.0)
SMALL = Capacity(cpus=4, memory_mb=1024)  # what GenOS was given: 1 GiB for environments
NOW = PressurePolicy(cooldown=0.0)  # act on every check (the tests decide when checks happen)


async def running(engine: Engine, owner: str, name: str, *, priority: int = 0) -> str:
    """An environment brought to running through the engine."""
    env = await engine.request(owner, make_spec(name), priority=priority)
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    return env.id


def uses(driver: HookedDriver, env_id: str, mb: int) -> None:
    """Make the fake report ``mb`` MiB of working set for ``env_id``."""
    driver.fake.envs[env_id].usage = Usage(cpu_seconds=1.0, memory_bytes=mb * MB, pids=5)


async def test_no_pressure_no_action(make_engine: MakeEngine, alice: User) -> None:
    """With room on the host and in GenOS's share, a check frees nothing and says not short."""
    engine = await make_engine(SMALL, pressure=NOW)
    engine.pressure.read_host = lambda: ROOMY
    env_id = await running(engine, alice.id, "a")
    assert await engine.pressure.check(engine.clock.now()) is None
    assert engine.pressure.short is None
    assert (await engine.get(env_id)).state is State.RUNNING


async def test_the_lowest_priority_over_its_request_goes_first_then_the_most_idle(
    make_engine: MakeEngine, alice: User, driver: HookedDriver, registry: Registry, clock: FakeClock
) -> None:
    """Environments over GenOS's share: the one using more than it requested goes first (within
    the lowest priority), with a warning event and the reason on its transition; then the most
    idle of its priority; a higher priority is left for last."""
    engine = await make_engine(SMALL, pressure=NOW)
    engine.pressure.read_host = lambda: ROOMY
    quiet = await running(engine, alice.id, "quiet")
    hog = await running(engine, alice.id, "hog")
    important = await running(engine, alice.id, "important", priority=5)
    clock.advance(600)
    await engine.activity(quiet)  # used 10 minutes ago, then left alone
    clock.advance(600)
    uses(driver, quiet, 40)
    uses(driver, hog, 950)  # far above the 64 MiB a plain desktop requests
    uses(driver, important, 40)

    assert await engine.pressure.check(clock.now()) == hog
    stopped = await engine.get(hog)
    assert stopped.state is State.TERMINATED
    events = await story(registry, hog)
    warning = [m for kind, _, m in events if kind == "warning"]
    assert len(warning) == 1
    assert warning[0].startswith("memory pressure: environments use 1030 MiB of the 1024 MiB")
    assert "using 950 MiB of the 64 MiB it requested" in warning[0]
    assert (await registry.transitions(hog))[-1].reason == warning[0]

    uses(driver, quiet, 990)  # still short: the quiet one of priority 0 is next, not priority 5
    assert await engine.pressure.check(clock.now()) == quiet
    assert (await engine.get(important)).state is State.RUNNING


async def test_an_environment_in_use_is_never_freed(
    make_engine: MakeEngine, alice: User, driver: HookedDriver, clock: FakeClock
) -> None:
    """A viewer connected or activity in the last two minutes protects an environment whatever
    its priority or size; when only those are left the monitor does nothing."""
    watched: set[str] = set()
    engine = await make_engine(SMALL, pressure=NOW, presence=lambda env_id: env_id in watched)
    engine.pressure.read_host = lambda: ROOMY
    viewed = await running(engine, alice.id, "viewed", priority=-5)
    typing = await running(engine, alice.id, "typing", priority=-5)
    other = await running(engine, alice.id, "other", priority=3)
    watched.add(viewed)
    clock.advance(1800)
    await engine.activity(typing)
    clock.advance(60)
    for env_id in (viewed, typing):
        uses(driver, env_id, 600)
    assert await engine.pressure.check(clock.now()) == other
    assert await engine.pressure.check(clock.now()) is None
    assert engine.pressure.short is not None
    for env_id in (viewed, typing):
        assert (await engine.get(env_id)).state is State.RUNNING


async def test_a_vm_is_suspended_to_disk_not_stopped(
    make_engine: MakeEngine, alice: User, driver: HookedDriver, clock: FakeClock
) -> None:
    """Under pressure a microVM is suspended to disk (its memory is freed, it can resume)."""
    driver.fake.checkpoint = True
    engine = await make_engine(pressure=NOW)
    engine.pressure.read_host = lambda: HostMemory(24000, 100, None)  # the host itself is short
    vm_spec = EnvironmentSpec(name="vm", tier=Tier.MICROVM, resources=Resources(memory_mb=512))
    env = await engine.request(alice.id, vm_spec)
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    assert await engine.pressure.check(clock.now()) is None  # just started: its person is coming
    clock.advance(300)
    assert await engine.pressure.check(clock.now()) == env.id
    assert (await engine.get(env.id)).state is State.SUSPENDED
    assert driver.calls[-1] == ("suspend", env.id)
    assert engine.pressure.short == "the host has 100 MiB available (under 720 MiB)"


async def test_stalls_reported_by_the_kernel_count_as_pressure(make_engine: MakeEngine) -> None:
    """PSI's full avg10 above the policy's threshold is pressure; the reason names it."""
    engine = await make_engine(pressure=NOW)
    engine.pressure.read_host = lambda: HostMemory(24000, 20000, 35.5)
    sample = await engine.pressure.sample()
    assert engine.pressure.why_short(sample) == "tasks stalled on memory 35.5% of the last 10 s"


async def test_host_status_shows_measured_use(
    make_engine: MakeEngine, alice: User, driver: HookedDriver
) -> None:
    """Engine.host() adds up the environments' real working sets beside requests and limits."""
    engine = await make_engine(SMALL, pressure=PressurePolicy(enabled=False))
    engine.pressure.read_host = lambda: ROOMY
    first = await running(engine, alice.id, "first")
    second = await running(engine, alice.id, "second")
    uses(driver, first, 30)
    uses(driver, second, 45)
    await engine.pressure.sample()  # the reading host() shows
    status = await engine.host()
    assert status.measured is not None
    assert status.measured.memory_mb == 75
    assert (status.used.environments, status.used.memory_mb) == (2, 128)
    assert (status.limits.environments, status.limits.memory_mb) == (2, 2048)
    assert status.pressure is None
