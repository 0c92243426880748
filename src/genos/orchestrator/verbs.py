"""The verbs on an existing environment: suspend, resume, terminate, cancel.

A mixin of :class:`~genos.orchestrator.engine.Engine` (the engine's public
API stays one class); each verb records its transition before it calls the
driver, and rolls the state back when the driver fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from genos.errors import GenOSError
from genos.orchestrator import provision, states
from genos.orchestrator.lifecycle import SYSTEM, log
from genos.orchestrator.records import Environment
from genos.orchestrator.states import HOLDING, WAITING, State
from genos.spec import Tier

if TYPE_CHECKING:
    from genos.orchestrator.clock import Clock
    from genos.orchestrator.lifecycle import Lifecycle
    from genos.orchestrator.registry import Registry
    from genos.orchestrator.timers import Timers
    from genos.runtime.driver import Driver


class Verbs:
    """What :class:`Engine` does to one environment that exists already."""

    registry: Registry
    driver: Driver
    _life: Lifecycle
    _timers: Timers
    clock: Clock

    # The engine's: serve the queue after a verb freed room.
    _admit: Callable[[], Awaitable[None]]

    async def suspend(
        self,
        env_id: str,
        *,
        actor: str = SYSTEM,
        reason: str = "suspend requested",
        to_disk: bool = False,
    ) -> Environment:
        """Freeze a running environment (it keeps its reservation).

        Args:
            env_id: the environment.
            actor: who asks (a user id, ``system``).
            reason: why, stored with the transition.
            to_disk: save it to disk and end its processes (VMs; frees its memory).

        Returns:
            The environment, ``suspended``.

        Raises:
            StateError: it is not running.
            ExternalError: the driver failed; the environment is back to ``running``.
        """
        return await self._pause(
            env_id, State.RUNNING, State.SUSPENDED, actor, reason, to_disk=to_disk
        )

    async def resume(
        self, env_id: str, *, actor: str = SYSTEM, reason: str = "resume requested"
    ) -> Environment:
        """Thaw a suspended environment.

        Args:
            env_id: the environment.
            actor: who asks.
            reason: why, stored with the transition.

        Returns:
            The environment, ``running``.

        Raises:
            StateError: it is not suspended.
            ExternalError: the driver failed; the environment is back to ``suspended``.
        """
        return await self._pause(env_id, State.SUSPENDED, State.RUNNING, actor, reason)

    async def _pause(
        self, env_id: str, old: State, new: State, actor: str, reason: str, *, to_disk: bool = False
    ) -> Environment:
        verb = "suspend" if new is State.SUSPENDED else "resume"
        states.require((await self.registry.get(env_id)).state, [old], verb)
        async with self._life.lock(env_id):
            states.require((await self.registry.get(env_id)).state, [old], verb)
            env = await self._life.move(env_id, old, new, actor=actor, reason=reason)
            step = (
                self.driver.suspend(env_id, to_disk=to_disk)
                if verb == "suspend"
                else self.driver.resume(env_id)
            )
            try:
                await self._life.call(verb, step)
            except GenOSError as exc:
                back = f"{verb} failed: {provision.describe(exc)}"
                await self._life.move(env_id, new, old, actor=SYSTEM, reason=back)
                raise
        if new is State.RUNNING:
            await self._timers.activity(env_id, self.clock.now())
        return env

    async def terminate(
        self, env_id: str, *, actor: str = SYSTEM, reason: str = "terminate requested"
    ) -> Environment:
        """End an environment in any non-final state and release everything it holds.

        Provisioning in flight is cancelled first. If the driver cannot destroy
        it now, an ``error`` event says so and reconcile removes it later.

        Args:
            env_id: the environment.
            actor: who asks.
            reason: why, stored with the transition.

        Returns:
            The environment, ``terminated``.

        Raises:
            StateError: it is already terminated or failed.
        """
        states.check((await self.registry.get(env_id)).state, State.TERMINATED, "terminate")
        task = self._life.tasks.get(env_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with self._life.lock(env_id):
            old = (await self.registry.get(env_id)).state
            states.check(old, State.TERMINATED, "terminate")
            env = await self._life.move(env_id, old, State.TERMINATED, actor=actor, reason=reason)
            if old in HOLDING:
                await self._life.destroy(env_id)
        await self._admit()
        return env

    async def cancel(
        self, env_id: str, *, actor: str = SYSTEM, reason: str = "cancelled"
    ) -> Environment:
        """Withdraw a request that is still waiting (requested or queued).

        Returns:
            The environment, ``terminated``.

        Raises:
            StateError: it is no longer waiting (use :meth:`terminate`).
        """
        async with self._life.lock(env_id):
            old = (await self.registry.get(env_id)).state
            states.require(old, WAITING, "cancel")
            env = await self._life.move(env_id, old, State.TERMINATED, actor=actor, reason=reason)
        await self._admit()
        return env

    async def _relieve(self, env: Environment, reason: str) -> str:
        """Free ``env``'s memory: a VM is suspended to disk, anything else is stopped."""
        if env.spec.tier in (Tier.MICROVM, Tier.VM):
            try:
                await self.suspend(env.id, reason=reason, to_disk=True)
            except GenOSError as exc:
                log.warning("%s: suspend to disk failed (%s); stopping it", env.id, exc)
            else:
                return "suspended to disk"
        await self.terminate(env.id, reason=reason)
        return "stopped"

    async def _timed(self, env_id: str, action: str, reason: str) -> Environment:
        if action == "suspend":
            return await self.suspend(env_id, reason=reason)
        return await self.terminate(env_id, reason=reason)
