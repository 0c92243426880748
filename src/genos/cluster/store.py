"""What the control plane and the nodes agree on, as etcd keys.

::

    /genos/v1/nodes/<node>            NodeInfo, under the node's lease (TTL 10 s,
                                      renewed every 3 s): present means alive
    /genos/v1/cordon/<node>           {"by", "reason", "at", "drain"}: no new work goes
                                      there; with "drain" ({"containers", "deadline",
                                      "started"}) the leader also empties it
    /genos/v1/owner/<env>             the node an environment is assigned to (one at a time)
    /genos/v1/assign/<node>/<env>     Assignment: what the node must make of it
    /genos/v1/status/<node>/<env>     Status: what the node has made of it (the node writes)
    /genos/v1/leader                  the replica running the singletons, under its lease
    /genos/v1/kick                    any replica bumps it: the leader serves the queue again

An assignment is made, moved and removed in one transaction with
``owner/<env>`` as the compare-and-swap: an environment is on at most one
node, whatever two control planes do at once. A node reads only its own
``assign/<node>/`` range, and writes only its own ``status/<node>/`` keys and
node record; it never reads the registry.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from genos.cluster.etcd import EtcdClient, Event, call, watch
from genos.errors import ConflictError

PREFIX = b"/genos/v1/"
NODE_TTL = 10
KEEPALIVE_EVERY = 3.0
LEADER_TTL = 5
# Writes made while one is in flight go to etcd together, in one transaction
# of at most this many (etcd refuses more than 128 operations in one).
BATCH_LIMIT = 50
BATCH_BYTES = 512 * 1024  # etcd refuses a request over 1.5 MiB

T = TypeVar("T")
R = TypeVar("R")
Stored = tuple[T, bytes]  # a value and the bytes etcd stores of it


def _key(*parts: str) -> bytes:
    return PREFIX + "/".join(parts).encode()


@dataclass(frozen=True)
class NodeInfo:
    """A node as it announces itself (its record under its lease)."""

    name: str
    boot: str  # a fresh id per start: tells a restart from a second process with the same name
    relay: str  # host:port of its display relay (mutual TLS)
    capacity: dict[str, Any]  # Capacity's fields
    started: float  # its clock (seconds since the epoch) when it started
    clock: float = 0.0  # its clock when it last wrote this record
    used: dict[str, Any] = field(default_factory=dict)  # measured: {"cpus", "memory_mb"}
    version: str = ""

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> NodeInfo:
        return cls(**json.loads(data))


@dataclass(frozen=True)
class Assignment:
    """What a node must make of one environment: ``desired`` is created, running or suspended."""

    env_id: str
    node: str
    spec: dict[str, Any]
    desired: str
    generation: int = 1
    owner: str = ""
    to_disk: bool = False  # with desired suspended: save it to disk (VMs)

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> Assignment:
        return cls(**json.loads(data))


@dataclass(frozen=True)
class Status:
    """What a node reports of one environment (``state``: a driver state or ``failed``)."""

    env_id: str
    node: str
    state: str
    generation: int
    detail: str = ""
    message: str = ""  # the latest progress step ("image: layer 2/3 built")
    step: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> Status:
        return cls(**json.loads(data))


class ClusterStore:
    """Typed operations on the keys above (every call translated by :func:`call`)."""

    def __init__(self, client: EtcdClient, timeout: float = 3.0) -> None:
        self.client = client
        self.timeout = timeout
        self._assigns: _Batch[Assignment, bool] = _Batch(self._assign_all)
        self._reports: _Batch[Status, None] = _Batch(self._report_all)

    async def _call(self, what: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """``make()``'s etcd call, made again while etcd elects a leader (see :func:`call`)."""
        return await call(what, make, self.timeout)

    # -- nodes ---------------------------------------------------------------------

    async def register(self, info: NodeInfo, ttl: int = NODE_TTL) -> int:
        """Announce ``info`` under a new lease; its id.

        Raises:
            ConflictError: a live node of that name with another boot id is there.
        """
        c = self.client
        lease = await self._call("lease", lambda: c.lease(ttl))
        key = _key("nodes", info.name)
        ok, _ = await self._call("register", lambda: c.transaction(
            compare=[c.transactions.version(key) == 0],
            success=[c.transactions.put(key, info.dump(), lease.id)],
            failure=[],
        ))  # fmt: skip
        if not ok:
            found = await self.node(info.name)
            if found is not None and found.boot != info.boot:
                await self._call("revoke", lambda: c.revoke_lease(lease.id))
                raise ConflictError(f"node name {info.name!r} is in use by another node")
            await self._call("re-register", lambda: c.put(key, info.dump(), lease=lease.id))
        return int(lease.id)

    async def keepalive(self, lease_id: int) -> bool:
        """Renew a lease; False when it has expired already (the node must fence)."""
        answer = await self._call("keepalive", lambda: self.client.refresh_lease(lease_id))
        return answer is not None and int(answer.TTL) > 0

    async def update_node(self, info: NodeInfo, lease_id: int) -> None:
        """Rewrite a node's record under its lease (figures, clock)."""
        await self._call("node", lambda: self.client.put(_key("nodes", info.name), info.dump(),
                                                 lease=lease_id))  # fmt: skip

    async def node(self, name: str) -> NodeInfo | None:
        """One live node, or None."""
        found = await self._call("node", lambda: self.client.get(_key("nodes", name)))
        return None if found is None else NodeInfo.load(found.value)

    async def nodes(self) -> tuple[list[NodeInfo], int]:
        """Every live node, and the revision of that reading (to watch from after it)."""
        found = await self._call("nodes", lambda: self.client.get_prefix(_key("nodes", "")))
        items = [NodeInfo.load(kv.value) for kv in found]
        return sorted(items, key=lambda n: n.name), int(found.header.revision) + 1

    async def revision(self) -> int:
        """The store's current revision."""
        found = await self._call("revision", lambda: self.client.get_prefix(_key("kick")))
        return int(found.header.revision)

    def watch_nodes(self, start: int) -> AsyncIterator[Event]:
        """Nodes coming (put) and going (delete: the lease lapsed or it left)."""
        return watch(self.client, _key("nodes", ""), start)

    async def deregister(self, lease_id: int) -> None:
        """Leave on purpose: the record goes with the lease."""
        await self._call("revoke", lambda: self.client.revoke_lease(lease_id))

    # -- cordons -------------------------------------------------------------------

    async def cordon(
        self, name: str, by: str, reason: str, drain: dict[str, Any] | None = None
    ) -> None:
        """Keep new work off ``name``; with ``drain`` (``containers``, ``deadline``), also
        empty it (the leader's :class:`~genos.cluster.drain.Drainer` does)."""
        record = {"by": by, "reason": reason, "at": time.time(), "drain": drain}
        await self._call("cordon", lambda: self.client.put(_key("cordon", name),
                                                   json.dumps(record).encode()))  # fmt: skip

    async def uncordon(self, name: str) -> bool:
        """Let work go to ``name`` again; False if it was not cordoned."""
        answer = await self._call("uncordon", lambda: self.client.delete(_key("cordon", name)))
        return bool(answer)

    async def cordons(self) -> dict[str, dict[str, Any]]:
        """Cordoned nodes and why."""
        kvs = await self._call("cordons", lambda: self.client.get_prefix(_key("cordon", "")))
        return {kv.key.decode().rsplit("/", 1)[1]: json.loads(kv.value) for kv in kvs}

    # -- assignments ---------------------------------------------------------------

    async def assign(self, assignment: Assignment) -> bool:
        """Give an environment to a node, if no node has it (False otherwise).

        Assignments asked for while one is being written go together, in one
        transaction (one etcd write for an admission pass); when any of them
        finds its environment taken, each is tried again alone.
        """
        return await self._assigns.submit((assignment, assignment.dump()))

    async def _assign_all(self, batch: Sequence[Stored[Assignment]]) -> Sequence[bool | Exception]:
        distinct = len({a.env_id for a, _ in batch}) == len(batch)  # etcd refuses a key twice
        if len(batch) > 1 and distinct and await self._assign_together(batch):
            return [True] * len(batch)
        alone = (self._assign_together([a]) for a in batch)
        return await asyncio.gather(*alone, return_exceptions=True)  # type: ignore[return-value]

    async def _assign_together(self, batch: Sequence[Stored[Assignment]]) -> bool:
        c = self.client
        compare, success = [], []
        for assignment, dumped in batch:
            owner = _key("owner", assignment.env_id)
            compare.append(c.transactions.version(owner) == 0)
            success += [c.transactions.put(owner, assignment.node.encode()),
                        c.transactions.put(_key("assign", assignment.node, assignment.env_id),
                                           dumped)]  # fmt: skip
        ok, _ = await self._call("assign", lambda: c.transaction(
            compare=compare, success=success, failure=[]))  # fmt: skip
        return bool(ok)

    async def update(self, assignment: Assignment) -> bool:
        """Rewrite an assignment while its node still owns the environment (False otherwise)."""
        c = self.client
        owner = _key("owner", assignment.env_id)
        target = _key("assign", assignment.node, assignment.env_id)
        ok, _ = await self._call("update", lambda: c.transaction(
            compare=[c.transactions.value(owner) == assignment.node.encode()],
            success=[c.transactions.put(target, assignment.dump())],
            failure=[],
        ))  # fmt: skip
        return bool(ok)

    async def unassign(self, env_id: str, node: str) -> bool:
        """Take an environment away from ``node`` (False: it was not that node's)."""
        c = self.client
        owner = _key("owner", env_id)
        ok, _ = await self._call("unassign", lambda: c.transaction(
            compare=[c.transactions.value(owner) == node.encode()],
            success=[c.transactions.delete(owner),
                     c.transactions.delete(_key("assign", node, env_id))],
            failure=[],
        ))  # fmt: skip
        return bool(ok)

    async def move(self, assignment: Assignment, source: str) -> bool:
        """Give an environment that ``source`` has to ``assignment.node`` in one step
        (False: ``source`` no longer has it)."""
        c = self.client
        owner = _key("owner", assignment.env_id)
        ok, _ = await self._call("move", lambda: c.transaction(
            compare=[c.transactions.value(owner) == source.encode()],
            success=[c.transactions.put(owner, assignment.node.encode()),
                     c.transactions.delete(_key("assign", source, assignment.env_id)),
                     c.transactions.put(_key("assign", assignment.node, assignment.env_id),
                                        assignment.dump())],
            failure=[],
        ))  # fmt: skip
        return bool(ok)

    async def owner(self, env_id: str) -> str | None:
        """The node ``env_id`` is assigned to, if any."""
        found = await self._call("owner", lambda: self.client.get(_key("owner", env_id)))
        return None if found is None else found.value.decode()

    async def owners(self) -> dict[str, str]:
        """Every assigned environment and its node."""
        kvs = await self._call("owners", lambda: self.client.get_prefix(_key("owner", "")))
        return {kv.key.decode().rsplit("/", 1)[1]: kv.value.decode() for kv in kvs}

    async def assignment(self, env_id: str, node: str) -> Assignment | None:
        """One assignment, if there is one."""
        found = await self._call(
            "assignment", lambda: self.client.get(_key("assign", node, env_id))
        )
        return None if found is None else Assignment.load(found.value)

    async def assignments(self, node: str) -> tuple[list[Assignment], int]:
        """A node's assignments, and the revision to watch from after them."""
        found = await self._call(
            "assignments", lambda: self.client.get_prefix(_key("assign", node, ""))
        )
        return [Assignment.load(kv.value) for kv in found], int(found.header.revision) + 1

    def watch_assignments(self, node: str, start: int) -> AsyncIterator[Event]:
        """Changes to ``node``'s assignments from revision ``start`` on."""
        return watch(self.client, _key("assign", node, ""), start)

    # -- status --------------------------------------------------------------------

    async def report(self, status: Status) -> None:
        """A node's word on one environment (reports made while one is being written go
        together, in one transaction)."""
        await self._reports.submit((status, status.dump()))

    async def _report_all(self, batch: Sequence[Stored[Status]]) -> Sequence[None]:
        c = self.client
        # etcd refuses a key twice in one transaction: the last word wins
        last = {_key("status", s.node, s.env_id): dumped for s, dumped in batch}
        puts = [c.transactions.put(key, dumped) for key, dumped in last.items()]
        await self._call("report", lambda: c.transaction(compare=[], success=puts, failure=[]))
        return [None] * len(batch)

    async def clear(self, node: str, env_id: str) -> None:
        """Forget a node's word on an environment it no longer has."""
        await self._call("clear", lambda: self.client.delete(_key("status", node, env_id)))

    async def status(self, node: str, env_id: str) -> Status | None:
        """A node's last word on an environment."""
        found = await self._call("status", lambda: self.client.get(_key("status", node, env_id)))
        return None if found is None else Status.load(found.value)

    def watch_owners(self, start: int) -> AsyncIterator[Event]:
        """Every environment's owner node changing (assigned, moved, taken away)."""
        return watch(self.client, _key("owner", ""), start)

    def watch_status(self, start: int) -> AsyncIterator[Event]:
        """Every status change, of every node."""
        return watch(self.client, _key("status", ""), start)

    # -- leadership and the queue ---------------------------------------------------

    async def campaign(self, replica: str, ttl: int = LEADER_TTL) -> int | None:
        """Become the leader if there is none; the lease to keep alive, or None."""
        c = self.client
        lease = await self._call("lease", lambda: c.lease(ttl))
        key = _key("leader")
        ok, _ = await self._call("campaign", lambda: c.transaction(
            compare=[c.transactions.version(key) == 0],
            success=[c.transactions.put(key, replica.encode(), lease.id)],
            failure=[],
        ))  # fmt: skip
        if not ok:
            await self._call("revoke", lambda: c.revoke_lease(lease.id))
            return None
        return int(lease.id)

    async def leader(self) -> str | None:
        """The replica that leads now, if any."""
        found = await self._call("leader", lambda: self.client.get(_key("leader")))
        return None if found is None else found.value.decode()

    async def resign(self, lease_id: int) -> None:
        """Step down (the key goes with the lease)."""
        await self._call("resign", lambda: self.client.revoke_lease(lease_id))

    def watch_leader(self, start: int) -> AsyncIterator[Event]:
        """The leader key's changes (a delete: the leader is gone)."""
        return watch(self.client, _key("leader"), start)

    async def kick(self) -> None:
        """Tell the leader there is something to admit."""
        await self._call("kick", lambda: self.client.put(_key("kick"), str(time.time()).encode()))

    def watch_kicks(self, start: int) -> AsyncIterator[Event]:
        """Every kick from revision ``start`` on."""
        return watch(self.client, _key("kick"), start)


