"""Lifetime (TTL) and idle timeouts, checked on every tick of the engine's clock.

TTL counts from when an environment first ran (``started``) and ends it with
``terminate``; a queued environment does not age. Idle counts from the latest
user activity (the gateway calls :meth:`Engine.activity`) and applies to a
running environment: ``on_idle`` says suspend or terminate. Before either
action a ``warning`` event announces it ("ttl: terminating in 60s") once per
deadline; when a tick finds a deadline already passed, the warning is still
stored first and the action follows at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from genos.errors import GenOSError
from genos.orchestrator.lifecycle import Lifecycle
from genos.orchestrator.records import Clocks, EventType
from genos.orchestrator.states import State
from genos.spec import Lifetime

Act = Callable[[str, str, str], Awaitable[object]]
"""Performs ``action`` (``suspend``/``terminate``) on an environment with a reason."""


@dataclass(frozen=True)
class Deadline:
    """One timed action on one environment."""

    kind: str  # "ttl" or "idle"
    action: str  # "terminate" or "suspend"
    at: datetime
    reason: str


class Timers:
    """Activity times and the warnings already given."""

    def __init__(self, life: Lifecycle, warning_lead: float, persist_every: float) -> None:
        """Track deadlines for ``life``'s environments.

        Args:
            life: the engine's lifecycle.
            warning_lead: seconds between the warning and the action.
            persist_every: write activity to the registry at most this often.
        """
        self._life = life
        self._lead = timedelta(seconds=warning_lead)
        self._persist_every = timedelta(seconds=persist_every)
        self._activity: dict[str, datetime] = {}
        self._stored: dict[str, datetime] = {}
        self._lifetimes: dict[str, Lifetime] = {}
        self._warned: set[tuple[str, str, datetime]] = set()

    async def activity(self, env_id: str, now: datetime) -> None:
        """Note user activity; store it when the stored time is older than ``persist_every``."""
        self._activity[env_id] = now
        stored = self._stored.get(env_id)
        if stored is None or now - stored >= self._persist_every:
            await self._life.registry.touch(env_id, now)
            self._stored[env_id] = now

    async def tick(self, now: datetime, act: Act) -> None:
        """Warn about and carry out every deadline due at ``now``.

        Args:
            now: the clock's time.
            act: performs a suspend or terminate.
        """
        wanted = [State.RUNNING, State.SUSPENDED]
        registry = self._life.registry
        # Only the clock columns of every environment; a spec's lifetime is read
        # once per environment (a tick must not re-read and re-parse every spec).
        envs = await registry.clocks(wanted, self._life.scope)
        missing = [env.id for env in envs if env.id not in self._lifetimes]
        if missing:
            self._lifetimes.update(await registry.lifetimes(missing))
        for env in envs:
            for deadline in self.deadlines(env):
                if await self._check(env, deadline, now, act):
                    break
        live = {env.id for env in envs}
        self._forget(lambda env_id: env_id not in live)

    def deadlines(self, env: Clocks) -> list[Deadline]:
        """The timed actions ahead of ``env``, soonest first."""
        found: list[Deadline] = []
        lifetime = self._lifetimes.get(env.id)
        if lifetime is None or env.pooled:  # gone meanwhile, or nobody's yet: nothing to time
            return found
        if env.started is not None:
            at = env.started + timedelta(seconds=lifetime.ttl_seconds)
            found.append(Deadline("ttl", "terminate", at, f"ttl: {lifetime.ttl_seconds}s reached"))
        idle = lifetime.idle_timeout_seconds
        if env.state is State.RUNNING and idle is not None:
            times = [t for t in (env.last_activity, env.started, self._activity.get(env.id)) if t]
            if times:
                at = max(times) + timedelta(seconds=idle)
                reason = f"idle: no activity for {idle}s"
                found.append(Deadline("idle", lifetime.on_idle, at, reason))
        return sorted(found, key=lambda d: d.at)

    async def _check(self, env: Clocks, deadline: Deadline, now: datetime, act: Act) -> bool:
        if now < deadline.at - self._lead:
            return False
        key = (env.id, deadline.kind, deadline.at)
        try:
            if key not in self._warned:
                await self._warn(env, deadline, now)
                self._warned.add(key)
            if now < deadline.at:
                return False
            await act(env.id, deadline.action, deadline.reason)
        except GenOSError as exc:  # e.g. terminated by its owner meanwhile
            self._life.logger(env.id).info("%s %s skipped: %s", deadline.kind, deadline.action, exc)
        return True

    async def _warn(self, env: Clocks, deadline: Deadline, now: datetime) -> None:
        left = max(0, round((deadline.at - now).total_seconds()))
        verb = "terminating" if deadline.action == "terminate" else "suspending"
        data = {"action": deadline.action, "at": deadline.at.isoformat(), "in_seconds": left}
        message = f"{deadline.kind}: {verb} in {left}s"
        await self._life.emit(env.id, EventType.WARNING, message, data)

    def _forget(self, gone: Callable[[str], bool]) -> None:
        self._warned = {key for key in self._warned if not gone(key[0])}
        for table in (self._activity, self._stored, self._lifetimes):
            for env_id in [e for e in table if gone(e)]:
                del table[env_id]
