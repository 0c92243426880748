"""Cluster figures: placement throughput on 20 nodes against 1, node-loss detection, failover.

Everything real but the runtime: ``genos cluster up`` on this machine (three
etcd members with mutual TLS, a PostgreSQL 15 server, ``genos node run
--driver fake`` processes, ``genos serve`` replicas), driven over HTTP.

1. Placement: N ``POST /v1/environments`` (C at a time) to the leader with
   one node, then the same with 20 nodes, same run, each after 50 creates
   (removed again) that warm the replica and PostgreSQL up. Per row: accepted per
   second, p50/p99 of the call, seconds until every one is ``running`` on
   its node (placement + assignment + the node's report), the spread over
   the nodes, the CPU the leader, the nodes, etcd, PostgreSQL and the bench's
   own client spent per create (what limits it: they share the cores), and
   the transactions PostgreSQL committed per create (reads included, the
   bench's polling for ``running`` too), the ceiling those CPU costs allow
   (creates per second if every core did nothing else), and a calibration: milliseconds for
   a fixed piece of Python work in the bench process around the round (this
   machine's speed drifts; compare runs only where it agrees). Baseline:
   ``GET /healthz`` on the same server, same client and concurrency.
2. Detection: desktops with ``lifetime.on_host_loss: replace`` over the
   nodes; ``kill -9`` of a node that holds some; seconds until all of them
   are ``lost`` and until their replacements run. Floor: the node lease
   (10 s) plus the grace (2 s). Repeated ``--kills`` times, another node each.
3. Leader failover: ``kill -9`` of the leading replica; seconds until the
   other says it leads (``GET /v1/cluster``), and until a create sent to
   the survivor at the kill runs. Floor: the leader lease (5 s).

Run (root not needed): .venv/bin/python bench/cluster.py [--creates 400] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.api import Call, pct, timed_calls

from genos.cluster.control import LOST_GRACE
from genos.cluster.local import LocalCluster
from genos.cluster.store import LEADER_TTL, NODE_TTL
from genos.spec import EnvironmentSpec, Lifetime, dump

WARM_CREATES = 50  # per round, before the measured ones (see placement_round)
NODE_ARGS = ("--cpus", "64", "--memory-mb", "262144")  # each node's share: never the limit here


def cpu_of(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` and its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def pids_of(cluster: LocalCluster) -> dict[str, list[int]]:
    """The processes by part: the first replica (the leader), the other replicas, nodes,
    etcd, PostgreSQL (postmaster and its backends)."""
    etcd = [m.pid for m in cluster.etcd.members if m.pid] if cluster.etcd else []
    postmaster = int((cluster.root / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    pg = [postmaster]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == postmaster:
                pg.append(int(proc.name))
    replicas = [r.pid for r in cluster.replicas]
    return {"replica": replicas[:1], "followers": replicas[1:],
            "nodes": [n.pid for n in cluster.nodes], "etcd": etcd, "postgres": pg}  # fmt: skip


def cpu_by_part(cluster: LocalCluster) -> dict[str, float]:
    """CPU seconds by part, and this bench's own (the HTTP client's: it shares the cores)."""
    parts = {part: sum(cpu_of(p) for p in pids) for part, pids in pids_of(cluster).items()}
    return parts | {"client": cpu_of(os.getpid())}


def calibration_ms() -> float:
    """Milliseconds this process takes for a fixed piece of Python work (best of 5).

    This machine's speed drifts (its host is shared): the same code's figures
    moved by half over an hour. A round's figures are comparable with another
    run's only as far as this number agrees."""
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        total = 0
        for i in range(300_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - began)
    return best * 1000


