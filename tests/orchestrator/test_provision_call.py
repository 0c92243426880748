"""How the engine calls a driver's create: progress and owner only where it takes them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from genos.orchestrator.provision import Progress, create
from genos.runtime.fake import FakeDriver
from genos.spec import EnvironmentSpec


class OwnerAwareDriver(FakeDriver):
    """A fake driver whose create also takes progress and owner, and records them."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.seen: dict[str, Any] = {}

    async def create(  # type: ignore[override]
        self, env_id: str, spec: EnvironmentSpec, *, progress: Any = None, owner: str = "default"
    ) -> None:
        self.seen = {"progress": progress, "owner": owner}
        await super().create(env_id, spec)


async def _noop(message: str, data: dict[str, Any] | None) -> None:
    return


def test_owner_and_progress_reach_a_driver_that_takes_them(tmp_path: Path) -> None:
    """A driver with owner and progress keywords gets the environment's owner and reporter."""
    driver = OwnerAwareDriver(tmp_path)

    async def run() -> Progress:
        progress = Progress(_noop)
        await create(driver, "aaaaaaaaaa", EnvironmentSpec(), progress, "u0123456789ab")
        await driver.destroy("aaaaaaaaaa")
        return progress

    progress = asyncio.run(run())
    assert driver.seen == {"progress": progress, "owner": "u0123456789ab"}


def test_plain_driver_gets_only_id_and_spec(tmp_path: Path) -> None:
    """A driver without those keywords is called with the id and spec alone."""
    driver = FakeDriver(tmp_path)

    async def run() -> list[str]:
        await create(driver, "bbbbbbbbbb", EnvironmentSpec(), Progress(_noop), "u1")
        ids = await driver.list_ids()
        await driver.destroy("bbbbbbbbbb")
        return ids

    assert asyncio.run(run()) == ["bbbbbbbbbb"]