class _Batch(Generic[T, R]):
    """Group commit for etcd writes: ``submit`` waits for its item's result; items
    (each a value with the bytes stored of it) submitted while a batch is being
    written go in the next one (up to :data:`BATCH_LIMIT` items and about
    :data:`BATCH_BYTES` stored), in submission order.
    ``write`` gets a batch and gives one result per item, in order (an exception
    as a result is raised to that item's waiter); when ``write`` raises, every
    waiter of the batch gets that."""

    def __init__(
        self, write: Callable[[Sequence[Stored[T]]], Awaitable[Sequence[R | Exception]]]
    ) -> None:
        self._write = write
        self._pending: list[tuple[Stored[T], asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Stored[T]) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name="etcd-batch")
        return await future

    def _take(self) -> list[tuple[Stored[T], asyncio.Future[R]]]:
        count, size = 0, 0
        for (_, stored), _ in self._pending:
            size += len(stored)
            if count and (count >= BATCH_LIMIT or size > BATCH_BYTES):
                break
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    async def _drain(self) -> None:
        batch: list[tuple[Stored[T], asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch = self._take()
                try:
                    results: Sequence[R | Exception] = await self._write([i for i, _ in batch])
                except Exception as exc:  # noqa: BLE001 - each of its waiters gets it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its waiter was cancelled
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except asyncio.CancelledError:
            for _, future in batch + self._pending:
                future.cancel()
            self._pending = []
            raise
        finally:
            self._writer = None


def env_of(event: Event) -> tuple[str, str]:
    """(node, env id) of an ``assign/`` or ``status/`` key."""
    parts = event.key.decode().split("/")
    return parts[-2], parts[-1]


def node_of(event: Event) -> str:
    """The node of a ``nodes/`` key."""
    return event.key.decode().rsplit("/", 1)[1]
