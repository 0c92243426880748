"""A cluster in this process on real etcd and PostgreSQL: placement, streams, loss, failover."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from genos.cluster.placement import Candidate, choose
from genos.cluster.store import Assignment, NodeInfo
from genos.errors import ConflictError, ExternalError
from genos.node.agent import NodeAgent
from genos.node.local import DemoDriver
from genos.orchestrator import Capacity, State, Usage, User
from genos.orchestrator.records import EventType
from genos.runtime.driver import endpoint
from genos.spec import EnvironmentSpec, Lifetime, dump
from tests.cluster.conftest import Cluster, Replica, until

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]
BANNER = b"RFB 003.008\n"


def test_spread_takes_the_emptiest_pack_the_fullest_and_excluded_nodes_none() -> None:
    """Placement by the share left after the request; cordoned nodes and full ones never."""
    cap = Capacity(cpus=2, memory_mb=4096)
    nodes = [
        Candidate("a", cap, Usage(1, 1.0, 1024)),
        Candidate("b", cap, Usage(0, 0.0, 0)),
        Candidate("c", cap, Usage(1, 1.5, 3000)),
        Candidate("d", cap, Usage(), excluded=True),
    ]
    assert choose(nodes, 0.25, 512, "spread").name == "b"  # type: ignore[union-attr]
    assert choose(nodes, 0.25, 512, "pack").name == "c"  # type: ignore[union-attr]
    assert choose(nodes, 0.25, 4000, "spread").name == "b"  # type: ignore[union-attr]
    assert choose(nodes, 0.25, 4097, "spread") is None
    assert choose([Candidate("x", cap), Candidate("w", cap)], 1, 1, "spread").name == "w"  # type: ignore[union-attr]


async def desktops(cluster: Cluster, owner: User, count: int, **spec: object) -> list[str]:
    """``count`` desktops requested through the leader, running; their ids."""
    leader = await cluster.leader()
    ids = []
    for n in range(count):
        made = EnvironmentSpec.model_validate({"name": f"d{n}", **spec})
        env = await leader.engine.request(owner.id, made)
        ids.append(env.id)
    for env_id in ids:
        await leader.engine.wait(env_id, State.RUNNING, timeout=30)
    return ids


async def test_environments_spread_over_nodes_and_stream_through_the_relay(
    cluster: Cluster, alice: User
) -> None:
    """Four desktops on two nodes go two and two; each names its node; its display answers
    RFB through the node's relay (mutual TLS); removing it takes it off its node."""
    await cluster.node("n1")
    await cluster.node("n2")
    await cluster.replica("cp1")
    leader = await cluster.leader()
    ids = await desktops(cluster, alice, 4)
    envs = [await leader.engine.get(env_id) for env_id in ids]
    assert sorted(e.host or "" for e in envs) == ["n1", "n1", "n2", "n2"]
    reader, writer = await endpoint(leader.engine.driver, ids[0], "vnc").open()  # type: ignore[union-attr]
    assert await reader.readexactly(12) == BANNER
    writer.close()
    node = cluster.nodes[envs[0].host or ""]
    assert ids[0] in node.driver.envs
    await leader.engine.terminate(ids[0])
    await until(lambda: ids[0] not in node.driver.envs, 10)
    # Neither the control plane nor the node keeps a logger or a lock for it.
    loggers = logging.Logger.manager.loggerDict
    await until(lambda: not [n for n in loggers if n.endswith("." + ids[0])], 10)
    await until(lambda: ids[0] not in node.agent._locks, 10)  # it grew with every environment


async def test_a_cordoned_node_gets_nothing_new(cluster: Cluster, alice: User) -> None:
    """With n1 cordoned every new desktop goes to n2; uncordoned, n1 takes work again."""
    await cluster.node("n1")
    await cluster.node("n2")
    replica = await cluster.replica("cp1")
    await cluster.leader()
    await replica.plane.store.cordon("n1", "test", "maintenance")
    replica.plane.cordoned = {"n1"}
    ids = await desktops(cluster, alice, 3)
    assert {(await replica.engine.get(i)).host for i in ids} == {"n2"}
    await replica.plane.store.uncordon("n1")
    replica.plane.cordoned = set()
    more = await desktops(cluster, alice, 1)
    assert (await replica.engine.get(more[0])).host == "n1"


