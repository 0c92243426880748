"""A cluster in this process: real etcd (three members, mutual TLS), nodes and replicas.

Nodes are :class:`~genos.node.agent.NodeAgent` tasks over the demo driver
(a real RFB banner per environment) with their own relays; replicas are
engines over one registry with their own :class:`~genos.cluster.control.ControlPlane`.
A node "dies" when its task is cancelled without leaving (its lease lapses);
a replica "dies" the same way (its leadership lease lapses).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from genos.cluster import pki
from genos.cluster.control import ControlPlane
from genos.cluster.driver import ClusterDriver
from genos.cluster.etcd import EtcdClient, call, close
from genos.cluster.etcdlocal import EtcdCluster
from genos.cluster.store import ClusterStore
from genos.errors import ClusterUnavailableError
from genos.node.agent import NodeAgent
from genos.node.local import DemoDriver
from genos.node.relay import Relay
from genos.orchestrator import Capacity, Engine, Registry, State, User
from genos.runtime.volumes import VolumeStore
from tests.databases import create_database, drop_database

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]
NODE_CAPACITY = Capacity(cpus=2, memory_mb=4096, cpu_overcommit=4)
WAIT = 30.0


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Three etcd members on loopback for the module."""
    root = tmp_path_factory.mktemp("cluster")
    members = EtcdCluster.plan(root / "etcd", root / "pki")
    members.start_all()
    try:
        yield members
    finally:
        members.stop_all()


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float = WAIT) -> None:
    """Poll ``check()`` until it is true, or fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            found = check()
            if await found if inspect.isawaitable(found) else found:
                return
            await asyncio.sleep(0.05)


@dataclass
class Node:
    """A node running in this process."""

    agent: NodeAgent
    driver: DemoDriver
    relay: Relay
    client: EtcdClient
    task: asyncio.Task[None]
    stop: asyncio.Event


@dataclass
class Replica:
    """A control-plane replica running in this process."""

    name: str
    engine: Engine
    plane: ControlPlane
    client: EtcdClient


@dataclass
class Cluster:
    """The parts of one test's cluster (everything made is ended at the end)."""

    etcd: EtcdCluster
    root: Path
    registry: Registry
    nodes: dict[str, Node] = field(default_factory=dict)
    replicas: dict[str, Replica] = field(default_factory=dict)
    keep: dict[str, DemoDriver] = field(default_factory=dict)  # a dead node's host

    @property
    def pki(self) -> Path:
        return self.etcd.pki_dir

    async def node(self, name: str, capacity: Capacity = NODE_CAPACITY) -> Node:
        """Start node ``name`` (again on the same host, if it ran before) and wait until ready."""
        identity = pki.issue(self.pki, name, "node", ["127.0.0.1"])
        driver = self.keep.pop(name, None) or DemoDriver(self.root / name)
        relay = Relay(driver, identity, "127.0.0.1", 0, VolumeStore(self.root / name / "volumes"))
        await relay.start()
        client = EtcdClient(self.etcd.endpoints, identity)
        agent = NodeAgent(name, ClusterStore(client), driver, capacity, f"127.0.0.1:{relay.port}")
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        ready = asyncio.create_task(agent.ready.wait())
        await asyncio.wait({task, ready}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await relay.aclose()
            await close(client)
            task.result()  # raises what stopped it
        self.nodes[name] = Node(agent, driver, relay, client, task, stop)
        return self.nodes[name]

    async def kill_node(self, name: str) -> None:
        """The node dies: no goodbye; its lease lapses; its host keeps what ran."""
        node = self.nodes.pop(name)
        node.task.cancel()
        await asyncio.gather(node.task, return_exceptions=True)
        await node.relay.aclose()
        await close(node.client)
        self.keep[name] = node.driver

    async def replica(self, name: str) -> Replica:
        """Start replica ``name`` over the shared registry."""
        identity = pki.issue(self.pki, name, "control-plane", ["127.0.0.1"])
        client = EtcdClient(self.etcd.endpoints, identity)
        store = ClusterStore(client)
        driver = ClusterDriver(store, identity)
        engine = Engine(self.registry, driver, Capacity(cpus=1, memory_mb=256),
                        host_name=name, event_poll=0.2)  # fmt: skip
        plane = ControlPlane(engine, store, driver, name)
        await plane.start()
        await engine.start(maintenance=False)
        self.replicas[name] = Replica(name, engine, plane, client)
        return self.replicas[name]

    async def kill_replica(self, name: str) -> None:
        """The replica dies: no resignation; its leadership lapses with its lease."""
        replica = self.replicas.pop(name)
        for task in replica.plane._tasks:
            task.cancel()
        await asyncio.gather(*replica.plane._tasks, return_exceptions=True)
        replica.plane.is_leader = False
        await replica.engine.aclose()
        await replica.plane.driver.aclose()
        await close(replica.client)

    async def leader(self) -> Replica:
        """The replica that leads (waits for one)."""
        async with asyncio.timeout(WAIT):
            while True:
                for replica in self.replicas.values():
                    if replica.plane.is_leader:
                        return replica
                await asyncio.sleep(0.05)

    async def settle(self, replica: Replica, env_id: str, *states: State) -> State:
        """Until ``env_id`` is in one of ``states`` (as ``replica`` reads the registry)."""
        async with asyncio.timeout(WAIT):
            while True:
                env = await replica.engine.get(env_id)
                if env.state in states:
                    return env.state
                await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        for name in list(self.replicas):
            replica = self.replicas.pop(name)
            await replica.plane.aclose()
            await replica.engine.aclose()
            await close(replica.client)
        for node in self.nodes.values():
            node.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.task, 10)
            await node.agent.leave()
            await node.relay.aclose()
            await node.driver.aclose()
            await close(node.client)
        for driver in self.keep.values():
            await driver.aclose()


@pytest.fixture
def registry_url(postgres_server: str) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL: a cluster's registry of record."""
    name = f"genos_{secrets.token_hex(4)}"
    url = create_database(postgres_server, name)
    try:
        yield url
    finally:
        drop_database(postgres_server, name)


@pytest.fixture
async def cluster(etcd: EtcdCluster, tmp_path: Path, registry_url: str) -> AsyncIterator[Cluster]:
    """A fresh cluster on the module's etcd (its keys wiped first) and a fresh registry."""
    wipe = EtcdClient(etcd.endpoints, pki.issue(etcd.pki_dir, "wipe", "control-plane",
                                                ["127.0.0.1"]))  # fmt: skip
    async with asyncio.timeout(WAIT):  # etcd may still be electing after a member came back
        while True:
            try:
                await call("wipe", wipe.delete_prefix(b"/genos/"), 3)
                break
            except ClusterUnavailableError:
                await asyncio.sleep(0.2)
    await close(wipe)
    registry = await Registry.open(registry_url)
    made = Cluster(etcd, tmp_path, registry)
    try:
        yield made
    finally:
        await made.aclose()
        await registry.aclose()


@pytest.fixture
async def alice(cluster: Cluster) -> User:
    """An ordinary user of the cluster's registry."""
    return await cluster.registry.accounts.add_user("alice", "user")
