"""etcd 3.4 through aetcd, as the cluster uses it: TLS, leases, watches, compare-and-swap."""

from __future__ import annotations

import asyncio
import time

import pytest

from genos.cluster import pki
from genos.cluster.etcd import EtcdClient, call, close, watch
from genos.cluster.etcdlocal import EtcdCluster
from genos.cluster.store import (
    BATCH_BYTES,
    BATCH_LIMIT,
    Assignment,
    ClusterStore,
    Status,
    _Batch,
)
from genos.errors import ClusterUnavailableError

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("one_loop")]


def client(etcd: EtcdCluster, name: str = "t-client") -> EtcdClient:
    """A control-plane client of the module's etcd."""
    return EtcdClient(etcd.endpoints, pki.issue(etcd.pki_dir, name, "control-plane",
                                                ["127.0.0.1"]))  # fmt: skip


async def test_a_lapsed_lease_deletes_its_key_and_the_watch_sees_it(etcd: EtcdCluster) -> None:
    """A key under a 2 s lease that is not renewed goes within 2-4 s, seen by a watch as a
    delete; one that is renewed stays."""
    c = client(etcd)
    try:
        await c.delete_prefix(b"/t/lease/")
        start = (await c.get_prefix(b"/t/lease/")).header.revision + 1
        kept, lapsed = await c.lease(2), await c.lease(2)
        await c.put(b"/t/lease/kept", b"1", lease=kept.id)
        await c.put(b"/t/lease/lapsed", b"1", lease=lapsed.id)
        began = time.monotonic()
        deleted: list[bytes] = []

        async def renew() -> None:
            while True:
                await asyncio.sleep(0.6)
                await c.refresh_lease(kept.id)

        renewer = asyncio.create_task(renew())
        async with asyncio.timeout(10):
            async for event in watch(c, b"/t/lease/", start):
                if event.kind == "delete":
                    deleted.append(event.key)
                    break
        took = time.monotonic() - began
        renewer.cancel()
        assert deleted == [b"/t/lease/lapsed"]
        assert 1.5 <= took <= 4.5
        assert (await c.get(b"/t/lease/kept")) is not None
        await c.revoke_lease(kept.id)
        assert (await c.get(b"/t/lease/kept")) is None
    finally:
        await close(c)


async def test_an_environment_is_assigned_to_one_node_only(etcd: EtcdCluster) -> None:
    """Two nodes racing for one environment: exactly one assignment wins; the owner's update
    passes, another node's fails; unassigning by the wrong node changes nothing."""
    c = client(etcd)
    store = ClusterStore(c)
    try:
        await c.delete_prefix(b"/genos/")
        wins = await asyncio.gather(*(
            store.assign(Assignment("abcdef0123", node, {}, "created")) for node in ("n1", "n2")
        ))  # fmt: skip
        assert sorted(wins) == [False, True]
        owner = await store.owner("abcdef0123")
        other = "n2" if owner == "n1" else "n1"
        assert owner in {"n1", "n2"}
        assert await store.update(Assignment("abcdef0123", owner, {}, "running", 2)) is True
        assert await store.update(Assignment("abcdef0123", other, {}, "running", 2)) is False
        assert await store.unassign("abcdef0123", other) is False
        assert await store.owners() == {"abcdef0123": owner}
        assert await store.unassign("abcdef0123", owner) is True
        assert await store.owners() == {}
    finally:
        await close(c)


async def test_assignments_asked_together_go_in_one_transaction_and_a_taken_one_alone(
    etcd: EtcdCluster,
) -> None:
    """Assignments asked for at once are written in one etcd transaction (one revision);
    when one of them is taken already, it alone is refused and the others are made.
    Reports go together too, the last word on a key winning."""
    c = client(etcd)
    store = ClusterStore(c)
    try:
        await c.delete_prefix(b"/genos/")
        ids = [f"batch{i:05d}" for i in range(8)]
        wins = await asyncio.gather(*(store.assign(Assignment(i, "n1", {}, "running"))
                                      for i in ids))  # fmt: skip
        assert wins == [True] * 8
        revisions = {(await c.get(b"/genos/v1/owner/" + i.encode())).mod_revision for i in ids}
        assert len(revisions) == 1
        assert await store.assign(Assignment("taken00001", "n2", {}, "running")) is True
        asked = ["fresh00001", "taken00001", "fresh00002"]
        wins = await asyncio.gather(*(store.assign(Assignment(i, "n1", {}, "running"))
                                      for i in asked))  # fmt: skip
        assert wins == [True, False, True]
        assert await store.owners() == dict.fromkeys(ids, "n1") | {
            "fresh00001": "n1", "fresh00002": "n1", "taken00001": "n2"}  # fmt: skip
        await asyncio.gather(*(store.report(Status(i, "n1", state, 1))
                               for i, state in [(ids[0], "creating"), (ids[1], "running"),
                                                (ids[0], "running")]))  # fmt: skip
        assert (await store.status("n1", ids[0])).state == "running"  # type: ignore[union-attr]
        assert (await store.status("n1", ids[1])).state == "running"  # type: ignore[union-attr]
    finally:
        await close(c)


