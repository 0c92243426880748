"""The runtime driver contract every isolation tier implements.

A driver gets a spec and an environment id and answers with handles; it is the
only code that touches runc/crun/runsc or QEMU. Every driver passes
``genos.testing.check_driver``. Verbs are async (the orchestrator is asyncio);
``destroy`` is idempotent and releases every host resource even when the
graceful part fails.

States a driver reports (the orchestrator's lifecycle is richer)::

    create -> CREATED --start--> RUNNING <--suspend/resume--> SUSPENDED
    any --destroy--> (gone; inspect raises NotFoundError)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from genos.errors import NotFoundError
from genos.spec import EnvironmentSpec


class EnvState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    SUSPENDED = "suspended"
    STOPPED = "stopped"  # its processes exited on their own


@dataclass(frozen=True)
class Usage:
    """Resource use read from the environment's cgroup."""

    cpu_seconds: float
    memory_bytes: int
    pids: int


@dataclass(frozen=True)
class Inspection:
    env_id: str
    state: EnvState
    pid: int | None
    usage: Usage | None
    runtime: str  # e.g. "runc", "crun", "runsc", "qemu"


@runtime_checkable
class Driver(Protocol):
    """What the orchestrator needs from a runtime."""

    name: str

    async def create(self, env_id: str, spec: EnvironmentSpec) -> None:
        """Prepare everything (image, root, network, cgroup) without starting the session.

        Raises:
            StateError: ``env_id`` already exists.
            CapabilityError: this host cannot run the spec's tier or runtime.
            ExternalError: a host tool failed; nothing is left behind.
        """
        ...

    async def start(self, env_id: str, *, timeout: float = 30.0) -> None:
        """Start the session and return once the display answers (RFB banner)."""
        ...

    async def suspend(self, env_id: str, *, to_disk: bool = False) -> None:
        """Freeze every process (memory stays); ``to_disk`` needs CRIU or QEMU migration."""
        ...

    async def resume(self, env_id: str) -> None:
        """Thaw a suspended environment."""
        ...

    async def destroy(self, env_id: str) -> None:
        """Stop and remove everything the environment had on the host. Idempotent."""
        ...

    async def inspect(self, env_id: str) -> Inspection:
        """Current state and resource usage.

        Raises:
            NotFoundError: no such environment on this host.
        """
        ...

    def usage(self, env_id: str) -> Usage | None:
        """Resource use from the environment's cgroup, read without running anything.

        Cheap enough to call for every environment every few seconds (the
        memory-pressure monitor does); memory is the working set.

        Returns:
            The usage, or None when the environment has no cgroup (not running here).
        """
        ...

    def display(self, env_id: str) -> Path:
        """Path of the environment's display socket (RFB over a unix socket)."""
        ...

    async def list_ids(self) -> list[str]:
        """Ids of every environment this driver has on the host (for reconcile)."""
        ...

    async def aclose(self) -> None:
        """Release the driver's own resources (not the environments')."""
        ...


@runtime_checkable
class RemoteDisplay(Protocol):
    """A display on another host, opened through that host's relay (the cluster's driver)."""

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect; the streams carry the display's own protocol.

        Raises:
            OSError: the relay cannot be reached or refused.
        """
        ...


DisplayTarget = Path | RemoteDisplay


def endpoint(driver: Driver, env_id: str, protocol: str) -> DisplayTarget:
    """Where display ``protocol`` (``vnc``, ``spice``, ``rdp``) of ``env_id`` is reached:
    VNC is every local driver's :meth:`Driver.display`; the others come from the
    driver's own ``endpoint`` where it has one; a driver of environments on other
    hosts (the cluster's) gives a :class:`RemoteDisplay` through its ``remote``.

    Raises:
        NotFoundError: unknown environment, or the driver does not serve ``protocol``.
    """
    remote = getattr(driver, "remote", None)
    if remote is not None:
        found: DisplayTarget = remote(env_id, protocol)
        return found
    if protocol == "vnc":
        return driver.display(env_id)
    served = getattr(driver, "endpoint", None)
    if served is None:
        raise NotFoundError(f"{protocol} display of environment", env_id)
    path: Path = served(env_id, protocol)
    return path
