"""``genos cluster up|down|status``: a whole cluster on this machine (for tests and newcomers).

See :mod:`genos.cluster.local`. The root is ``--root`` (default
``$GENOS_CLUSTER_DIR`` or ``/var/lib/genos-cluster``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from genos.cli_console import LazyConsole

cluster_app = typer.Typer(help="A cluster on this machine: etcd, PostgreSQL, nodes, replicas.",
                          no_args_is_help=True)  # fmt: skip
out = LazyConsole()
Root = Annotated[Path | None, typer.Option(help="Where it lives (default /var/lib/genos-cluster).")]


def _root(root: Path | None) -> Path:
    return root or Path(os.environ.get("GENOS_CLUSTER_DIR", "/var/lib/genos-cluster"))


@cluster_app.command("up")
def up(
    root: Root = None,
    nodes: Annotated[int, typer.Option(help="How many nodes.", min=1, max=16)] = 2,
    replicas: Annotated[
        int, typer.Option(help="How many control-plane replicas.", min=1, max=8)
    ] = 2,
    driver: Annotated[str, typer.Option(help="The nodes' runtime: oci or fake.")] = "oci",
    images_dir: Annotated[Path | None, typer.Option(help="The nodes' image store.")] = None,
) -> None:
    """Start three etcd members, PostgreSQL, NODES nodes and REPLICAS control planes."""
    from genos.cluster.local import LocalCluster  # noqa: PLC0415

    cluster = LocalCluster(_root(root), driver, images_dir)
    cluster.up(nodes=nodes, replicas=replicas)
    status = cluster.status()
    out.print(f"cluster up in {status['root']}")
    for replica in status["control_plane"]:
        out.print(f"  control plane {replica['name']}: {replica['url']}")
    out.print(f"  admin token: {status['admin_token_file']}")
    out.print(f"  nodes: {', '.join(n['name'] for n in status['nodes'])}")


@cluster_app.command("status")
def status(
    root: Root = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """What runs: control-plane URLs, the admin token file, each node's pid and state."""
    from genos.cluster.local import LocalCluster  # noqa: PLC0415

    found = LocalCluster.load(_root(root)).status()
    if as_json:
        print(json.dumps(found, indent=2))
        return
    for replica in found["control_plane"]:
        state = "up" if replica["alive"] else "down"
        lead = " leader" if replica["name"] == found["leader"] else ""
        out.print(
            f"control plane {replica['name']} {state}{lead} {replica['url']} (pid {replica['pid']})"
        )
    for node in found["nodes"]:
        out.print(f"node {node['name']} {node['state']} (pid {node['pid']})")


@cluster_app.command("cert")
def cert(
    name: Annotated[str, typer.Argument(help="The member's name (a node's or replica's).")],
    role: Annotated[str, typer.Option(help="etcd, control-plane or node.")],
    pki: Annotated[Path, typer.Option(help="The cluster's PKI directory (CA made if missing).")],
    host: Annotated[list[str], typer.Option(help="An address or DNS name it serves on (repeat).")],
) -> None:
    """Issue NAME's certificate from the cluster's CA: <pki>/NAME.pem, NAME.key, ca.pem
    (and, for a control plane, the replicas' shared display-token key gateway.key)."""
    from genos.cluster import pki as pki_mod  # noqa: PLC0415

    identity = pki_mod.issue(pki, name, role, host)
    out.print(f"{identity.cert} {identity.key} (CA {identity.ca})")
    if role == "control-plane":
        from genos.gateway.tokens import load_or_create_key  # noqa: PLC0415

        load_or_create_key(pki / "gateway.key")  # one display-token key for every replica
        out.print(f"{pki / 'gateway.key'}: the display-token key every replica shares")


@cluster_app.command("down")
def down(root: Root = None) -> None:
    """End every environment, stop every process of the cluster, remove its directory."""
    from genos.cluster.local import LocalCluster  # noqa: PLC0415

    LocalCluster.load(_root(root)).down()
    out.print("cluster down")
