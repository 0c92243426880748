"""The package's FakeDriver with the hooks orchestrator tests need: fail, block, observe.

:class:`HookedDriver` delegates every verb to a real
:class:`genos.runtime.fake.FakeDriver` (its state machine, errors and display
sockets) and adds, per verb: an injected failure, a gate the call waits on,
an async observer that can read the registry at call time, and ``progress``
reports from ``create`` sent from a thread, as an image build would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from genos.errors import ExternalError
from genos.runtime.driver import EnvState, Inspection, Usage
from genos.runtime.fake import FakeDriver, FakeEnv
from genos.spec import EnvironmentSpec, Lifetime, Resources

Observer = Callable[[str, str], Awaitable[None]]
Progress = Callable[[str, dict[str, Any] | None], None]


class HookedDriver:
    """A FakeDriver behind per-verb hooks; every call is logged in ``calls``."""

    name = "fake"

    def __init__(self, fake: FakeDriver) -> None:
        self.fake = fake
        self.calls: list[tuple[str, str]] = []
        self.failures: dict[str, BaseException] = {}  # verb -> raised by that verb
        self.gates: dict[str, asyncio.Event] = {}  # verb -> the call waits for it
        self.entered: dict[str, asyncio.Event] = {}  # verb -> set once observed, before gates
        self.observer: Observer | None = None  # awaited at the start of each verb
        self.progress_messages: list[str] = ["image: layer 1/1 built"]

    @property
    def envs(self) -> dict[str, EnvState]:
        """What the host has: environment id -> driver state."""
        return {env_id: env.state for env_id, env in self.fake.envs.items()}

    async def put(self, env_id: str, state: EnvState, spec: EnvironmentSpec | None = None) -> None:
        """Make the host hold ``env_id`` in ``state`` without going through the hooks."""
        await self.fake.create(env_id, spec or make_spec())
        if state in (EnvState.RUNNING, EnvState.SUSPENDED):
            await self.fake.start(env_id)
        if state is EnvState.SUSPENDED:
            await self.fake.suspend(env_id)
        if state is EnvState.STOPPED:
            self.fake.envs[env_id] = FakeEnv(self.fake.envs[env_id].spec, EnvState.STOPPED)

    async def called(self, verb: str, timeout: float = 10.0) -> None:
        """Return once ``verb`` has been called (at least once), or fail after ``timeout``."""
        await asyncio.wait_for(self.entered.setdefault(verb, asyncio.Event()).wait(), timeout)

    async def _enter(self, verb: str, env_id: str) -> None:
        self.calls.append((verb, env_id))
        if self.observer is not None:
            await self.observer(verb, env_id)
        self.entered.setdefault(verb, asyncio.Event()).set()
        gate = self.gates.get(verb)
        if gate is not None:
            await gate.wait()
        failure = self.failures.get(verb)
        if failure is not None:
            raise failure

    async def create(
        self, env_id: str, spec: EnvironmentSpec, progress: Progress | None = None
    ) -> None:
        await self._enter("create", env_id)
        for message in self.progress_messages:
            if progress is not None:
                await asyncio.to_thread(progress, message, {"spec": spec.name})
        await self.fake.create(env_id, spec)

    async def start(self, env_id: str, *, timeout: float = 30.0) -> None:
        await self._enter("start", env_id)
        await self.fake.start(env_id, timeout=timeout)

    async def suspend(self, env_id: str, *, to_disk: bool = False) -> None:
        await self._enter("suspend", env_id)
        await self.fake.suspend(env_id, to_disk=to_disk)

    async def resume(self, env_id: str) -> None:
        await self._enter("resume", env_id)
        await self.fake.resume(env_id)

    async def destroy(self, env_id: str) -> None:
        await self._enter("destroy", env_id)
        await self.fake.destroy(env_id)

    async def inspect(self, env_id: str) -> Inspection:
        await self._enter("inspect", env_id)
        return await self.fake.inspect(env_id)

    def usage(self, env_id: str) -> Usage | None:
        return self.fake.usage(env_id)

    def display(self, env_id: str) -> Path:
        return self.fake.display(env_id)

    async def list_ids(self) -> list[str]:
        await self._enter("list_ids", "")
        return await self.fake.list_ids()

    async def aclose(self) -> None:
        await self.fake.aclose()


def broken(message: str = "runc exploded") -> ExternalError:
    """An error a driver would raise when a host tool fails."""
    return ExternalError(message, "exit status 1")


def make_spec(
    name: str = "desk",
    cpus: float = 1.0,
    memory_mb: int = 1024,
    lifetime: Lifetime | None = None,
) -> EnvironmentSpec:
    """A spec with the given name, resources and lifetime."""
    return EnvironmentSpec(
        name=name,
        resources=Resources(cpus=cpus, memory_mb=memory_mb),
        lifetime=lifetime or Lifetime(),
    )
