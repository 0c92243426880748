"""Draining a node, in a cluster in this process (real etcd and PostgreSQL, demo nodes)."""

from __future__ import annotations

import asyncio

import pytest

from genos.cluster.drain import drain_status, plan_action, start_drain
from genos.errors import ConflictError, InputError, NotFoundError
from genos.orchestrator import State, User
from genos.orchestrator.records import EventType
from genos.runtime.driver import endpoint
from genos.runtime.volumes import VolumeStore
from genos.spec import EnvironmentSpec, Persistence, PersistenceMode, Tier
from tests.cluster.conftest import Cluster, Replica, until

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def _on_n1(
    cluster: Cluster, alice: User, count: int, **spec: object
) -> tuple[Replica, list[str]]:
    """n1 and n2 up, ``count`` desktops running on n1 (n2 cordoned meanwhile)."""
    await cluster.node("n1")
    await cluster.node("n2")
    replica = await cluster.replica("cp1")
    leader = await cluster.leader()
    await leader.plane.store.cordon("n2", "test", "keep it empty")
    leader.plane.cordoned = {"n2"}
    ids = []
    for n in range(count):
        made = EnvironmentSpec.model_validate({"name": f"d{n}", **spec})
        ids.append((await leader.engine.request(alice.id, made)).id)
    for env_id in ids:
        assert (await leader.engine.wait(env_id, State.RUNNING, timeout=30)).host == "n1"
    await leader.plane.store.uncordon("n2")
    leader.plane.cordoned = set()
    return replica, ids


async def _empty(replica: Replica, node: str) -> bool:
    return not await replica.engine.registry.list(states=(State.RUNNING,), host=node)


async def test_move_makes_each_container_anew_on_another_node_with_the_same_id(
    cluster: Cluster, alice: User
) -> None:
    """Drain n1 with containers: move: both desktops run on n2 with the same ids, their
    events say where from and where to, n1 keeps nothing and is drained, and nothing new
    goes to n1 while it is cordoned."""
    replica, ids = await _on_n1(cluster, alice, 2)
    follower = await cluster.replica("cp2")
    await start_drain(replica.plane, "n1", "move", None, by="admin")
    await until(lambda: _empty(replica, "n1"))
    for env_id in ids:
        env = await replica.engine.wait(env_id, State.RUNNING, timeout=30)
        assert env.host == "n2"
        events = await cluster.registry.events(env_id)
        moved = [e for e in events if e.message.startswith("moved from n1 to n2")]
        assert len(moved) == 1
        assert moved[0].data == {"from_host": "n1", "to_host": "n2"}
        assert "nothing of an ephemeral home moves" in moved[0].message
    await until(lambda: not cluster.nodes["n1"].driver.envs)
    assert set(cluster.nodes["n2"].driver.envs) == set(ids)
    status = await drain_status(replica.plane, "n1")
    assert (status["state"], status["remaining"], status["containers"]) == ("drained", [], "move")
    # the other replica follows the move: its gateway reaches the display on n2
    await until(lambda: all(follower.plane.driver.owners.get(i) == "n2" for i in ids))
    reader, writer = await endpoint(follower.engine.driver, ids[0], "vnc").open()  # type: ignore[union-attr]
    assert await reader.readexactly(12) == b"RFB 003.008\n"
    writer.close()
    more = await replica.engine.request(alice.id, EnvironmentSpec(name="later"))
    assert (await replica.engine.wait(more.id, State.RUNNING, timeout=30)).host == "n2"


async def test_move_carries_the_volume_and_a_failed_carry_leaves_it_where_it_was(
    cluster: Cluster, alice: User
) -> None:
    """A desktop with a volume moves with its files (through both relays, mutual TLS) and
    n1 keeps no copy; another whose volume n2 cannot take (a volume of that name is
    there) starts again on n1 with its files, and a warning says why."""
    spec = {"persistence": Persistence(mode=PersistenceMode.VOLUME, volume="home")}
    replica, ids = await _on_n1(cluster, alice, 1, **spec)
    n1 = VolumeStore(cluster.root / "n1" / "volumes")
    n2 = VolumeStore(cluster.root / "n2" / "volumes")
    note = n1.ensure(alice.id, "home", encrypted=False).data / "note.txt"
    note.write_text("carried")
    blocked = {"persistence": Persistence(mode=PersistenceMode.VOLUME, volume="work")}
    other = EnvironmentSpec.model_validate({"name": "blocked", **blocked})
    leader = await cluster.leader()
    leader.plane.cordoned = {"n2"}
    await leader.plane.store.cordon("n2", "test", "keep it empty")
    kept = (await leader.engine.request(alice.id, other)).id
    assert (await leader.engine.wait(kept, State.RUNNING, timeout=30)).host == "n1"
    await leader.plane.store.uncordon("n2")
    leader.plane.cordoned = set()
    (n1.ensure(alice.id, "work", encrypted=False).data / "mine.txt").write_text("stays")
    n2.ensure(alice.id, "work", encrypted=False)  # in the way on n2
    await start_drain(replica.plane, "n1", "move", None, by="admin")
    moved = await replica.engine.get(ids[0])
    await until(lambda: _host_is(replica, ids[0], "n2"))
    assert (n2.volume(alice.id, "home").data / "note.txt").read_text() == "carried"
    with pytest.raises(NotFoundError):
        n1.volume(alice.id, "home")
    await until(lambda: _warned(cluster, kept))
    stayed = await replica.engine.get(kept)
    assert (stayed.state, stayed.host) == (State.RUNNING, "n1")
    assert (n1.volume(alice.id, "work").data / "mine.txt").read_text() == "stays"
    assert kept in cluster.nodes["n1"].driver.envs
    assert moved.id == ids[0]
    instance = cluster.nodes["n1"].driver.envs[kept]
    await asyncio.sleep(2.5)  # two more drain rounds: it is not stopped and moved again
    assert cluster.nodes["n1"].driver.envs.get(kept) is instance
    status = await drain_status(replica.plane, "n1")  # it says why, so `drain` stops waiting
    assert [(r["id"], r["action"]) for r in status["remaining"]] == [(kept, "stays")]
    assert status["remaining"][0]["why"].startswith("move failed: ")
    assert "exists on this host" in status["remaining"][0]["why"]


