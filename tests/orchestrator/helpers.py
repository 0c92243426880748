"""Small readers of the registry that make test expectations short."""

from __future__ import annotations

from genos.ids import new_env_id
from genos.orchestrator import Registry, State
from genos.orchestrator.queries import NewEnvironment
from tests.orchestrator.doubles import make_spec

HOST = "test-host"
PATHS = {
    State.REQUESTED: [],
    State.QUEUED: [State.QUEUED],
    State.PROVISIONING: [State.PROVISIONING],
    State.RUNNING: [State.PROVISIONING, State.RUNNING],
    State.SUSPENDED: [State.PROVISIONING, State.RUNNING, State.SUSPENDED],
    State.TERMINATED: [State.PROVISIONING, State.RUNNING, State.TERMINATED],
    State.FAILED: [State.PROVISIONING, State.FAILED],
}


async def steps(registry: Registry, env_id: str) -> list[tuple[str, str]]:
    """The environment's transitions as (from, to) values."""
    return [(t.from_state.value, t.to_state.value) for t in await registry.transitions(env_id)]


async def story(registry: Registry, env_id: str) -> list[tuple[str, str, str]]:
    """The environment's events as (type, state, message) values."""
    return [(e.type.value, e.state.value, e.message) for e in await registry.events(env_id)]


async def placed(registry: Registry, owner: str, state: State, host: str = HOST) -> str:
    """An environment put into ``state`` directly in the registry (no engine, no driver)."""
    env, _ = await registry.create(NewEnvironment(new_env_id(), owner, make_spec()))
    old = State.REQUESTED
    for new in PATHS[state]:
        await registry.transition(env.id, old, new, actor="test", reason="setup", host=host)
        old = new
    return env.id
