"""Draining a node: keep new work off it, then empty it (a singleton of the leader).

A drain is a cordon whose record carries ``drain``: ``{"containers": "wait" |
"move" | "stop", "deadline": epoch seconds or null, "started", "by"}``
(:meth:`~genos.cluster.store.ClusterStore.cordon`). While this replica leads,
every :data:`DRAIN_EVERY` seconds the :class:`Drainer` looks at what the
registry says each draining node holds:

- ``provisioning``: left to settle; it is handled on a later round.
- containers (tiers ``container`` and ``gvisor``), as the drain says:
  ``wait`` leaves them until their TTL or removal; ``stop`` ends them
  (``terminated``, the reason names the drain); ``move`` makes each anew
  with the same id, spec, owner, network policy and name links on the node
  placement chooses (never a cordoned or draining one). A volume moves with
  it, carried node to node through this control plane while it runs on
  neither (an encrypted one as ciphertext with its root-only key); if that
  fails it starts again where it was and is not tried again in this drain
  (the deadline still stops it). What lived only on the drained node
  does not move: an ephemeral home starts empty there, and a suspended
  container arrives stopped (``resume`` starts it).
- VMs (``vm``, ``microvm``): under ``move`` a running one is migrated live
  (:mod:`genos.cluster.migration`: the guest goes on where it was, after a
  pause of a fraction of a second; a failed migration leaves it running on
  the drained node and is not tried again in this drain); a suspended one
  moves as files (:func:`~genos.cluster.migration.carry_saved`: saved to
  disk if it was paused in memory, its overlay and saved state carried
  through this control plane) and is suspended on the target, where its
  resume restores it; a failed carry leaves it suspended where it was. Under
  ``wait`` and ``stop`` they are treated as containers are.
- Past the deadline, whatever is still there is stopped, the reason says so.

Each action is an event on the environment and a record in the audit log.
The node is **drained** when it holds nothing; it stays cordoned until
``uncordon``, which also ends a drain that has not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any, Literal

from genos.errors import GenOSError, InputError, StateError
from genos.orchestrator.records import Environment, EventType
from genos.orchestrator.states import HOLDING, State
from genos.spec import Tier

if TYPE_CHECKING:
    from genos.cluster.control import ControlPlane

log = logging.getLogger("genos.cluster.drain")
DRAIN_EVERY = 1.0
Containers = Literal["wait", "move", "stop"]
CONTAINER_MODES: tuple[str, ...] = ("wait", "move", "stop")
ACTOR = "drain"
MOVES = ("move", "migrate", "carry")


def plan_action(env: Environment, containers: str, past_deadline: bool) -> str:
    """What a drain does with ``env`` now: ``settle`` (provisioning), ``wait``, ``move``
    (a container), ``migrate`` (a running VM, live), ``carry`` (a suspended VM, as
    files) or ``stop``."""
    if env.state is State.PROVISIONING:
        return "settle"
    if past_deadline:
        return "stop"
    if containers != "move":
        return containers
    if env.spec.tier in (Tier.VM, Tier.MICROVM):
        return "migrate" if env.state is State.RUNNING else "carry"
    return "move"


def drain_record(containers: str, deadline_s: float | None, by: str) -> dict[str, Any]:
    """The ``drain`` part of a cordon record.

    Raises:
        InputError: an unknown containers mode or a deadline that is not positive.
    """
    if containers not in CONTAINER_MODES:
        raise InputError(f"containers must be one of {', '.join(CONTAINER_MODES)}")
    if deadline_s is not None and not 0 < deadline_s <= 7 * 86400:
        raise InputError("deadline must be between 1 second and 7 days")
    now = time.time()
    return {
        "containers": containers,
        "deadline": None if deadline_s is None else now + deadline_s,
        "started": now,
        "by": by,
    }


class Drainer:
    """Empties draining nodes while its control plane leads (see the module docstring)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.audit: Callable[..., Any] | None = None  # AuditLog.append, set by the server
        self._told: set[tuple[str, str]] = set()  # (env id, what) already said once
        self._failed: set[str] = set()  # moves that failed: not tried again (until the deadline)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the drains now (one just started)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``; only the leader acts."""
        while not stop.is_set():
            if self.plane.is_leader:
                try:
                    await self.round()
                except GenOSError as exc:
                    log.warning("drain round: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), DRAIN_EVERY)
            self._wake.clear()

    async def round(self) -> dict[str, int]:
        """One look at every draining node; how many environments each still holds."""
        left: dict[str, int] = {}
        for node, record in (await self.plane.store.cordons()).items():
            drain = record.get("drain")
            if drain:
                left[node] = await self._drain(node, drain)
        return left

    async def _drain(self, node: str, drain: dict[str, Any]) -> int:
        engine = self.plane.engine
        deadline = drain.get("deadline")
        past = deadline is not None and time.time() >= float(deadline)
        held = await engine.registry.list(states=HOLDING, host=node)
        for env in held:
            action = plan_action(env, str(drain.get("containers", "wait")), past)
            if action in MOVES and env.id in self._failed:
                continue  # it runs where it was; once is enough (the deadline still applies)
            try:
                if action == "stop":
                    await self._stop(env, node, past)
                elif action == "move":
                    await self._move(env, node)
                elif action == "migrate":
                    await self._migrate(env, node)
                elif action == "carry":
                    await self._carry(env, node)
            except GenOSError as exc:
                if action in MOVES:
                    self._failed.add(env.id)
                await self._tell(env, f"error:{exc}", EventType.WARNING,
                                 f"drain of {node}: {action} failed: {exc}")  # fmt: skip
        return len(held)

    async def _stop(self, env: Environment, node: str, past: bool) -> None:
        why = "its deadline passed" if past else "containers: stop"
        reason = f"node {node} drained ({why})"
        with contextlib.suppress(StateError):  # ended meanwhile
            await self.plane.engine.terminate(env.id, actor=ACTOR, reason=reason)
            self._record("drain_stop", env, node=node, reason=reason)

    async def _move(self, env: Environment, node: str) -> None:
        plane = self.plane
        engine = plane.engine
        target = await self._target(env, node)
        if target is None:
            return
        running = env.state is State.RUNNING
        await engine.note(env.id, EventType.PROGRESS, f"drain of {node}: moving to {target}",
                          {"from_host": node, "to_host": target})  # fmt: skip
        home = (
            "its volume moved with it"
            if env.spec.persistence.volume
            else "its home started empty there (nothing of an ephemeral home moves)"
        )
        note = f"moved from {node} to {target} (drain); {home}"
        if not running:
            note += "; it is stopped there (resume starts it)"
        await engine.relocate(env.id, node, target, lambda: plane.driver.relocate(
            env.id, target, env.spec, env.owner, running=running), note)  # fmt: skip
        self._record("drain_move", env, node=node, to=target)
        log.warning("drain of %s: %s moved to %s", node, env.id, target)

    async def _migrate(self, env: Environment, node: str) -> None:
        plane = self.plane
        engine = plane.engine
        target = await self._target(env, node)
        if target is None:
            return
        await engine.note(env.id, EventType.PROGRESS,
                          f"drain of {node}: migrating live to {target}",
                          {"from_host": node, "to_host": target})  # fmt: skip
        cost: dict[str, int] = {}

        async def move() -> None:
            _source, moved = await plane.driver.migrate(env.id, target, env.spec, env.owner)
            cost.update(total_ms=moved.total_ms, downtime_ms=moved.downtime_ms)

        note = f"migrated live from {node} to {target} (drain)"
        await engine.relocate(env.id, node, target, move, note)
        self._record("drain_migrate", env, node=node, to=target, **cost)
        log.warning("drain of %s: %s migrated live to %s %s", node, env.id, target, cost)

    async def _carry(self, env: Environment, node: str) -> None:
        plane = self.plane
        target = await self._target(env, node)
        if target is None:
            return
        await plane.engine.note(env.id, EventType.PROGRESS,
                                f"drain of {node}: moving it suspended to {target} (as files)",
                                {"from_host": node, "to_host": target})  # fmt: skip
        carried: dict[str, int] = {}

        async def move() -> None:
            _source, size = await plane.driver.carry_saved(env.id, target, env.spec, env.owner)
            carried["bytes"] = size

        note = f"moved suspended from {node} to {target} (drain); resume restores it there"
        await plane.engine.relocate(env.id, node, target, move, note)
        self._record("drain_carry", env, node=node, to=target, **carried)
        log.warning("drain of %s: %s moved suspended to %s %s", node, env.id, target, carried)

    async def _target(self, env: Environment, node: str) -> str | None:
        """Where placement puts ``env`` now, never ``node`` (None: nowhere yet, said once)."""
        plan, _ = await self.plane.placer.plan(self.plane.engine.registry)
        target = plan.place(env.cpus, env.memory_mb, frozenset({node}))
        if target is None:
            await self._tell(env, "no-room", EventType.WARNING,
                             f"drain of {node}: no other node has room for it yet")  # fmt: skip
        return target

    async def _tell(self, env: Environment, what: str, kind: EventType, message: str) -> None:
        if (env.id, what) in self._told:
            return
        self._told.add((env.id, what))
        await self.plane.engine.note(env.id, kind, message, {})
        self._record("drain_" + what.split(":", 1)[0], env, message=message)

    def _record(self, action: str, env: Environment, **fields: Any) -> None:
        if self.audit is not None:
            self.audit(action=action, user="cluster", env_id=env.id, owner=env.owner, **fields)


async def _failed_move(registry: Any, env_id: str, node: str, since: float) -> str | None:
    """The message of a move of ``env_id`` off ``node`` that failed in the drain that
    started at ``since`` (epoch seconds), or None."""
    prefix = f"drain of {node}: "
    for event in reversed(await registry.events(env_id)):
        at = event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC)
        if at.timestamp() < since:
            return None
        said = str(event.message)
        if event.type is EventType.WARNING and said.startswith(prefix) and " failed: " in said:
            return said.removeprefix(prefix)
    return None


