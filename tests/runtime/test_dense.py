"""Dense hosts with the real runtime: pool claims are isolated, memory pressure frees a hog.

An engine in this process drives the real OCI driver (runc) over the shared
test image store, with a SQLite registry of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from genos.orchestrator import Capacity, Engine, Registry, State
from genos.orchestrator.pools import POOL_USER_ID
from genos.orchestrator.pressure import PressurePolicy
from genos.runtime.images import ImageStore, Layer
from genos.runtime.oci.driver import OCIDriver
from genos.spec import EnvironmentSpec, Provenance, ResourceRequest, Resources
from tests.sandbox.probes import NOTHING, host_traces, offline_network

pytestmark = [pytest.mark.root, pytest.mark.runc]
WAIT = 120.0
T = TypeVar("T")
SECRET = "/home/user/claim-secret"


class Dense:
    """An engine over the real driver, the loop it runs on, and who has a viewer open."""

    def __init__(
        self, runner: asyncio.Runner, engine: Engine, driver: OCIDriver, data_root: Path
    ) -> None:
        self.runner, self.engine, self.driver, self.data_root = runner, engine, driver, data_root
        self.watched: set[str] = set()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def sh(self, env_id: str, script: str) -> tuple[int, str]:
        done = self.run(self.driver.exec(env_id, ["sh", "-c", script]))
        return done.code, done.stdout

    def running(self, env_id: str) -> bool:
        return self.run(self.engine.get(env_id)).state is State.RUNNING


@pytest.fixture
def dense(
    runner: asyncio.Runner,
    image_store: ImageStore,
    desktop_layers: list[Layer],
    data_root: Path,
    tmp_path: Path,
) -> Iterator[Dense]:
    """A started engine (no background loop: the test calls refill and checks) on runc."""
    assert desktop_layers
    watched: set[str] = set()
    registry = runner.run(Registry.open(f"sqlite:///{tmp_path / 'genos.db'}"))
    driver = OCIDriver(image_store, data_root=data_root, network=offline_network(data_root))
    engine = Engine(
        registry, driver, Capacity(cpus=2, memory_mb=2048, cpu_overcommit=4),
        pressure=PressurePolicy(environments_share=0.5, busy_seconds=0, cooldown=0),
        presence=lambda env_id: env_id in watched, host_name="dense-test",
    )  # fmt: skip
    runner.run(engine.start(maintenance=False))
    dense = Dense(runner, engine, driver, data_root)
    dense.watched = watched
    try:
        yield dense
    finally:
        envs = runner.run(engine.list(states=[State.PROVISIONING, State.RUNNING, State.SUSPENDED]))
        for env in envs:
            runner.run(engine.terminate(env.id))
        runner.run(engine.aclose())
        runner.run(driver.aclose())
        runner.run(registry.aclose())


def _ready(dense: Dense, count: int) -> list[str]:
    async def wait() -> list[str]:
        async with asyncio.timeout(WAIT):
            while True:
                await dense.engine.pools.refill()
                members = await dense.engine.list(POOL_USER_ID, [State.RUNNING])
                starting = await dense.engine.list(POOL_USER_ID, [State.PROVISIONING])
                if len(members) == count and not starting:
                    return [m.id for m in members]
                await asyncio.sleep(0.1)

    return dense.run(wait())


def test_a_file_written_in_a_claimed_environment_is_never_seen_by_the_next_claim(
    dense: Dense, desktop_spec: EnvironmentSpec
) -> None:
    """Two users claim from a pool of one in turn: the second gets another environment
    (never the first one back), without the first one's file, and the first leaves nothing
    on the host."""
    engine = dense.engine
    alice = dense.run(engine.registry.accounts.add_user("alice")).id
    bob = dense.run(engine.registry.accounts.add_user("bob")).id
    dense.run(engine.pools.set(desktop_spec, 1, prompt=None, actor=alice))
    [member] = _ready(dense, 1)
    mine = desktop_spec.model_copy(update={"name": "alices", "provenance": Provenance(prompt="x")})
    first = dense.run(engine.request(alice, mine))
    assert (first.id, first.state, first.owner) == (member, State.RUNNING, alice)
    assert dense.sh(first.id, f"echo alice-was-here > {SECRET} && cat {SECRET}") == (
        0, "alice-was-here\n"
    )  # fmt: skip
    [refill] = _ready(dense, 1)
    assert refill != first.id
    dense.run(engine.terminate(first.id))
    second = dense.run(engine.request(bob, desktop_spec.model_copy(update={"name": "bobs"})))
    assert (second.id, second.state, second.owner) == (refill, State.RUNNING, bob)
    code, listing = dense.sh(second.id, f"test ! -e {SECRET} && ls -A /home/user")
    assert code == 0
    assert "claim-secret" not in listing
    assert host_traces(first.id, dense.data_root) == NOTHING


def test_memory_pressure_stops_the_hog_nobody_watches_and_spares_the_rest(
    dense: Dense, desktop_spec: EnvironmentSpec
) -> None:
    """On a host given 2 GiB (acting at half of it), a desktop that fills 1.2 GiB is stopped
    with a warning and the reason; an idle desktop and a watched one keep running, and the
    memory is back."""
    engine = dense.engine
    alice = dense.run(engine.registry.accounts.add_user("alice")).id
    roomy = Resources(cpus=1, memory_mb=2048, request=ResourceRequest(memory_mb=64))
    ids = []
    for name in ("idle", "hog", "watched"):
        spec = desktop_spec.model_copy(update={"name": name, "resources": roomy})
        env = dense.run(engine.request(alice, spec))
        dense.run(engine.wait(env.id, State.RUNNING, timeout=WAIT))
        ids.append(env.id)
    idle, hog, watched = ids
    dense.watched.add(watched)
    assert dense.run(engine.pressure.check(engine.clock.now())) is None
    # dd holds a 1200 MiB buffer while sleep never reads the pipe.
    code, _ = dense.sh(hog, "(dd if=/dev/zero bs=1200M count=1 | sleep 600) >/dev/null 2>&1 &")
    assert code == 0

    async def act() -> str | None:
        async with asyncio.timeout(60):
            while True:
                done = await engine.pressure.check(engine.clock.now())
                if done is not None:
                    return done
                await asyncio.sleep(0.2)

    assert dense.run(act()) == hog
    assert dense.run(engine.get(hog)).state is State.TERMINATED
    warning = [e for e in dense.run(engine.registry.events(hog)) if e.type.value == "warning"]
    assert warning[0].message.startswith("memory pressure: environments use ")
    assert "of the 64 MiB it requested" in warning[0].message
    assert dense.run(engine.registry.transitions(hog))[-1].reason == warning[0].message
    assert dense.running(idle)
    assert dense.running(watched)
    assert dense.run(engine.pressure.check(engine.clock.now())) is None
    last = engine.pressure.last
    assert last is not None
    assert last.measured.memory_mb < 512
    assert host_traces(hog, dense.data_root) == NOTHING
