"""Reconcile: adopt, fail what vanished, remove orphans, and change nothing on a partial picture."""

from __future__ import annotations

import asyncio
import logging

import pytest

from genos.orchestrator import Engine, Registry, State, User
from genos.orchestrator.reconcile import RESTARTED, VANISHED
from genos.runtime.driver import EnvState
from tests.orchestrator.conftest import MakeEngine
from tests.orchestrator.doubles import HookedDriver, broken, make_spec
from tests.orchestrator.helpers import placed, steps

pytestmark = pytest.mark.anyio
WAIT = 10.0
ORPHAN = "0rphan0001"  # an id the registry never saw


async def test_adopts_what_runs_on_the_host(
    make_engine: MakeEngine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """Registry provisioning + driver running -> running, by reconcile, with the reason."""
    env_id = await placed(registry, alice.id, State.PROVISIONING)
    steady = await placed(registry, alice.id, State.RUNNING)
    await driver.put(env_id, EnvState.RUNNING)
    await driver.put(steady, EnvState.RUNNING)
    report = await (await make_engine(start=False)).reconcile()
    assert (report.complete, report.adopted, report.failed, report.destroyed) == (
        True, [env_id], [], []
    )  # fmt: skip
    [*_, adopt] = await registry.transitions(env_id)
    assert (adopt.to_state, adopt.actor, adopt.reason) == (
        State.RUNNING, "reconcile", "adopted: running on host"
    )  # fmt: skip
    assert (await registry.get(steady)).state is State.RUNNING


async def test_vanished_environments_fail_with_a_reason(
    make_engine: MakeEngine, registry: Registry, alice: User
) -> None:
    """Running or suspended in the registry but absent from the host -> failed, 'vanished'."""
    gone = [await placed(registry, alice.id, s) for s in (State.RUNNING, State.SUSPENDED)]
    report = await (await make_engine(start=False)).reconcile()
    assert sorted(report.failed) == sorted(gone)
    for env_id in gone:
        env = await registry.get(env_id)
        assert (env.state, env.failure_reason) == (State.FAILED, VANISHED)


async def test_orphans_are_destroyed(
    make_engine: MakeEngine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """Host environments unknown to the registry, or final there, are destroyed, and what
    their destroy logged on their own loggers is not kept."""
    ended = await placed(registry, alice.id, State.TERMINATED)
    await driver.put(ORPHAN, EnvState.RUNNING)
    await driver.put(ended, EnvState.SUSPENDED)
    for env_id in (ORPHAN, ended):  # as a real driver's destroy logs
        logging.getLogger("genos.runtime.test").getChild(env_id).info("destroyed")
    report = await (await make_engine(start=False)).reconcile()
    assert sorted(report.destroyed) == sorted([ORPHAN, ended])
    assert driver.envs == {}
    assert (await registry.get(ended)).state is State.TERMINATED
    names = logging.Logger.manager.loggerDict
    assert [n for n in names if n.endswith((f".{ORPHAN}", f".{ended}"))] == []


@pytest.mark.parametrize("verb", ["list_ids", "inspect"])
async def test_a_partial_picture_changes_nothing(
    make_engine: MakeEngine, registry: Registry, driver: HookedDriver, alice: User, verb: str
) -> None:
    """If listing or inspecting the host fails, reconcile does nothing at all."""
    vanished = await placed(registry, alice.id, State.RUNNING)
    await driver.put(ORPHAN, EnvState.RUNNING)
    driver.failures[verb] = broken("runc list failed")
    report = await (await make_engine(start=False)).reconcile()
    assert (report.complete, report.changed) == (False, False)
    assert (await registry.get(vanished)).state is State.RUNNING
    assert driver.envs == {ORPHAN: EnvState.RUNNING}
    assert ("destroy", ORPHAN) not in driver.calls


@pytest.mark.parametrize("on_host", [EnvState.CREATED, None])
async def test_provisioning_abandoned_by_a_dead_control_plane_fails(
    make_engine: MakeEngine,
    registry: Registry,
    driver: HookedDriver,
    alice: User,
    on_host: EnvState | None,
) -> None:
    """Provisioning with no task here and not running on the host -> destroyed and failed."""
    env_id = await placed(registry, alice.id, State.PROVISIONING)
    if on_host is not None:
        await driver.put(env_id, on_host)
    report = await (await make_engine(start=False)).reconcile()
    assert report.failed == [env_id]
    assert (await registry.get(env_id)).failure_reason == RESTARTED
    assert driver.envs == {}


async def test_interrupted_suspend_and_resume_are_redone(
    make_engine: MakeEngine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """Registry = intent: suspended-but-running is suspended, running-but-frozen resumed."""
    frozen = await placed(registry, alice.id, State.RUNNING)
    thawed = await placed(registry, alice.id, State.SUSPENDED)
    await driver.put(frozen, EnvState.SUSPENDED)
    await driver.put(thawed, EnvState.RUNNING)
    report = await (await make_engine(start=False)).reconcile()
    assert sorted(report.repaired) == sorted([frozen, thawed])
    assert driver.envs == {frozen: EnvState.RUNNING, thawed: EnvState.SUSPENDED}


async def test_a_stopped_session_fails(
    make_engine: MakeEngine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """Running in the registry but stopped on the host -> failed and destroyed."""
    env_id = await placed(registry, alice.id, State.RUNNING)
    await driver.put(env_id, EnvState.STOPPED)
    await (await make_engine(start=False)).reconcile()
    assert (await registry.get(env_id)).failure_reason == "session stopped on host"
    assert driver.envs == {}


async def test_reconcile_is_idempotent(
    make_engine: MakeEngine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """A second reconcile right after the first changes nothing and calls no mutating verb."""
    await placed(registry, alice.id, State.PROVISIONING)
    await placed(registry, alice.id, State.RUNNING)
    await driver.put(ORPHAN, EnvState.RUNNING)
    engine = await make_engine(start=False)
    assert (await engine.reconcile()).changed is True
    before = len(driver.calls)
    again = await engine.reconcile()
    assert (again.complete, again.changed) == (True, False)
    assert {verb for verb, _ in driver.calls[before:]} <= {"list_ids", "inspect"}


async def test_provisioning_in_flight_is_left_alone(
    engine: Engine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """A periodic reconcile does not mistake this engine's own provisioning for an abandoned one."""
    driver.gates["create"] = asyncio.Event()
    env = await engine.request(alice.id, make_spec())
    await driver.called("create")
    report = await engine.reconcile()
    assert report.changed is False
    driver.gates["create"].set()
    assert (await engine.wait(env.id, State.RUNNING, timeout=WAIT)).state is State.RUNNING


async def test_a_restarted_control_plane_fails_what_it_was_provisioning(
    make_engine: MakeEngine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """Killed mid-create, the next engine's start reconciles the env to failed, host clean."""
    driver.gates["create"] = asyncio.Event()
    first = await make_engine()
    env = await first.request(alice.id, make_spec())
    await driver.called("create")
    await first.aclose()  # the control plane dies; the registry says provisioning
    assert (await registry.get(env.id)).state is State.PROVISIONING
    driver.gates.clear()
    second = await make_engine()
    failed = await second.get(env.id)
    assert (failed.state, failed.failure_reason) == (State.FAILED, RESTARTED)
    assert await steps(registry, env.id) == [
        ("requested", "provisioning"),
        ("provisioning", "failed"),
    ]
    assert driver.envs == {}


async def test_start_admits_requests_left_waiting(
    make_engine: MakeEngine, registry: Registry, alice: User
) -> None:
    """Requests stored but never admitted (the control plane died) start on the next start."""
    env_id = await placed(registry, alice.id, State.REQUESTED)
    engine = await make_engine()
    assert (await engine.wait(env_id, State.RUNNING, timeout=WAIT)).host == "test-host"
