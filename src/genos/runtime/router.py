"""One driver in front of several: each environment goes to the driver of its spec's tier.

``genos serve`` runs containers (``container``, ``gvisor``) with the OCI
driver and VMs (``vm``, ``microvm``) with the QEMU driver; the engine sees a
single :class:`~genos.runtime.driver.Driver`. Which driver holds an
environment is remembered from ``create``; after a restart it is found by
asking each driver's ``list_ids`` (their host state lives apart).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genos.errors import CapabilityError, NotFoundError, StateError
from genos.runtime.driver import DisplayTarget, Driver, Inspection, Usage, endpoint
from genos.spec import EnvironmentSpec, Tier


class TierRouter:
    """Routes each verb to the driver that holds the environment.

    Args:
        drivers: the driver for each tier this host offers; one driver may
            serve several tiers.
    """

    name = "router"

    def __init__(self, drivers: Mapping[Tier, Driver]) -> None:
        if not drivers:
            raise ValueError("a router needs at least one driver")
        self.by_tier = dict(drivers)
        self._owner: dict[str, Driver] = {}

    @property
    def drivers(self) -> list[Driver]:
        """Each distinct driver once, in tier order."""
        seen: list[Driver] = []
        for driver in self.by_tier.values():
            if all(driver is not d for d in seen):
                seen.append(driver)
        return seen

    @property
    def runtimes(self) -> list[str]:
        """``tier: driver`` for ``/v1/host``."""
        return [f"{tier.value}: {driver.name}" for tier, driver in self.by_tier.items()]

    @property
    def accelerator(self) -> str | None:
        """What VMs run on here (``kvm``/``tcg``), if a driver runs VMs."""
        for driver in self.drivers:
            value = getattr(driver, "accelerator", None)
            if isinstance(value, str):
                return value
        return None

    async def create(
        self, env_id: str, spec: EnvironmentSpec, *, owner: str = "default", progress: Any = None
    ) -> None:
        """Create with the tier's driver (``owner``/``progress`` pass on where it takes them).

        Raises:
            CapabilityError: no driver here runs the spec's tier.
        """
        driver = self.by_tier.get(spec.tier)
        if driver is None:
            offered = ", ".join(t.value for t in self.by_tier)
            raise CapabilityError(
                f"this host does not run tier {spec.tier.value} (it offers {offered})"
            )
        self._owner[env_id] = driver
        options = {"owner": owner, "progress": progress}
        try:
            await driver.create(env_id, spec, **_accepted(driver, options))
        except StateError:
            raise  # it exists already, with that driver
        except BaseException:
            self._owner.pop(env_id, None)  # a failed create leaves nothing behind
            raise

    async def start(self, env_id: str, *, timeout: float | None = None) -> None:
        """Start it within ``timeout`` seconds; None: its driver's own (a VM's guest
        boots far slower under TCG than a container's session starts)."""
        driver = await self._of(env_id)
        if timeout is None:
            await driver.start(env_id)
        else:
            await driver.start(env_id, timeout=timeout)

    async def suspend(self, env_id: str, *, to_disk: bool = False) -> None:
        await (await self._of(env_id)).suspend(env_id, to_disk=to_disk)

    async def resume(self, env_id: str) -> None:
        await (await self._of(env_id)).resume(env_id)

    async def destroy(self, env_id: str) -> None:
        """Destroy wherever it is (every driver, when nobody claims it: destroy is idempotent)."""
        try:
            owner = await self._of(env_id)
        except NotFoundError:
            for driver in self.drivers:
                await driver.destroy(env_id)
            return
        await owner.destroy(env_id)
        self._owner.pop(env_id, None)

    async def inspect(self, env_id: str) -> Inspection:
        return await (await self._of(env_id)).inspect(env_id)

    def usage(self, env_id: str) -> Usage | None:
        driver = self._owner.get(env_id)
        if driver is not None:
            return driver.usage(env_id)
        for candidate in self.drivers:
            found = candidate.usage(env_id)
            if found is not None:
                return found
        return None

    def display(self, env_id: str) -> Path:
        return self._holder(env_id).display(env_id)

    def _holder(self, env_id: str) -> Driver:
        """The driver that has ``env_id``: remembered, else the first whose host state has it."""
        driver = self._owner.get(env_id)
        if driver is not None:
            return driver
        for candidate in self.drivers:  # a gateway of its own has created nothing itself
            try:
                candidate.display(env_id)
            except NotFoundError:
                continue
            self._owner[env_id] = candidate
            return candidate
        raise NotFoundError("environment", env_id)

    async def exec(
        self, env_id: str, argv: list[str], *, timeout: float = 60.0, limit: int | None = None
    ) -> Any:
        """Run a command in ``env_id`` as its user, on a driver that can (the OCI ones).

        Raises:
            CapabilityError: the environment's driver cannot run commands.
        """
        driver = self._holder(env_id)
        run = getattr(driver, "exec", None)
        if run is None:
            raise CapabilityError(f"the {driver.name} runtime cannot run commands in environments")
        return await run(env_id, argv, timeout=timeout, limit=limit)

    def endpoint(self, env_id: str, protocol: str) -> DisplayTarget:
        """The socket of ``protocol`` (``vnc``, ``spice``, ``rdp``) if the owning driver serves it.

        Raises:
            NotFoundError: unknown environment, or no such protocol there.
        """
        return endpoint(self._holder(env_id), env_id, protocol)

    async def list_ids(self) -> list[str]:
        """Every environment any driver has on the host (and who has it, remembered)."""
        found: set[str] = set()
        for driver in self.drivers:
            ids = await driver.list_ids()
            for env_id in ids:
                self._owner.setdefault(env_id, driver)
            found.update(ids)
        return sorted(found)

    async def aclose(self) -> None:
        await asyncio.gather(*(d.aclose() for d in self.drivers))

    async def _of(self, env_id: str) -> Driver:
        driver = self._owner.get(env_id)
        if driver is None:
            await self.list_ids()
            driver = self._owner.get(env_id)
        if driver is None:
            raise NotFoundError("environment", env_id)
        return driver


def _accepted(driver: Driver, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword options ``driver.create`` takes (``owner`` is OCI-only, for volumes)."""
    params = inspect.signature(driver.create).parameters
    return {k: v for k, v in options.items() if k in params and v is not None}
