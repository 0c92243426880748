"""The engine's moving parts shared by its verbs, provisioning, timers and reconcile.

:class:`Lifecycle` records a transition (registry first, then wake readers and
log), appends events, fails an environment (record ``failed``, then release
what the driver holds), and hands out one lock per environment so a verb,
a timer and reconcile never act on the same environment at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from genos import logs
from genos.errors import ExternalError, GenOSError
from genos.orchestrator.events import EventBus
from genos.orchestrator.provision import describe
from genos.orchestrator.queries import Move, Note
from genos.orchestrator.records import Environment, Event, EventType
from genos.orchestrator.registry import Registry
from genos.orchestrator.states import FINAL, State
from genos.runtime.driver import Driver
from genos.spec import EnvironmentSpec

log = logging.getLogger("genos.orchestrator")
SYSTEM = "system"
KEPT_SPECS = 4096  # specs kept between request and provisioning
T = TypeVar("T")


class Lifecycle:
    """Registry + driver + event bus, with the invariants that bind them."""

    def __init__(self, registry: Registry, driver: Driver, bus: EventBus, host_name: str) -> None:
        self.registry = registry
        self.driver = driver
        self.bus = bus
        self.host_name = host_name
        # A cluster's control plane answers for the environments of every host.
        self.every_host = False
        self.tasks: dict[str, asyncio.Task[None]] = {}  # provisioning in flight here
        # Told the id of each environment this process records as ended (failed,
        # lost or terminated), to let go of what they keep for it.
        self.on_end: list[Callable[[str], None]] = []
        # Environments that ended since the last sweep, and in the one before it
        # (see forget_late).
        self._ended_now: set[str] = set()
        self._ended_before: set[str] = set()
        # Specs of environments requested here, parsed already: provisioning
        # takes its own from here instead of parsing the stored JSON again.
        self._specs: collections.OrderedDict[str, EnvironmentSpec] = collections.OrderedDict()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def mine(self, host: str | None) -> bool:
        """Whether an environment placed on ``host`` is this engine's to look after."""
        return self.every_host or host == self.host_name

    @property
    def scope(self) -> str | None:
        """The host to filter the registry by; None for every host (a cluster)."""
        return None if self.every_host else self.host_name

    def keep_spec(self, env_id: str, spec: EnvironmentSpec) -> None:
        """Remember a just-requested environment's spec (the newest few thousand)."""
        self._specs[env_id] = spec
        if len(self._specs) > KEPT_SPECS:
            self._specs.popitem(last=False)

    def spec_of(self, env: Environment) -> EnvironmentSpec:
        """``env``'s spec: the one kept at request time (once), else parsed from the registry."""
        kept = self._specs.pop(env.id, None)
        return kept if kept is not None else env.spec

    def logger(self, env_id: str) -> logging.Logger:
        """The environment's own logger (``genos.orchestrator.<env_id>``)."""
        return log.getChild(env_id)

    def lock(self, env_id: str) -> asyncio.Lock:
        """The lock every action on ``env_id`` holds."""
        lock = self._locks.get(env_id)
        if lock is None:
            lock = self._locks[env_id] = asyncio.Lock()
        return lock

    async def move(
        self,
        env_id: str,
        old: State,
        new: State,
        *,
        actor: str,
        reason: str,
        host: str | None = None,
        before: Sequence[Note] = (),
        after: Sequence[Note] = (),
    ) -> Environment:
        """Record ``old -> new`` in the registry, then tell readers and the log.
        ``before`` and ``after``: events stored with it (one commit), around its own.

        Raises:
            StateError: not allowed, or the environment is no longer in ``old``.
        """
        env, _ = await self.registry.transition(
            env_id, old, new, actor=actor, reason=reason, host=host, around=(before, after)
        )
        self._tell(Move(env_id, old, new, actor, reason, host, before, after))
        return env

    async def move_each(self, moves: Sequence[Move]) -> list[Environment | GenOSError]:
        """Record several moves in one commit (see :meth:`move`); a refused one comes back
        as its error (``StateError``: it moved meanwhile; ``NotFoundError``)."""
        if not moves:
            return []
        done = await self.registry.transition_each(moves)
        for move, result in zip(moves, done, strict=True):
            if not isinstance(result, GenOSError):
                self._tell(move)
        return [r if isinstance(r, GenOSError) else r[0] for r in done]

    def _tell(self, move: Move) -> None:
        """Log a recorded move with the events stored around it, and wake its readers."""
        log = self.logger(move.env_id)
        for kind, message, _data in move.before:
            log.info("%s: %s", kind.value, message)
        log.info("%s -> %s by %s: %s", move.old.value, move.new.value, move.actor, move.reason)
        for kind, message, _data in move.after:
            log.info("%s: %s", kind.value, message)
        self.bus.publish(move.env_id)
        if move.new in FINAL:
            self.ended(move.env_id)

    def ended(self, env_id: str) -> None:
        """Forget what this process kept of an environment that ended (its loggers, again
        after its destroy, which may log; its spec, when it never reached provisioning
        here) and tell the :attr:`on_end` listeners."""
        logs.forget(env_id)
        self._specs.pop(env_id, None)  # it ended before provisioning took it (or elsewhere)
        self._ended_now.add(env_id)
        for listener in self.on_end:
            listener(env_id)

    def forget_late(self) -> None:
        """Forget again the loggers of the environments that ended since the sweep before
        last: a line logged for one after its end (a viewer leaving, a late destroy step)
        made a fresh logger. Called every maintenance period, so one made within a period
        or two of the end goes too."""
        for env_id in self._ended_before | self._ended_now:
            logs.forget(env_id)
        self._ended_before, self._ended_now = self._ended_now, set()

    async def emit(
        self, env_id: str, kind: EventType, message: str, data: dict[str, Any] | None = None
    ) -> Event:
        """Store an event and wake its readers."""
        event = await self.registry.add_event(env_id, kind, message, data)
        level = logging.WARNING if kind in (EventType.WARNING, EventType.ERROR) else logging.INFO
        self.logger(env_id).log(level, "%s: %s", kind.value, message)
        self.bus.publish(env_id)
        return event

    async def fail(self, env_id: str, old: State, reason: str, actor: str = SYSTEM) -> Environment:
        """Record ``failed`` with ``reason``, then release whatever the driver holds.

        Raises:
            StateError: the environment is no longer in ``old``.
        """
        env = await self.move(env_id, old, State.FAILED, actor=actor, reason=reason)
        await self.destroy(env_id)
        return env

    async def destroy(self, env_id: str) -> bool:
        """Remove the environment from the host; on failure leave it to reconcile.

        Returns:
            True if the driver destroyed it (or it was not there).
        """
        try:
            await self.driver.destroy(env_id)
        except Exception as exc:  # noqa: BLE001 - reconcile removes the orphan later
            message = f"destroy failed, reconcile will retry: {describe(exc)}"
            await self.emit(env_id, EventType.ERROR, message)
            return False
        finally:
            logs.forget(env_id)  # the driver's and this module's loggers of it
        return True

    async def call(self, what: str, step: Awaitable[T]) -> T:
        """Await a driver call, translating foreign errors to :class:`ExternalError`.

        Raises:
            GenOSError: the driver's own error, or ExternalError for anything else.
        """
        try:
            return await step
        except GenOSError:
            raise
        except Exception as exc:
            message = f"driver {self.driver.name}: {what} failed: {describe(exc)}"
            raise ExternalError(message, str(exc)) from exc
