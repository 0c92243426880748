"""The tier router: one driver per tier behind the driver protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from genos.errors import CapabilityError, NotFoundError
from genos.runtime.driver import Driver
from genos.runtime.fake import FakeDriver
from genos.runtime.router import TierRouter
from genos.spec import EnvironmentSpec, Tier
from genos.testing import EXPECTED_STATES, check_driver

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def routers(tmp_path: Path) -> tuple[TierRouter, FakeDriver, FakeDriver]:
    containers, vms = FakeDriver(tmp_path / "c"), FakeDriver(tmp_path / "v")
    routes: dict[Tier, Driver] = {
        Tier.CONTAINER: containers, Tier.GVISOR: containers, Tier.VM: vms, Tier.MICROVM: vms,
    }  # fmt: skip
    return TierRouter(routes), containers, vms


async def test_router_passes_the_conformance_suite(tmp_path: Path) -> None:
    """check_driver sees the usual states through the router."""
    assert await check_driver(lambda: routers(tmp_path)[0], EnvironmentSpec()) == EXPECTED_STATES


async def test_each_tier_goes_to_its_driver(tmp_path: Path) -> None:
    """A container lands in the container driver, a VM in the VM driver; ids are routed back."""
    router, containers, vms = routers(tmp_path)
    await router.create("a000000001", EnvironmentSpec())
    await router.create("b000000002", EnvironmentSpec(tier=Tier.VM))
    assert sorted(containers.envs) == ["a000000001"]
    assert sorted(vms.envs) == ["b000000002"]
    await router.start("b000000002")
    assert router.display("b000000002") == vms.display("b000000002")
    assert await router.list_ids() == ["a000000001", "b000000002"]
    await router.destroy("b000000002")
    assert vms.envs == {}


async def test_a_fresh_router_finds_owners_after_a_restart(tmp_path: Path) -> None:
    """A new router (a restarted server) routes by what each driver has on the host."""
    _, containers, vms = routers(tmp_path)
    await vms.create("c000000003", EnvironmentSpec(tier=Tier.MICROVM))
    fresh = TierRouter({Tier.CONTAINER: containers, Tier.MICROVM: vms})
    assert (await fresh.inspect("c000000003")).env_id == "c000000003"
    with pytest.raises(NotFoundError):
        await fresh.inspect("d000000004")


async def test_a_tier_nobody_runs_is_a_capability_error(tmp_path: Path) -> None:
    """Without a VM driver, a vm spec is refused naming the tiers offered."""
    router = TierRouter({Tier.CONTAINER: FakeDriver(tmp_path / "c")})
    with pytest.raises(CapabilityError, match="does not run tier vm"):
        await router.create("e000000005", EnvironmentSpec(tier=Tier.VM))
    assert await router.list_ids() == []


async def test_start_leaves_the_boot_time_to_the_driver_unless_told(tmp_path: Path) -> None:
    """Without a timeout the router passes none (a VM driver's own default is far longer
    than a container's); with one it passes that one."""
    seen: list[float | None] = []

    class Timed(FakeDriver):
        async def start(self, env_id: str, *, timeout: float = 120.0) -> None:
            seen.append(timeout)
            await super().start(env_id, timeout=timeout)

    vms = Timed(tmp_path / "v")
    router = TierRouter({Tier.CONTAINER: FakeDriver(tmp_path / "c"), Tier.VM: vms})
    for env_id in ("b000000002", "c000000003"):
        await router.create(env_id, EnvironmentSpec(tier=Tier.VM))
    await router.start("b000000002")
    await router.start("c000000003", timeout=5.0)
    assert seen == [120.0, 5.0]
    for env_id in ("b000000002", "c000000003"):
        await router.destroy(env_id)
