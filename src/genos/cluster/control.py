"""A control-plane replica of a cluster: leadership, node loss, and the queue's kicks.

Several ``genos serve`` replicas share one registry (PostgreSQL) and one
etcd. Each serves the API, the composer and the gateway; one, the leader,
also runs the singletons: admission (placement), timers, reconcile, pools,
and what happens when a node is lost. Leadership is an etcd key under the
leader's lease (TTL 5 s, renewed every 1.5 s); a follower watches it and
campaigns as soon as it goes, so a dead leader is replaced within about the
lease's TTL. A follower that takes a request stores it and *kicks* (bumps a
key the leader watches): the leader admits it at once.

A node is **lost** when its record disappears (its lease lapsed: it died or
was cut off) and is not back within :data:`LOST_GRACE`: the leader moves
each environment the registry places there to ``lost`` with the time and
why, removes its assignment (so the node destroys it if it ever comes back:
it fences first), and when the spec says ``lifetime.on_host_loss: replace``
makes a replacement from the same spec, for the same owner, linked both
ways (``replaces``/``replaced_by``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from genos.cluster.drain import Drainer
from genos.cluster.driver import ClusterDriver
from genos.cluster.placement import ClusterPlacer, Strategy
from genos.cluster.store import LEADER_TTL, ClusterStore
from genos.errors import ClusterUnavailableError, GenOSError
from genos.orchestrator.engine import Engine
from genos.orchestrator.records import Environment, EventType
from genos.orchestrator.states import HOLDING

log = logging.getLogger("genos.cluster.control")
LOST_GRACE = 2.0  # seconds a vanished node has to come back before its environments are lost
HEALTH_EVERY = 1.0  # seconds between checks that etcd answers (with its quorum)
HEALTH_TIMEOUT = 1.5
ACTOR = "cluster"


class ControlPlane:
    """Makes ``engine`` one replica of a cluster's control plane (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        store: ClusterStore,
        driver: ClusterDriver,
        replica: str,
        strategy: Strategy = "spread",
    ) -> None:
        self.engine, self.store, self.driver, self.replica = engine, store, driver, replica
        self.is_leader = False
        self.cordoned: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.healthy_at = time.monotonic()
        self.placer = ClusterPlacer(lambda: driver.nodes, lambda: self.cordoned, strategy)
        engine.use_placer(self.placer, every_host=True)
        self.drainer = Drainer(self)
        engine.lead(lambda: self.is_leader, self.kick)
        engine.precheck = self.available
        driver.node_lost.append(self._node_gone)
        driver.env_gone.append(engine.ended_elsewhere)  # whichever replica ended it

    async def start(self) -> None:
        """Watch the nodes and statuses, and campaign for leadership in the background."""
        await self.driver.open()
        self.cordoned = set(await self.store.cordons())
        self._tasks = [
            asyncio.create_task(self._campaign(), name="leadership"),
            asyncio.create_task(self._follow_kicks(), name="kicks"),
            asyncio.create_task(self._check_health(), name="health"),
            asyncio.create_task(self.drainer.run(self._stop), name="drains"),
        ]

    async def aclose(self) -> None:
        """Step down and stop watching."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.driver.aclose()

    async def available(self) -> None:
        """Refuse new work while etcd has not answered lately (no quorum: nothing can be placed).

        Raises:
            ClusterUnavailableError: etcd has not answered for over two checks.
        """
        silent = self.silent()
        if silent > 2 * HEALTH_EVERY + HEALTH_TIMEOUT:
            raise ClusterUnavailableError(
                f"the cluster's etcd has not answered for {silent:.0f}s (no quorum?): "
                "nothing new can be placed now"
            )

    def silent(self) -> float:
        """Seconds since etcd last answered this replica's health check."""
        return time.monotonic() - self.healthy_at

    async def _check_health(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(ClusterUnavailableError, TimeoutError):
                await asyncio.wait_for(self.store.revision(), HEALTH_TIMEOUT)
                self.healthy_at = time.monotonic()
            await asyncio.sleep(HEALTH_EVERY)

    async def kick(self) -> None:
        """Ask the leader to serve the queue (a follower took a request)."""
        with contextlib.suppress(ClusterUnavailableError):
            await self.store.kick()

    # -- leadership ----------------------------------------------------------------

    async def _campaign(self) -> None:
        while not self._stop.is_set():
            try:
                lease = await self.store.campaign(self.replica, LEADER_TTL)
                if lease is None:
                    await self._await_vacancy()
                    continue
                await self._lead(lease)
            except ClusterUnavailableError as exc:
                log.warning("%s: etcd unavailable while campaigning: %s", self.replica, exc)
                await asyncio.sleep(1.0)

    async def _await_vacancy(self) -> None:
        start = await self.store.revision() + 1
        if await self.store.leader() is None:
            return
        async for event in self.store.watch_leader(start):
            if event.kind == "delete":
                return

    async def _lead(self, lease: int) -> None:
        log.warning("%s leads the control plane", self.replica)
        self.is_leader = True
        try:
            await self._elected()
            while not self._stop.is_set():
                await asyncio.sleep(LEADER_TTL / 3)
                if not await self.store.keepalive(lease):
                    break
        finally:
            self.is_leader = False
            log.warning("%s no longer leads", self.replica)
            with contextlib.suppress(GenOSError):
                await self.store.resign(lease)

    async def _elected(self) -> None:
        engine = self.engine
        self.cordoned = set(await self.store.cordons())
        await engine.reconcile()
        await engine.pools.load()
        await engine.pools.refill()
        # Nodes lost while nobody led: their environments are still marked held.
        holding = await engine.registry.list(states=HOLDING)
        for node in sorted({e.host for e in holding if e.host} - set(self.driver.nodes)):
            await self.lose(node)

    async def _follow_kicks(self) -> None:
        while not self._stop.is_set():
            try:
                start = await self.store.revision() + 1
                async for _event in self.store.watch_kicks(start):
                    if self.is_leader:
                        self.cordoned = set(await self.store.cordons())
                        self.drainer.wake()  # a drain may have started
                        await self.engine.admit()
            except (ClusterUnavailableError, GenOSError) as exc:
                log.info("kicks: %s", exc)
                await asyncio.sleep(1.0)

    # -- node loss -----------------------------------------------------------------

    def _node_gone(self, node: str) -> None:
        if self.is_leader:
            self._tasks.append(asyncio.create_task(self._after_grace(node), name=f"lost-{node}"))

    async def _after_grace(self, node: str) -> None:
        await asyncio.sleep(LOST_GRACE)
        if node not in self.driver.nodes and self.is_leader:
            await self.lose(node)

    async def lose(self, node: str) -> list[str]:
        """Mark everything ``node`` held ``lost`` (and replace what asks for it); their ids."""
        engine = self.engine
        when = datetime.now(UTC).isoformat(timespec="seconds")
        reason = f"node {node} lost at {when}: its lease lapsed (it died or was cut off)"
        lost: list[str] = []
        for env in await engine.registry.list(states=HOLDING, host=node):
            if not await engine.lose(env, reason, actor=ACTOR):
                continue  # ended meanwhile
            lost.append(env.id)
            with contextlib.suppress(GenOSError):
                await self.store.unassign(env.id, node)
            if env.spec.lifetime.on_host_loss == "replace":
                await self._replace(env)
        if lost:
            log.warning("node %s lost with %d environments", node, len(lost))
        await engine.admit()  # what waited may fit elsewhere now
        return lost

    async def _replace(self, env: Environment) -> None:
        engine = self.engine
        try:
            made = await engine.request(env.owner, env.spec, priority=env.priority,
                                        replaces=env.id)  # fmt: skip
        except GenOSError as exc:
            await engine.note(env.id, EventType.ERROR, f"no replacement: {exc}", {})
            return
        await engine.registry.link_replacement(env.id, made.id)
        data = {"replaced_by": made.id, "at": time.time()}
        await engine.note(env.id, EventType.PROGRESS, f"replaced by {made.id}", data)