async def _host_is(replica: Replica, env_id: str, host: str) -> bool:
    env = await replica.engine.get(env_id)
    return env.state is State.RUNNING and env.host == host


async def _warned(cluster: Cluster, env_id: str) -> bool:
    events = await cluster.registry.events(env_id)
    return any(e.type is EventType.WARNING and "exists on this host" in e.message for e in events)


async def test_stop_ends_containers_with_the_drain_as_reason(cluster: Cluster, alice: User) -> None:
    """containers: stop terminates what n1 holds, saying why; n1 ends empty."""
    replica, ids = await _on_n1(cluster, alice, 1)
    await start_drain(replica.plane, "n1", "stop", None, by="admin")
    assert await cluster.settle(replica, ids[0], State.TERMINATED) is State.TERMINATED
    transitions = await cluster.registry.transitions(ids[0])
    assert transitions[-1].reason == "node n1 drained (containers: stop)"
    await until(lambda: not cluster.nodes["n1"].driver.envs)


async def test_wait_leaves_them_until_the_deadline_then_stops_them(
    cluster: Cluster, alice: User
) -> None:
    """containers: wait with a 2 s deadline: the desktop stays (draining), then is stopped
    with the deadline as the reason."""
    replica, ids = await _on_n1(cluster, alice, 1)
    await start_drain(replica.plane, "n1", "wait", 2.0, by="admin")
    status = await drain_status(replica.plane, "n1")
    assert status["state"] == "draining"
    assert [(r["id"], r["action"]) for r in status["remaining"]] == [(ids[0], "wait")]
    assert (await replica.engine.get(ids[0])).state is State.RUNNING
    assert await cluster.settle(replica, ids[0], State.TERMINATED) is State.TERMINATED
    transitions = await cluster.registry.transitions(ids[0])
    assert transitions[-1].reason == "node n1 drained (its deadline passed)"


async def test_uncordon_ends_a_drain_and_the_last_node_cannot_be_drained(
    cluster: Cluster, alice: User
) -> None:
    """A waiting drain ends with uncordon (the desktop stays, no drain to show); draining
    the only node that takes work, or an unknown node, or with a bad mode is refused and
    changes nothing."""
    replica, ids = await _on_n1(cluster, alice, 1)
    plane = replica.plane
    await start_drain(plane, "n1", "wait", None, by="admin")
    with pytest.raises(ConflictError, match="n2 is the last node that takes new work"):
        await start_drain(plane, "n2", "move", None, by="admin")
    assert "n2" not in await plane.store.cordons()
    with pytest.raises(NotFoundError):
        await start_drain(plane, "n9", "move", None, by="admin")
    with pytest.raises(InputError, match="containers must be one of"):
        await start_drain(plane, "n2", "evict", None, by="admin")
    await plane.store.uncordon("n1")
    with pytest.raises(NotFoundError):
        await drain_status(plane, "n1")
    assert (await replica.engine.get(ids[0])).host == "n1"
    events = await cluster.registry.events(ids[0])
    assert [e for e in events if e.type is EventType.WARNING] == []


@pytest.mark.parametrize(("tier", "state", "volume", "mode", "past", "action"), [
    (Tier.CONTAINER, State.RUNNING, False, "move", False, "move"),
    (Tier.GVISOR, State.SUSPENDED, False, "move", False, "move"),
    (Tier.CONTAINER, State.RUNNING, True, "move", False, "move"),
    (Tier.MICROVM, State.RUNNING, False, "move", False, "migrate"),
    (Tier.VM, State.SUSPENDED, False, "move", False, "carry"),
    (Tier.VM, State.RUNNING, False, "stop", False, "stop"),
    (Tier.CONTAINER, State.RUNNING, False, "wait", False, "wait"),
    (Tier.CONTAINER, State.RUNNING, True, "wait", True, "stop"),
    (Tier.CONTAINER, State.PROVISIONING, False, "move", True, "settle"),
])  # fmt: skip
def test_what_a_drain_does_with_each_kind(  # noqa: PLR0917 - the table's columns
    tier: Tier, state: State, volume: bool, mode: str, past: bool, action: str
) -> None:
    """Containers (with volumes too) follow the mode; running VMs migrate live under
    move, suspended ones move as files;
    the deadline stops everything settled; provisioning waits to settle."""

    class Env:
        def __init__(self) -> None:
            self.state = state
            self.spec = EnvironmentSpec(
                name="x", tier=tier,
                **({"persistence": Persistence(mode=PersistenceMode.VOLUME, volume="home")}
                   if volume else {}),
            )  # fmt: skip

    assert plan_action(Env(), mode, past) == action  # type: ignore[arg-type]
