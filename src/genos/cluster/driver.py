"""The control plane's driver for a whole cluster: every verb is an assignment a node carries out.

It implements :class:`~genos.runtime.driver.Driver` for the engine, so the
lifecycle, the queue, reconcile and the API are the one-host code. ``create``
gives the environment to the node placement chose (compare-and-swap on its
owner key) with ``desired: running``: the engine starts what it creates at
once, so one assignment and one report do for both (``start`` then finds
it running and writes nothing). ``suspend`` and ``resume`` (and a ``start``
after a stop) change ``desired``; ``destroy`` removes the assignment. Each
returns when the node reports the state it was asked for (or raises with
the node's reason when the node reports ``failed``). The provisioning steps
a node reports come through as progress.

One watch on every node's status and one on the node records keep this
driver's picture current; a node whose record disappears (its lease lapsed)
fails whatever waits on it. A display is reached through the node's relay
(:mod:`genos.node.relay`): ``remote`` gives the gateway a
:class:`~genos.runtime.driver.RemoteDisplay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genos.cluster import migration
from genos.cluster.etcd import Resync
from genos.cluster.migration import Moved
from genos.cluster.pki import Identity
from genos.cluster.store import Assignment, ClusterStore, NodeInfo, Status, env_of, node_of
from genos.errors import (
    CapabilityError,
    ClusterUnavailableError,
    ExternalError,
    NotFoundError,
    StateError,
)
from genos.node.relay import carry_volume, client_context, open_relay
from genos.orchestrator.provision import Progress
from genos.runtime.driver import EnvState, Inspection, RemoteDisplay, Usage
from genos.spec import EnvironmentSpec, dump

log = logging.getLogger("genos.cluster.driver")
STEP_TIMEOUT = 600.0  # a first build of an image's layers can take minutes
Check = Callable[[Status | None], bool]
SETTLED = ("created", "running", "suspended", "stopped", "failed")


@dataclass(frozen=True)
class RelayDisplay:
    """An environment's display on a node, opened through that node's relay."""

    host: str
    port: int
    env_id: str
    protocol: str
    context: Any  # ssl.SSLContext

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect through the relay (mutual TLS)."""
        return await open_relay(self.host, self.port, self.env_id, self.protocol, self.context)