async def test_a_dead_node_s_environments_are_lost_then_replaced_and_it_fences_on_return(
    cluster: Cluster, alice: User
) -> None:
    """Node n1 dies: within its lease (10 s) and the grace its desktops are lost with the
    reason; the one that asks to be replaced gets a replacement on n2, linked both ways. When
    n1 comes back it destroys what is no longer its own before it takes work."""
    await cluster.node("n1")
    replica = await cluster.replica("cp1")
    await cluster.leader()
    kept = await desktops(cluster, alice, 1)
    replaced = await desktops(cluster, alice, 1, lifetime=Lifetime(on_host_loss="replace"))
    await cluster.node("n2")
    assert {(await replica.engine.get(i)).host for i in kept + replaced} == {"n1"}
    began = time.monotonic()
    await cluster.kill_node("n1")
    for env_id in kept + replaced:
        assert await cluster.settle(replica, env_id, State.LOST) is State.LOST
    took = time.monotonic() - began
    assert took < 20, took
    await until(lambda: _replaced(replica, replaced[0]))
    lost = await replica.engine.get(replaced[0])
    assert lost.failure_reason is not None
    assert lost.failure_reason.startswith("node n1 lost at ")
    assert lost.replaced_by is not None
    substitute = await replica.engine.wait(lost.replaced_by, State.RUNNING, timeout=30)
    assert (substitute.host, substitute.replaces, substitute.owner) == ("n2", lost.id, alice.id)
    assert (await replica.engine.get(kept[0])).replaced_by is None
    host = cluster.keep["n1"]
    assert set(host.envs) == {kept[0], replaced[0]}  # still there on the dead node's host
    await cluster.node("n1")
    assert set(host.envs) == set()  # fenced before it announced itself


async def _replaced(replica: Replica, env_id: str) -> bool:
    return (await replica.engine.get(env_id)).replaced_by is not None


async def test_the_leader_dies_and_a_follower_takes_over_within_seconds(
    cluster: Cluster, alice: User
) -> None:
    """Two replicas: the leader is killed; the other leads within the leader lease (5 s) and
    a request it takes is placed and runs."""
    await cluster.node("n1")
    await cluster.replica("cp1")
    await cluster.replica("cp2")
    leader = await cluster.leader()
    follower = next(r for r in cluster.replicas.values() if r is not leader)
    began = time.monotonic()
    await cluster.kill_replica(leader.name)
    new = await cluster.leader()
    assert new is follower
    assert time.monotonic() - began < 8
    env = await follower.engine.request(alice.id, EnvironmentSpec(name="after"))
    assert (await follower.engine.wait(env.id, State.RUNNING, timeout=30)).host == "n1"


async def test_a_follower_takes_requests_and_the_leader_admits_them_at_once(
    cluster: Cluster, alice: User
) -> None:
    """A request stored by a follower is admitted by the leader through a kick, in well under
    the periodic pass."""
    await cluster.node("n1")
    await cluster.replica("cp1")
    await cluster.replica("cp2")
    leader = await cluster.leader()
    follower = next(r for r in cluster.replicas.values() if r is not leader)
    began = time.monotonic()
    env = await follower.engine.request(alice.id, EnvironmentSpec(name="kicked"))
    assert env.state is State.REQUESTED
    ran = await follower.engine.wait(env.id, State.RUNNING, timeout=30)
    assert ran.host == "n1"
    assert time.monotonic() - began < 3


async def test_another_replica_s_reconcile_leaves_a_create_its_node_is_making_alone(
    cluster: Cluster, alice: User
) -> None:
    """A create is held on its node when the other replica reconciles (what a new leader
    does first, while the old one still waits on the node): it stays provisioning, not
    failed, and runs once the node is done. An assignment no registry row holds, on a node
    that has said nothing of it (a timed-out write that etcd committed later), is removed."""
    node = await cluster.node("n1")
    gate = asyncio.Event()
    create = node.driver.create

    async def held(env_id: str, spec: Any) -> None:
        await gate.wait()
        await create(env_id, spec)

    node.driver.create = held  # type: ignore[method-assign]
    await cluster.replica("cp1")
    await cluster.replica("cp2")
    leader = await cluster.leader()
    other = next(r for r in cluster.replicas.values() if r is not leader)
    store = other.plane.store
    env = await leader.engine.request(alice.id, EnvironmentSpec(name="held"))
    await until(lambda: store.owner(env.id), 30)
    stray = secrets.token_hex(5)
    await store.assign(Assignment(stray, "n9", dump(EnvironmentSpec(name="stray")), "running"))
    report = await other.engine.reconcile()
    assert report.complete
    assert report.failed == []
    assert report.destroyed == [stray]
    assert await store.owner(stray) is None
    assert (await other.engine.get(env.id)).state is State.PROVISIONING
    gate.set()
    assert (await leader.engine.wait(env.id, State.RUNNING, timeout=30)).host == "n1"
    assert env.id in node.driver.envs