async def test_a_batch_takes_what_came_while_one_was_written_up_to_its_limit() -> None:
    """The first item goes alone; what is submitted while it is written goes next, together,
    in order, at most BATCH_LIMIT at a time and about BATCH_BYTES stored; a failed write
    fails its own waiters only, an item's own error reaches its waiter alone, and a
    cancelled waiter leaves the rest."""
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def write(items: object) -> list[int | Exception]:
        batch = [i for i, _stored in items]  # type: ignore[attr-defined]
        batches.append(batch)
        await gate.wait()
        if -1 in batch:
            raise RuntimeError("etcd said no")
        return [ValueError(f"bad {i}") if i == 13 else i * 10 for i in batch]

    group: _Batch[int, int] = _Batch(write)
    first = asyncio.create_task(group.submit((0, b"0")))
    await asyncio.sleep(0)
    more = [asyncio.create_task(group.submit((i, b"i"))) for i in range(1, BATCH_LIMIT + 3)]
    await asyncio.sleep(0)
    more[1].cancel()  # item 2's waiter goes away; the others are unaffected
    gate.set()
    assert await first == 0
    results = await asyncio.gather(*more, return_exceptions=True)
    assert [len(b) for b in batches] == [1, BATCH_LIMIT, 2]
    assert [i for b in batches for i in b] == list(range(BATCH_LIMIT + 3))
    assert isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[12], ValueError)
    assert [r for i, r in enumerate(results) if i not in (1, 12)] == [
        i * 10 for i in range(1, BATCH_LIMIT + 3) if i not in (2, 13)]  # fmt: skip
    failed = await asyncio.gather(group.submit((-1, b"-")), return_exceptions=True)
    assert isinstance(failed[0], RuntimeError)
    assert await group.submit((5, b"5")) == 50  # a failure leaves the next batch alone
    batches.clear()
    gate.clear()
    half = b"x" * (BATCH_BYTES // 2 + 1)
    big = [asyncio.create_task(group.submit((i, half))) for i in (7, 8, 9)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*big) == [70, 80, 90]
    assert batches == [[7], [8], [9]]  # two of them would be over BATCH_BYTES


async def test_a_client_without_the_clusters_certificate_is_refused(etcd: EtcdCluster) -> None:
    """etcd takes only clients with a certificate of the cluster's CA."""
    plain = EtcdClient(etcd.endpoints, None, timeout=2)
    try:
        with pytest.raises(ClusterUnavailableError):
            await call("get", plain.get(b"/genos/"), 3)
    finally:
        await close(plain)


async def test_one_member_lost_is_nothing_quorum_lost_is_a_clear_error(etcd: EtcdCluster) -> None:
    """With one of three members down writes go on (one lost to the election is made again);
    with two down they fail within the call's timeout as ClusterUnavailableError; with the
    members back they work again."""
    c = client(etcd)
    try:
        etcd.kill("etcd3")  # perhaps the leader: what was in flight is made again
        await call("put", lambda: c.put(b"/t/q", b"1"), 10)
        etcd.kill("etcd2")
        began = time.monotonic()
        with pytest.raises(ClusterUnavailableError, match="etcd did not answer put"):
            await call("put", lambda: c.put(b"/t/q", b"2"), 2)
        assert time.monotonic() - began < 3
        etcd.start("etcd2")
        etcd.start("etcd3")
        async with asyncio.timeout(30):
            while True:
                try:
                    await call("put", c.put(b"/t/q", b"3"), 2)
                    break
                except ClusterUnavailableError:
                    await asyncio.sleep(0.2)
        assert (await c.get(b"/t/q")).value == b"3"
    finally:
        await close(c)