async def start_drain(
    plane: ControlPlane,
    node: str,
    containers: str,
    deadline_s: float | None,
    *,
    by: str,
    reason: str = "",
) -> None:
    """Cordon ``node`` with a drain (the leader empties it).

    Raises:
        InputError: a bad containers mode or deadline.
        NotFoundError: no live node of that name.
        ConflictError: it is the last node that takes new work.
    """
    from genos.cluster.placement import MAX_SKEW  # noqa: PLC0415
    from genos.errors import ConflictError, NotFoundError  # noqa: PLC0415

    record = drain_record(containers, deadline_s, by)
    nodes = plane.driver.nodes
    if node not in nodes:
        raise NotFoundError("node", node)
    cordons = await plane.store.cordons()
    now = time.time()
    takers = [n for n, info in nodes.items()
              if n != node and n not in cordons and abs(info.clock - now) <= MAX_SKEW]  # fmt: skip
    if not takers:
        raise ConflictError(f"{node} is the last node that takes new work: "
                            "draining it would leave nowhere to go")  # fmt: skip
    await plane.store.cordon(node, by, reason or "drain", drain=record)
    plane.cordoned.add(node)
    plane.drainer.wake()
    await plane.kick()  # the leader, if it is another replica, looks at once


async def drain_status(plane: ControlPlane, node: str) -> dict[str, Any]:
    """A node's drain as the API shows it: its record and what it still holds.

    Raises:
        NotFoundError: the node is not draining.
    """
    from genos.errors import NotFoundError  # noqa: PLC0415

    record = (await plane.store.cordons()).get(node)
    if not record or not record.get("drain"):
        raise NotFoundError("drain", node)
    drain = record["drain"]
    deadline = drain.get("deadline")
    past = deadline is not None and time.time() >= float(deadline)
    registry = plane.engine.registry
    held = await registry.list(states=HOLDING, host=node)
    containers = str(drain.get("containers", "wait"))
    remaining = []
    for e in held:
        item = {"id": e.id, "state": e.state.value, "tier": e.spec.tier.value,
                "action": plan_action(e, containers, past)}  # fmt: skip
        if item["action"] in MOVES:
            why = await _failed_move(registry, e.id, node, float(drain.get("started") or 0))
            if why is not None:  # not tried again in this drain: it stays
                item.update(action="stays", why=why)
        remaining.append(item)
    return {
        "node": node,
        "state": "drained" if not held else "draining",
        "containers": containers,
        "deadline": deadline,
        "started": drain.get("started"),
        "by": drain.get("by"),
        "remaining": remaining,
    }