async def test_a_node_s_work_cancelled_before_its_turn_is_closed_not_left_unawaited(
    tmp_path: Path,
) -> None:
    """A node stops while a removal waits behind its environment's create: the waiting
    work is closed (no "coroutine was never awaited" when it is collected), the running
    one is cancelled, and neither ever ran past where it was."""
    agent = NodeAgent("n1", None, DemoDriver(tmp_path), Capacity(cpus=1, memory_mb=256),  # type: ignore[arg-type]
                      "127.0.0.1:1")  # fmt: skip
    ran: list[str] = []

    async def step(name: str) -> None:
        ran.append(name)
        await asyncio.Event().wait()

    agent._spawn("0123456789", step("create"))
    agent._spawn("0123456789", step("remove"))
    await asyncio.sleep(0.05)
    await agent._drain_work()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gc.collect()
    assert ran == ["create"]
    await agent.driver.aclose()  # type: ignore[attr-defined]


async def test_every_replica_hears_that_an_environment_ended(cluster: Cluster, alice: User) -> None:
    """An environment one replica ends is heard of as ended by the other too (which lets go
    of what it kept of it: an agent's connection, an input lease, loggers)."""
    await cluster.node("n1")
    await cluster.replica("cp1")
    await cluster.replica("cp2")
    leader = await cluster.leader()
    other = next(r for r in cluster.replicas.values() if r is not leader)
    heard: dict[str, list[str]] = {"leader": [], "other": []}
    leader.engine.when_ended(heard["leader"].append)
    other.engine.when_ended(heard["other"].append)
    env = await leader.engine.request(alice.id, EnvironmentSpec(name="ends"))
    await leader.engine.wait(env.id, State.RUNNING, timeout=30)
    assert heard == {"leader": [], "other": []}
    await leader.engine.terminate(env.id)
    await until(lambda: env.id in heard["other"], 10)
    assert env.id in heard["leader"]


def _refuse_creates(env_id: str, verb: str) -> None:
    if verb == "create":
        raise ExternalError(f"{env_id}: disk full")


async def test_a_create_that_fails_on_one_node_is_retried_on_another(
    cluster: Cluster, alice: User
) -> None:
    """n1 fails every create: the desktop placed there (first by name) runs on n2 instead,
    with a warning naming both and n1's reason, and nothing of it stays on n1. With n1
    alone, a desktop fails with n1's reason (no other node to try)."""
    bad = await cluster.node("n1")
    bad.driver.hook = _refuse_creates  # type: ignore[attr-defined]
    replica = await cluster.replica("cp1")
    leader = await cluster.leader()
    alone = await leader.engine.request(alice.id, EnvironmentSpec(name="alone"))
    failed = await leader.engine.wait(alone.id, State.FAILED, timeout=30)
    assert "disk full" in (failed.failure_reason or "")
    await cluster.node("n2")
    env = await leader.engine.request(alice.id, EnvironmentSpec(name="retried"))
    ran = await replica.engine.wait(env.id, State.RUNNING, timeout=30)
    assert ran.host == "n2"
    events = await cluster.registry.events(env.id)
    warnings = [e for e in events if e.type is EventType.WARNING]
    assert len(warnings) == 1
    assert warnings[0].message.startswith("retrying on n2: ")
    assert "disk full" in warnings[0].message
    assert (warnings[0].data["from_host"], warnings[0].data["to_host"]) == ("n1", "n2")
    assert env.id not in bad.driver.envs
    assert env.id in cluster.nodes["n2"].driver.envs
    assert await leader.engine.driver.store.owner(env.id) == "n2"  # type: ignore[attr-defined]


async def test_a_second_node_with_a_live_node_s_name_is_refused(cluster: Cluster) -> None:
    """Two live nodes never share a name: the second one's announcement is a conflict."""
    first = await cluster.node("n1")
    second = NodeInfo("n1", "another-boot", "127.0.0.1:1", {}, time.time())
    with pytest.raises(ConflictError, match="node name 'n1' is in use"):
        await first.agent.store.register(second)


async def test_a_node_with_a_clock_far_off_gets_no_work(cluster: Cluster, alice: User) -> None:
    """A node whose record says its clock is ten minutes off is left out of placement."""
    skewed = await cluster.node("n1")
    await cluster.node("n2")
    replica = await cluster.replica("cp1")
    await cluster.leader()
    info = skewed.agent.info()
    off = NodeInfo(**{**info.__dict__, "clock": time.time() + 600})
    assert skewed.agent.lease is not None
    await skewed.agent.store.update_node(off, skewed.agent.lease)
    await until(lambda: replica.plane.driver.nodes["n1"].clock > time.time() + 300, 10)
    ids = await desktops(cluster, alice, 2)
    assert {(await replica.engine.get(i)).host for i in ids} == {"n2"}