class ClusterDriver:
    """See the module docstring. Call :meth:`open` before use and :meth:`aclose` after."""

    name = "cluster"
    # Its create has the node start the environment too (``desired: running``):
    # admission stores "sandbox ready" with the move to running, one commit.
    starts_on_create = True

    def __init__(self, store: ClusterStore, identity: Identity) -> None:
        self.store = store
        self.nodes: dict[str, NodeInfo] = {}
        self.statuses: dict[str, Status] = {}
        self.owners: dict[str, str] = {}
        self._context = client_context(identity)
        self._waiting: dict[str, asyncio.Event] = {}  # env id -> set on its status changes
        self._tasks: list[asyncio.Task[None]] = []
        self.node_lost: list[Callable[[str], None]] = []  # called with a node's name
        # Called with an environment's id when its owner record goes: it left every node
        # (ended, whichever replica ended it; or a failed create before its retry).
        self.env_gone: list[Callable[[str], None]] = []

    async def open(self) -> None:
        """Read the nodes and every status, then keep them current."""
        nodes, revision = await self.store.nodes()
        self.nodes = {n.name: n for n in nodes}
        self.owners = await self.store.owners()
        self._tasks = [
            asyncio.create_task(self._watch_nodes(revision), name="cluster-nodes"),
            asyncio.create_task(self._watch_status(), name="cluster-status"),
            asyncio.create_task(self._watch_owners(), name="cluster-owners"),
        ]

    async def aclose(self) -> None:
        """Stop watching (environments and assignments stay)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- watches -------------------------------------------------------------------

    async def _watch_nodes(self, revision: int) -> None:
        while True:
            try:
                async for event in self.store.watch_nodes(revision):
                    name = node_of(event)
                    if event.kind == "put":
                        self.nodes[name] = NodeInfo.load(event.value)
                    elif self.nodes.pop(name, None) is not None:
                        log.warning("node %s is gone (its lease lapsed or it left)", name)
                        for callback in self.node_lost:
                            callback(name)
                    self._notify()
            except Resync:
                nodes, revision = await self.store.nodes()
                self.nodes = {n.name: n for n in nodes}
            except ClusterUnavailableError:
                await asyncio.sleep(1.0)

    async def _watch_status(self) -> None:
        revision = await self.store.revision() + 1
        while True:
            try:
                async for event in self.store.watch_status(revision):
                    node, env_id = env_of(event)
                    held = self.statuses.get(env_id)
                    if event.kind == "put":
                        if self.owners.get(env_id, node) == node:  # not a former node's word
                            self.statuses[env_id] = Status.load(event.value)
                    elif held is not None and held.node == node:
                        del self.statuses[env_id]
                    revision = event.revision + 1
                    self._notify(env_id)
            except (Resync, ClusterUnavailableError):
                await asyncio.sleep(0.5)
                revision = await self.store.revision() + 1

    async def _watch_owners(self) -> None:
        """Keep :attr:`owners` current whoever moves an environment (another replica's
        drain, node loss), so statuses and displays follow it."""
        revision = await self.store.revision() + 1
        while True:
            try:
                async for event in self.store.watch_owners(revision):
                    env_id = event.key.decode().rsplit("/", 1)[1]
                    if event.kind == "put":
                        self.owners[env_id] = event.value.decode()
                    else:
                        self.owners.pop(env_id, None)
                        for listener in self.env_gone:
                            listener(env_id)
                    revision = event.revision + 1
            except (Resync, ClusterUnavailableError):
                await asyncio.sleep(0.5)
                revision = await self.store.revision() + 1
                with contextlib.suppress(ClusterUnavailableError):
                    self.owners = await self.store.owners()

    def _status(self, env_id: str, node: str) -> Status | None:
        """What the watch holds of ``node``'s word on ``env_id`` (None: nothing)."""
        status = self.statuses.get(env_id)
        return status if status is not None and status.node == node else None

    def _notify(self, env_id: str | None = None) -> None:
        """Wake who waits on ``env_id`` (None: everyone, a node came or went)."""
        if env_id is None:
            for waiter in self._waiting.values():
                waiter.set()
        elif (one := self._waiting.get(env_id)) is not None:
            one.set()

    async def _wait(
        self,
        env_id: str,
        node: str,
        check: Check,
        progress: Progress | None = None,
        *,
        fresh: bool = False,
    ) -> Status | None:
        """Until ``check(status)`` holds; the status then. Raises when the node goes away.

        The status watch keeps :attr:`statuses` current; etcd is read only while
        the watch holds nothing of ``node`` for it (it may lag behind this call,
        and knows nothing of statuses older than this replica). ``fresh``: this
        call just made the assignment, so whatever the node says of it comes
        later and the watch brings it: etcd is read only once the watch has been
        silent for a second (it was restarting, say).
        """
        seen = ""
        changed = self._waiting.setdefault(env_id, asyncio.Event())
        ask = not fresh
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                while True:
                    status = self._status(env_id, node)
                    if status is None and ask:
                        status = await self.store.status(node, env_id)
                    if check(status):
                        return status
                    if node not in self.nodes:
                        raise ExternalError(f"{env_id}: node {node} is gone")
                    if progress is not None and status is not None and status.message != seen:
                        seen = status.message
                        progress(f"{node}: {seen}", status.step)
                    try:
                        await asyncio.wait_for(changed.wait(), 1.0)
                    except TimeoutError:
                        ask = True  # the watch is silent: ask etcd from now on
                    changed.clear()
        finally:
            if self._waiting.get(env_id) is changed:
                del self._waiting[env_id]

    # -- the driver protocol -------------------------------------------------------

    async def create(
        self,
        env_id: str,
        spec: EnvironmentSpec,
        progress: Progress | None = None,
        owner: str | None = None,
        node: str | None = None,
    ) -> None:
        """Give ``env_id`` to ``node`` and wait until the node has created and started it.

        Raises:
            CapabilityError: no node was chosen (placement's job).
            StateError: another node has it already.
            ExternalError: the node failed to create it (its reason in the message).
        """
        if node is None or node not in self.nodes:
            raise CapabilityError(f"no live node was chosen for {env_id}")
        wanted = Assignment(env_id, node, dump(spec), "running", 1, owner or "")
        fresh = await self.store.assign(wanted)
        if not fresh:
            holder = await self.store.owner(env_id)
            if holder != node:
                raise StateError("assigned", ["absent"], "create")
        self.owners[env_id] = node
        status = await self._wait(env_id, node, lambda s: _settled(s, 1), progress, fresh=fresh)
        _raise_failed(env_id, status)

    async def _change(self, env_id: str, desired: str, verb: str, **extra: Any) -> None:
        node = await self._node_of(env_id)
        current = await self.store.assignment(env_id, node)
        if current is None:
            raise NotFoundError("environment", env_id)
        wanted = replace(current, desired=desired, generation=current.generation + 1, **extra)
        if not await self.store.update(wanted):
            raise NotFoundError("environment", env_id)
        status = await self._wait(env_id, node, lambda s: _settled(s, wanted.generation))
        _raise_failed(env_id, status)
        if status is not None and status.state not in (desired, "failed"):
            raise StateError(status.state, [desired], verb)

    async def start(self, env_id: str, *, timeout: float = 30.0) -> None:  # noqa: ARG002
        """Ask the node to start it; returns once its display answers there (at once when
        the node reported it running since its last assignment: see :meth:`create`)."""
        node = self.owners.get(env_id)
        status = None if node is None else self._status(env_id, node)
        if status is not None and status.state == "running" and status.generation == 1:
            return
        await self._change(env_id, "running", "start")

    async def suspend(self, env_id: str, *, to_disk: bool = False) -> None:
        """Ask the node to suspend it (to disk for VMs when asked)."""
        await self._change(env_id, "suspended", "suspend", to_disk=to_disk)

    async def resume(self, env_id: str) -> None:
        """Ask the node to resume it."""
        await self._change(env_id, "running", "resume")

    async def destroy(self, env_id: str) -> None:
        """Take it away from its node; returns once the node has destroyed it (or is gone)."""
        node = self.owners.get(env_id) or await self.store.owner(env_id)
        if node is None:
            return
        await self.store.unassign(env_id, node)
        self.owners.pop(env_id, None)
        if node not in self.nodes:
            return  # the node fences it when it comes back
        await self._wait(env_id, node, lambda s: s is None or s.state == "failed")

    async def relocate(
        self, env_id: str, target: str, spec: EnvironmentSpec, owner: str, *, running: bool
    ) -> str:
        """Stop ``env_id`` on its node and make it anew on ``target`` with the same id and
        spec (a drain's container move): started when ``running``, else created. Its
        volume, if the spec has one, is carried between the two while it runs on
        neither (:func:`~genos.node.relay.carry_volume`). Its former node's name.

        What the environment held only on its former node (an ephemeral home, a
        frozen container's memory) does not move. When carrying the volume fails,
        it is made again on its former node, as it was, and the error is raised.

        Raises:
            NotFoundError: no node has it.
            CapabilityError: ``target`` is not a live node.
            ExternalError: the volume could not be carried, or ``target`` failed to make it.
        """
        if target not in self.nodes:
            raise CapabilityError(f"{target} is not a live node")
        source = await self._node_of(env_id)
        desired = "running" if running else "created"
        await self.destroy(env_id)
        volume = spec.persistence.volume
        if volume is not None:
            try:
                await carry_volume(_address(self.nodes[source].relay),
                                   _address(self.nodes[target].relay), owner, volume,
                                   self._context)  # fmt: skip
            except (ExternalError, KeyError) as exc:
                await self._place(Assignment(env_id, source, dump(spec), desired, 1, owner))
                raise ExternalError(f"{env_id} stays on {source}: {exc}") from exc
        await self._place(Assignment(env_id, target, dump(spec), desired, 1, owner))
        return source

    async def migrate(
        self, env_id: str, target: str, spec: EnvironmentSpec, owner: str
    ) -> tuple[str, Moved]:
        """Move a running VM to ``target`` live (:mod:`genos.cluster.migration`); the
        assignment follows by compare-and-swap once the target runs it. Its former
        node's name and what the move cost.

        Raises:
            NotFoundError: no node has it.
            CapabilityError: ``target`` is not a live node.
            ExternalError: it did not move (it runs on its node as before), or the
                target failed to take the assignment over.
        """
        if target not in self.nodes:
            raise CapabilityError(f"{target} is not a live node")
        source = await self._node_of(env_id)
        if source not in self.nodes:
            raise CapabilityError(f"{source} is not a live node")
        try:
            moved = await migration.migrate(env_id, dump(spec), _address(self.nodes[source].relay),
                                            _address(self.nodes[target].relay),
                                            self._context)  # fmt: skip
        except migration.MigrationError as exc:
            raise ExternalError(f"{env_id} stays on {source}: {exc}") from exc
        wanted = Assignment(env_id, target, dump(spec), "running", 1, owner)
        if not await self.store.move(wanted, source):
            raise ExternalError(f"{env_id} was taken from {source} while it moved to {target}")
        self.owners[env_id] = target
        status = await self._wait(env_id, target, lambda s: _settled(s, 1))
        _raise_failed(env_id, status)
        return source, moved

    async def carry_saved(
        self, env_id: str, target: str, spec: EnvironmentSpec, owner: str
    ) -> tuple[str, int]:
        """Move a suspended VM to ``target`` as files (:func:`migration.carry_saved`); the
        assignment follows, still suspended, by compare-and-swap once the target holds it.
        Its former node's name and the bytes carried.

        Raises:
            NotFoundError: no node has it.
            CapabilityError: ``target`` is not a live node.
            ExternalError: it did not move (it stays suspended on its node), or the target
                failed to take the assignment over.
        """
        if target not in self.nodes:
            raise CapabilityError(f"{target} is not a live node")
        source = await self._node_of(env_id)
        if source not in self.nodes:
            raise CapabilityError(f"{source} is not a live node")
        there = _address(self.nodes[target].relay)
        try:
            carried = await migration.carry_saved(env_id, dump(spec),
                                                  _address(self.nodes[source].relay), there,
                                                  self._context)  # fmt: skip
        except migration.MigrationError as exc:
            raise ExternalError(f"{env_id} stays on {source}: {exc}") from exc
        wanted = Assignment(env_id, target, dump(spec), "suspended", 1, owner)
        if not await self.store.move(wanted, source):
            with contextlib.suppress(migration.MigrationError):
                await migration.abort(env_id, there, self._context)
            raise ExternalError(f"{env_id} was taken from {source} while it moved to {target}")
        self.owners[env_id] = target
        status = await self._wait(env_id, target, lambda s: _settled(s, 1))
        _raise_failed(env_id, status)
        return source, carried

    async def _place(self, wanted: Assignment) -> None:
        if not await self.store.assign(wanted):
            raise StateError("assigned", ["absent"], "relocate")
        self.owners[wanted.env_id] = wanted.node
        status = await self._wait(wanted.env_id, wanted.node, lambda s: _settled(s, 1))
        _raise_failed(wanted.env_id, status)

    async def inspect(self, env_id: str) -> Inspection:
        """The node's last word on it.

        Raises:
            NotFoundError: no node has it.
        """
        node = await self._node_of(env_id)
        status = self._status(env_id, node) or await self.store.status(node, env_id)
        if status is None or status.state in ("failed", "creating", ""):
            state = EnvState.STOPPED if status is not None else None
            if state is None:
                raise NotFoundError("environment", env_id)
        else:
            state = EnvState(status.state)
        return Inspection(env_id, state, None, self.usage(env_id), f"cluster:{node}")

    async def creating(self, env_id: str, since: datetime) -> bool:
        """Whether a live node holds ``env_id``'s first assignment and has not settled it
        (no word from it yet, or ``creating``), ``since`` (when it went to provisioning)
        less than a step's time limit ago: a replica may be waiting on it. A leader's
        reconcile leaves such an environment alone rather than failing another replica's
        create."""
        if (datetime.now(UTC) - since).total_seconds() > STEP_TIMEOUT:
            return False
        node = self.owners.get(env_id) or await self.store.owner(env_id)
        if node is None or node not in self.nodes:
            return False
        status = self._status(env_id, node) or await self.store.status(node, env_id)
        return status is None or (status.state == "creating" and status.generation == 1)

    def usage(self, env_id: str) -> Usage | None:
        """What its node last reported it used (None: nothing reported)."""
        status = self.statuses.get(env_id)
        if status is None or not status.usage:
            return None
        return Usage(**status.usage)

    def display(self, env_id: str) -> Path:
        """Never local: see :meth:`remote`.

        Raises:
            CapabilityError: always.
        """
        raise CapabilityError(f"{env_id} is on a node; its display is reached through the relay")

    def remote(self, env_id: str, protocol: str) -> RemoteDisplay:
        """``env_id``'s display through its node's relay.

        Raises:
            NotFoundError: no live node has it.
        """
        node = self.owners.get(env_id)
        info = self.nodes.get(node or "")
        if info is None:
            raise NotFoundError(f"{protocol} display of environment", env_id)
        host, port = _address(info.relay)
        return RelayDisplay(host, port, env_id, protocol, self._context)

    async def list_ids(self) -> list[str]:
        """Every environment some node is assigned."""
        self.owners = await self.store.owners()
        return sorted(self.owners)

    async def _node_of(self, env_id: str) -> str:
        node = self.owners.get(env_id) or await self.store.owner(env_id)
        if node is None:
            raise NotFoundError("environment", env_id)
        self.owners[env_id] = node
        return node


def _address(relay: str) -> tuple[str, int]:
    host, _, port = relay.rpartition(":")
    return host, int(port)


def _settled(status: Status | None, generation: int) -> bool:
    return status is not None and status.generation >= generation and status.state in SETTLED


def _raise_failed(env_id: str, status: Status | None) -> None:
    if status is not None and status.state == "failed":
        raise ExternalError(f"{env_id} failed on {status.node}: {status.detail}")