def commits_of(cluster: LocalCluster) -> int:
    """Transactions committed in the registry's database so far (PostgreSQL's own counter)."""
    dsn = cluster.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def client(cluster: LocalCluster, replica: int = 0) -> httpx.Client:
    token = cluster.admin_token_file.read_text().strip()
    return httpx.Client(base_url=cluster.replicas[replica].url, timeout=60,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def token_of(cluster: LocalCluster) -> str:
    return cluster.admin_token_file.read_text().strip()


def everything(api: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = api.get("/v1/environments", params=params).json()
        items += page["items"]
        cursor = page["next"]
        if cursor is None:
            return items


def wait(check: Any, timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(every)


def clear(api: httpx.Client) -> None:
    """Remove every live environment and wait until none is left."""
    for env in everything(api):
        if env["state"] not in {"terminated", "failed", "lost"}:
            api.delete(f"/v1/environments/{env['id']}")
    wait(lambda: all(e["state"] in {"terminated", "failed", "lost"} for e in everything(api)),
         120, 0.5)  # fmt: skip


def nodes_ready(api: httpx.Client, count: int) -> bool:
    nodes = api.get("/v1/nodes").json()
    return len([n for n in nodes if n["state"] == "ready"]) == count


# -- 1. placement -------------------------------------------------------------------------


def placement_round(cluster: LocalCluster, n: int, conc: int, tag: str) -> dict[str, Any]:
    spec = dump(EnvironmentSpec(name="bench"))
    url, token = cluster.replicas[0].url, token_of(cluster)

    def health(_i: int) -> Call:
        return "GET", "/healthz", None

    def create(i: int) -> Call:
        return "POST", "/v1/environments", {"spec": spec, "request_id": f"{tag}-{i}"}

    asyncio.run(timed_calls(url, token, 50, conc, health))  # warm-up
    # Warm-up creates, removed again: the replica's first creates compile its
    # statements and PostgreSQL's backends prepare them; a long-running control
    # plane has done that long before. The figures are its steady state.
    asyncio.run(timed_calls(url, token, WARM_CREATES, conc, lambda i: create(-1 - i)))
    with client(cluster) as api:
        clear(api)
    _wall, health_lat = asyncio.run(timed_calls(url, token, n, conc, health))
    calibration = calibration_ms()
    cpu0, commits0 = cpu_by_part(cluster), commits_of(cluster)
    began = time.perf_counter()
    wall, lat = asyncio.run(timed_calls(url, token, n, conc, create))
    with client(cluster) as api:
        envs = wait(lambda: (e := [x for x in everything(api) if x["state"] != "terminated"])
                    and all(x["state"] == "running" for x in e) and len(e) == n and e,
                    120, 0.2)  # fmt: skip
        all_running = time.perf_counter() - began
        cpu1 = cpu_by_part(cluster)
        time.sleep(1.0)  # a backend's counts reach pg_stat_database within about 0.5 s
        commits = commits_of(cluster) - commits0
        per_node: dict[str, int] = {}
        for env in envs:
            per_node[env["node"]] = per_node.get(env["node"], 0) + 1
        clear(api)
    return {
        "nodes": len(cluster.nodes), "rate": n / wall, "p50": pct(lat, 0.5),
        "p99": pct(lat, 0.99), "health_p50": pct(health_lat, 0.5),
        "health_p99": pct(health_lat, 0.99), "running_s": all_running,
        "running_rate": n / all_running, "spread": (min(per_node.values()), max(per_node.values())),
        "cpu": {k: (cpu1[k] - cpu0[k]) / n * 1000 for k in cpu0},
        "commits": commits / n,
        "calibration": (calibration + calibration_ms()) / 2,
    }  # fmt: skip


def placement(cluster: LocalCluster, n: int, conc: int) -> None:
    rows = [placement_round(cluster, n, conc, "one")]
    for k in range(2, 21):
        cluster.add_node(f"node{k}", *NODE_ARGS)
    with client(cluster) as api:
        wait(lambda: nodes_ready(api, 20), 90, 0.5)
    rows.append(placement_round(cluster, n, conc, "twenty"))
    print(f"\n## Placement: {n} creates, {conc} at a time, to the leader (fake nodes)")
    print(
        "| nodes | creates/s | p50 ms | p99 ms | healthz p50/p99 ms | all running after s "
        "(running/s) | per node min-max | CPU ms per create: leader / other replica / nodes / "
        "etcd / pg / "
        "client | ceiling: creates/s the cores give at that CPU | PostgreSQL commits per create "
        "| calibration ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    cores = os.cpu_count() or 1
    for r in rows:
        c = r["cpu"]
        print(
            f"| {r['nodes']} | {r['rate']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['health_p50']:.1f} / {r['health_p99']:.1f} | {r['running_s']:.2f} "
            f"({r['running_rate']:.0f}) | {r['spread'][0]}-{r['spread'][1]} | "
            f"{c['replica']:.2f} / {c['followers']:.2f} / {c['nodes']:.2f} / {c['etcd']:.2f} / "
            f"{c['postgres']:.2f} / {c['client']:.2f} | {cores * 1000 / sum(c.values()):.0f} | "
            f"{r['commits']:.2f} | "
            f"{r['calibration']:.1f} |"
        )
    one, twenty = rows
    print(
        f"| ratio 20/1 | {twenty['rate'] / one['rate']:.2f} | "
        f"{twenty['p50'] / one['p50']:.2f} | {twenty['p99'] / one['p99']:.2f} | | "
        f"{twenty['running_s'] / one['running_s']:.2f} | | | | | |"
    )


# -- 2. detection ---------------------------------------------------------------------------


def detection(cluster: LocalCluster, kills: int, per_node: int) -> None:
    spec = dump(EnvironmentSpec(name="d", lifetime=Lifetime(on_host_loss="replace")))
    rows = []
    with client(cluster) as api:
        count = per_node * len(cluster.nodes)
        made = [api.post("/v1/environments", json={"spec": spec}).json()["id"]
                for _ in range(count)]  # fmt: skip
        wait(lambda: all(api.get(f"/v1/environments/{i}").json()["state"] == "running"
                         for i in made), 120, 0.2)  # fmt: skip
        for k in range(kills):
            envs = [e for e in everything(api) if e["state"] == "running"]
            victim = sorted({e["node"] for e in envs})[k % len({e["node"] for e in envs})]
            held = [e["id"] for e in envs if e["node"] == victim]
            began = time.monotonic()
            cluster.kill(victim)

            def states(ids: list[str]) -> list[dict[str, Any]]:
                return [api.get(f"/v1/environments/{i}").json() for i in ids]

            lost = wait(lambda h=held: all(s["state"] == "lost" for s in states(h)) and
                        time.monotonic(), 60)  # fmt: skip
            replacements = wait(lambda h=held: (r := [s["replaced_by"] for s in states(h)])
                                and all(r) and r, 30)  # fmt: skip
            running = wait(lambda r=replacements: all(s["state"] == "running" for s in states(r))
                           and time.monotonic(), 60)  # fmt: skip
            moved = {s["node"] for s in states(replacements)}
            assert victim not in moved, moved
            rows.append((victim, len(held), lost - began, running - began))
            cluster.add_node(victim, *NODE_ARGS)  # it fences itself and takes work again
            wait(lambda: nodes_ready(api, len(cluster.nodes)), 60, 0.5)
        clear(api)
    floor = NODE_TTL + LOST_GRACE
    print(
        f"\n## Detection: kill -9 of a node ({len(cluster.nodes)} nodes, "
        f"on_host_loss: replace); floor = lease {NODE_TTL} s + grace {LOST_GRACE:g} s"
    )
    print("| node | environments | to lost s | to replacements running s | lost / floor |")
    print("| --- | --- | --- | --- | --- |")
    for victim, held, to_lost, to_running in rows:
        print(f"| {victim} | {held} | {to_lost:.1f} | {to_running:.1f} | {to_lost / floor:.2f} |")
    print(
        f"| median | | {statistics.median(r[2] for r in rows):.1f} | "
        f"{statistics.median(r[3] for r in rows):.1f} | |"
    )


# -- 3. failover ----------------------------------------------------------------------------


def failover(cluster: LocalCluster, kills: int) -> None:
    spec = dump(EnvironmentSpec(name="f"))
    rows = []
    for _ in range(kills):
        views = {}
        for i, replica in enumerate(cluster.replicas):
            with client(cluster, i) as api:
                views[replica.name] = (i, api.get("/v1/cluster").json())
        leader = next(name for name, (_i, v) in views.items() if v["leading"])
        survivor = next(i for name, (i, _v) in views.items() if name != leader)
        with client(cluster, survivor) as api:
            began = time.monotonic()
            cluster.kill(leader)
            env = api.post("/v1/environments", json={"spec": spec})
            assert env.status_code == 201, env.text
            env_id = env.json()["id"]
            leads = wait(lambda: api.get("/v1/cluster").json()["leading"] and time.monotonic(), 30)
            path = f"/v1/environments/{env_id}"
            runs = wait(lambda path=path: api.get(path).json()["state"] == "running"
                        and time.monotonic(), 30)  # fmt: skip
            rows.append((leader, leads - began, runs - began))
            api.delete(f"/v1/environments/{env_id}")
        cluster.add_replica(leader)
    print(
        f"\n## Leader failover: kill -9 of the leading replica (2 replicas); "
        f"floor = leader lease {LEADER_TTL} s"
    )
    print(
        "| killed | survivor leads after s | a create sent at the kill runs after s | "
        "leads / floor |"
    )
    print("| --- | --- | --- | --- |")
    for leader, leads, runs in rows:
        print(f"| {leader} | {leads:.2f} | {runs:.2f} | {leads / LEADER_TTL:.2f} |")
    print(
        f"| median | {statistics.median(r[1] for r in rows):.2f} | "
        f"{statistics.median(r[2] for r in rows):.2f} | |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--creates", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--only", choices=["placement", "detection", "failover"], default=None)
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="genos-bench-cluster-", dir="/var/tmp"))
    top.chmod(0o711)
    cluster = LocalCluster(top / "c", "fake")
    try:
        cluster.up(nodes=1, replicas=2, node_args=NODE_ARGS)
        print(f"# bench/cluster.py on {os.cpu_count()} CPUs; replicas {len(cluster.replicas)}")
        if args.only in {None, "placement"}:
            placement(cluster, args.creates, args.concurrency)
        if args.only in {"detection", "failover"}:
            for k in range(2, 21):
                cluster.add_node(f"node{k}", *NODE_ARGS)
        if args.only in {None, "detection"}:
            detection(cluster, args.kills, 2)
        if args.only in {None, "failover"}:
            failover(cluster, args.kills)
    finally:
        cluster.down()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
