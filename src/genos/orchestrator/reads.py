"""Reading environments: one, a page, their events, waiting for a state; activity.

A mixin of :class:`~genos.orchestrator.engine.Engine` beside
:class:`~genos.orchestrator.verbs.Verbs` (the engine's public API stays one
class): these calls change no state, except :meth:`Reads.activity`, which
stores when a user last did something (it resets the idle timer).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncGenerator, Iterable
from typing import TYPE_CHECKING

from genos.errors import StateError, WaitTimeoutError
from genos.orchestrator.events import stream
from genos.orchestrator.records import Environment, Event
from genos.orchestrator.states import State

if TYPE_CHECKING:
    from genos.orchestrator.clock import Clock
    from genos.orchestrator.lifecycle import Lifecycle
    from genos.orchestrator.registry import Registry
    from genos.orchestrator.timers import Timers


class Reads:
    """What :class:`Engine` answers about environments."""

    registry: Registry
    clock: Clock
    _life: Lifecycle
    _timers: Timers
    _intervals: tuple[float, float, float]  # tick, reconcile, event poll (seconds)

    async def get(self, env_id: str) -> Environment:
        """One environment.

        Raises:
            NotFoundError: no such environment.
        """
        return await self.registry.get(env_id)

    async def wait(
        self, env_id: str, wanted: State | Iterable[State], timeout: float | None = None
    ) -> Environment:
        """Wait until the environment is in one of ``wanted`` (for synchronous clients).

        Args:
            env_id: the environment.
            wanted: the state or states to wait for.
            timeout: seconds of real time; None waits as long as it takes.

        Returns:
            The environment in a wanted state.

        Raises:
            StateError: it reached a final state that is not wanted.
            WaitTimeoutError: ``timeout`` passed first.
            NotFoundError: no such environment.
        """
        goal = {wanted} if isinstance(wanted, State) else set(wanted)
        try:
            async with asyncio.timeout(timeout):
                return await self._wait(env_id, goal)
        except TimeoutError as exc:
            names = " or ".join(sorted(s.value for s in goal))
            raise WaitTimeoutError(f"{env_id} did not become {names} in {timeout}s") from exc

    async def _wait(self, env_id: str, goal: set[State]) -> Environment:
        with self._life.bus.subscribe(env_id) as wake:
            while True:
                wake.clear()
                env = await self.registry.get(env_id)
                if env.state in goal:
                    return env
                if env.state.final:
                    raise StateError(env.state.value, sorted(s.value for s in goal), "wait")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._intervals[2])

    def events(
        self, env_id: str, after_seq: int = 0, *, follow: bool = True
    ) -> AsyncGenerator[Event, None]:
        """The environment's events: history after ``after_seq``, then live ones.

        Args:
            env_id: the environment.
            after_seq: the last seq the client has (``Last-Event-ID``), 0 for all.
            follow: keep streaming until the environment ends.

        Returns:
            An async generator of events in seq order; it ends after the final
            state's event. Close it (``aclose()``) when the client leaves early.
        """
        poll = self._intervals[2]
        return stream(self.registry, self._life.bus, env_id, after_seq, follow=follow, poll=poll)

    async def activity(self, env_id: str) -> None:
        """Tell the engine a user did something in the environment (resets idle).

        Raises:
            NotFoundError: no such environment (when the time is stored).
        """
        await self._timers.activity(env_id, self.clock.now())

    async def list(
        self,
        owner: str | None = None,
        states: Iterable[State] | None = None,
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> builtins.list[Environment]:
        """Environments, oldest first.

        Args:
            owner: only this user's; None for everybody's.
            states: only these states; None for all.
            limit: at most this many (a page).
            after: start after this environment id (the previous page's last).

        Returns:
            The environments (queued ones with their queue position).

        Raises:
            NotFoundError: ``after`` names no environment.
        """
        return await self.registry.list(owner, states, limit=limit, after=after)
