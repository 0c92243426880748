"""A node's agent: fence, announce, then make the host match its assignments.

Start: **fence** first (destroy every environment this host has that is not
assigned to this node: the control plane may have given up on it while the
node was away), then announce the node under a lease (TTL 10 s, renewed
every 3 s) with its capacity, then list its assignments and watch them.

For each assignment the agent drives the local driver towards ``desired``
(``created``, ``running``, ``suspended``), one environment at a time (a lock
per environment), and reports what the host now has as the environment's
status (with the provisioning steps while it is created). An assignment that
goes away is destroyed. The level is what counts: after a broken watch, a
restart or a lapsed lease the agent lists again and converges.

If its lease lapses (the node was cut off longer than the TTL: the control
plane has marked its environments lost by now), the agent stops acting,
fences again and announces itself anew. It never reads the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from genos import logs
from genos.cluster.etcd import Resync
from genos.cluster.store import KEEPALIVE_EVERY, Assignment, ClusterStore, NodeInfo, Status, env_of
from genos.errors import ClusterUnavailableError, GenOSError, NotFoundError
from genos.orchestrator import provision
from genos.orchestrator.capacity import Capacity
from genos.runtime.driver import Driver, EnvState
from genos.spec import EnvironmentSpec

log = logging.getLogger("genos.node")
FIGURES_EVERY = 10.0  # seconds between updates of the node's measured use


class NodeAgent:
    """One host's part of the cluster (see the module docstring)."""

    def __init__(
        self,
        name: str,
        store: ClusterStore,
        driver: Driver,
        capacity: Capacity,
        relay: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.store = store
        self.driver = driver
        self.capacity = capacity
        self.relay = relay
        self.clock = clock
        self.boot = secrets.token_hex(8)
        self.started = 0.0
        self.used: dict[str, Any] = {}
        self.lease: int | None = None
        # One lock per environment while work on it is queued or running (weak: an
        # idle environment's lock goes, so the map does not grow with every one).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._work: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    def info(self) -> NodeInfo:
        """This node's record as it announces it."""
        return NodeInfo(
            name=self.name, boot=self.boot, relay=self.relay,
            capacity=asdict(self.capacity), started=self.started, clock=self.clock(),
            used=self.used,
        )  # fmt: skip

    async def measure(self) -> dict[str, Any]:
        """What this host's environments use now (from their cgroups): cpu seconds, memory."""
        usages = [u for e in await self.driver.list_ids() if (u := self.driver.usage(e))]
        self.used = {
            "environments": len(usages),
            "cpu_seconds": round(sum(u.cpu_seconds for u in usages), 3),
            "memory_mb": sum(u.memory_bytes for u in usages) >> 20,
        }
        return self.used

    async def run(self, stop: asyncio.Event) -> None:
        """Fence, announce and follow the assignments until ``stop`` is set.

        Raises:
            ConflictError: another live node uses this name.
            ClusterUnavailableError: etcd cannot be reached at start.
        """
        self.started = self.clock()
        while not stop.is_set():
            await self.fence()
            self.lease = await self.store.register(self.info())
            log.info("node %s announced (lease %x)", self.name, self.lease)
            lapsed = asyncio.Event()
            tasks = [
                asyncio.create_task(self._keepalive(lapsed, stop), name="keepalive"),
                asyncio.create_task(self._follow(), name="assignments"),
            ]
            done = asyncio.create_task(_first(lapsed, stop))
            try:
                await done
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if lapsed.is_set() and not stop.is_set():
                log.warning("node %s: its lease lapsed; fencing and announcing again", self.name)
                self.ready.clear()
        await self._drain_work()

    async def leave(self) -> None:
        """Go away on purpose: the node's record goes now, not at the end of its lease."""
        if self.lease is not None:
            with contextlib.suppress(GenOSError):
                await self.store.deregister(self.lease)
            self.lease = None

    async def fence(self) -> list[str]:
        """Destroy every environment here that is not assigned to this node; their ids."""
        assigned, _ = await self.store.assignments(self.name)
        wanted = {a.env_id for a in assigned}
        stray = [env_id for env_id in await self.driver.list_ids() if env_id not in wanted]
        for env_id in stray:
            log.warning("node %s: fencing %s (not assigned here)", self.name, env_id)
            with contextlib.suppress(NotFoundError):
                await self.driver.destroy(env_id)
            with contextlib.suppress(GenOSError):
                await self.store.clear(self.name, env_id)
            logs.forget(env_id)
        return stray

    async def _keepalive(self, lapsed: asyncio.Event, stop: asyncio.Event) -> None:
        last_ok = time.monotonic()
        last_figures = 0.0
        while not stop.is_set():
            await asyncio.sleep(KEEPALIVE_EVERY)
            try:
                if self.lease is None or not await self.store.keepalive(self.lease):
                    lapsed.set()
                    return
                last_ok = time.monotonic()
                if time.monotonic() - last_figures > FIGURES_EVERY:
                    await self.measure()
                    await self.store.update_node(self.info(), self.lease)
                    last_figures = time.monotonic()
            except ClusterUnavailableError as exc:
                log.warning("node %s: etcd unavailable (%s)", self.name, exc)
                if time.monotonic() - last_ok > 3 * KEEPALIVE_EVERY + 1:
                    # Longer than the lease: the control plane may have given up on us.
                    lapsed.set()
                    return

    async def _follow(self) -> None:
        while True:
            try:
                assignments, revision = await self.store.assignments(self.name)
                for assignment in assignments:
                    self._spawn(assignment.env_id, self._converge(assignment))
                self.ready.set()
                async for event in self.store.watch_assignments(self.name, revision):
                    _node, env_id = env_of(event)
                    if event.kind == "put":
                        self._spawn(env_id, self._converge(Assignment.load(event.value)))
                    else:
                        self._spawn(env_id, self._remove(env_id))
            except Resync:
                continue
            except ClusterUnavailableError as exc:
                log.warning("node %s: cannot read its assignments (%s)", self.name, exc)
                await asyncio.sleep(1.0)

    def _spawn(self, env_id: str, work: Any) -> None:
        lock = self._locks.setdefault(env_id, asyncio.Lock())

        async def serialized() -> None:
            try:
                async with lock:
                    await work
            finally:
                work.close()  # cancelled while it waited for the lock: never started

        task = asyncio.create_task(serialized(), name=f"node-{env_id}")
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def _drain_work(self) -> None:
        for task in list(self._work):
            task.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)

    async def _state(self, env_id: str) -> EnvState | None:
        try:
            return (await self.driver.inspect(env_id)).state
        except NotFoundError:
            return None

    async def _converge(self, assignment: Assignment) -> None:
        env_id = assignment.env_id
        base = Status(env_id, self.name, "", assignment.generation)
        try:
            state = await self._state(env_id)
            if state is None:
                await self._create(assignment, base)
                state = EnvState.CREATED
            if assignment.desired == "running" and state is EnvState.CREATED:
                await self.driver.start(env_id)
            elif assignment.desired == "running" and state is EnvState.SUSPENDED:
                await self.driver.resume(env_id)
            elif assignment.desired == "suspended" and state is EnvState.RUNNING:
                await self.driver.suspend(env_id, to_disk=assignment.to_disk)
            now = await self._state(env_id)
            await self.store.report(replace(base, state=(now or EnvState.STOPPED).value,
                                            at=self.clock()))  # fmt: skip
        except GenOSError as exc:
            log.warning("node %s: %s failed: %s", self.name, env_id, exc)
            failed = replace(base, state="failed", detail=provision.describe(exc), at=self.clock())
            with contextlib.suppress(GenOSError):
                await self.store.report(failed)

    async def _create(self, assignment: Assignment, base: Status) -> None:
        spec = EnvironmentSpec.model_validate(assignment.spec)

        async def report(message: str, data: dict[str, Any]) -> None:
            with contextlib.suppress(GenOSError):
                await self.store.report(replace(base, state="creating", message=message,
                                                step=data, at=self.clock()))  # fmt: skip

        async with provision.Progress(report) as progress:
            await provision.create(self.driver, assignment.env_id, spec, progress,
                                   assignment.owner)  # fmt: skip

    async def _remove(self, env_id: str) -> None:
        try:
            await self.driver.destroy(env_id)
        except NotFoundError:
            pass
        except GenOSError as exc:
            log.warning("node %s: destroying %s failed: %s", self.name, env_id, exc)
            failed = Status(
                env_id, self.name, "failed", 0, provision.describe(exc), at=self.clock()
            )
            with contextlib.suppress(GenOSError):
                await self.store.report(failed)
            return
        with contextlib.suppress(GenOSError):
            await self.store.clear(self.name, env_id)
        logs.forget(env_id)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
