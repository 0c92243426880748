"""Crash safety: each transition is in the registry before the driver call it causes begins."""

from __future__ import annotations

import pytest

from genos.orchestrator import Engine, Registry, State, User
from tests.orchestrator.doubles import HookedDriver, broken, make_spec

pytestmark = pytest.mark.anyio
WAIT = 10.0
MUTATING = {"create", "start", "suspend", "resume", "destroy"}


def record_registry(registry: Registry, driver: HookedDriver) -> list[tuple[str, str, str]]:
    """Make the driver note (verb, state in registry, last transition's target) at each call."""
    seen: list[tuple[str, str, str]] = []

    async def observe(verb: str, env_id: str) -> None:
        if verb in MUTATING:
            env = await registry.get(env_id)
            last = (await registry.transitions(env_id))[-1]
            seen.append((verb, env.state.value, last.to_state.value))

    driver.observer = observe
    return seen


async def test_every_driver_call_follows_its_recorded_transition(
    engine: Engine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """When the driver is called, the registry already holds the transition that asked for it."""
    seen = record_registry(registry, driver)
    env = await engine.request(alice.id, make_spec())
    await engine.wait(env.id, State.RUNNING, timeout=WAIT)
    await engine.suspend(env.id)
    await engine.resume(env.id)
    await engine.terminate(env.id)
    assert seen == [
        ("create", "provisioning", "provisioning"),
        ("start", "provisioning", "provisioning"),
        ("suspend", "suspended", "suspended"),
        ("resume", "running", "running"),
        ("destroy", "terminated", "terminated"),
    ]


async def test_failure_is_recorded_before_cleanup(
    engine: Engine, registry: Registry, driver: HookedDriver, alice: User
) -> None:
    """After a failed create, `failed` is stored before the driver is asked to clean up."""
    seen = record_registry(registry, driver)
    driver.failures["create"] = broken()
    env = await engine.request(alice.id, make_spec())
    await engine.wait(env.id, State.FAILED, timeout=WAIT)
    await driver.called("destroy")
    assert seen == [
        ("create", "provisioning", "provisioning"),
        ("destroy", "failed", "failed"),
    ]
