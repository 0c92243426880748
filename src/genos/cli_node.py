"""``genos node``: run this host as a node of a cluster, and see or cordon the nodes.

``run`` is the process on every host (:mod:`genos.node.run`); ``ls``,
``cordon`` and ``uncordon`` ask the control plane (``GENOS_URL``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from genos.cli_console import LazyConsole
from genos.errors import InputError

node_app = typer.Typer(help="The hosts of a cluster: run one, list them, cordon them.",
                       no_args_is_help=True)  # fmt: skip
out = LazyConsole()
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@node_app.command("run")
def run(  # noqa: PLR0917 - Typer parameters
    name: Annotated[str, typer.Option(help="This node's name (its certificate's).")],
    etcd: Annotated[str, typer.Option(help="The etcd members: https://host:port,...")],
    pki: Annotated[Path, typer.Option(help="Directory of <name>.pem, <name>.key and ca.pem.")],
    relay_host: Annotated[str, typer.Option(help="Address of the display relay.")] = "127.0.0.1",
    relay_port: Annotated[int, typer.Option(help="Its port (0: any).", min=0, max=65535)] = 0,
    driver: Annotated[str, typer.Option(help="oci (real) or fake.")] = "oci",
    images_dir: Annotated[Path | None, typer.Option(help="The image layer store.")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPUs environments may use here.")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="Memory they may use here.")] = None,
    cpu_overcommit: Annotated[float, typer.Option(min=0.1)] = 4.0,
    memory_overcommit: Annotated[float, typer.Option(min=0.1)] = 1.0,
) -> None:
    """Run this host as node NAME: fence, announce, follow its assignments, relay displays."""
    import asyncio  # noqa: PLC0415 - the node's parts load only here

    from genos.node.run import NodeConfig, run_node  # noqa: PLC0415
    from genos.orchestrator.capacity import Capacity  # noqa: PLC0415
    from genos.paths import data_dir  # noqa: PLC0415

    if driver not in {"oci", "fake"}:
        raise InputError(f"--driver must be oci or fake, got {driver!r}")
    whole = Capacity.from_host(cpu_overcommit=cpu_overcommit, memory_overcommit=memory_overcommit)
    capacity = Capacity(
        cpus if cpus is not None else whole.cpus, memory_mb or whole.memory_mb,
        cpu_overcommit=cpu_overcommit, memory_overcommit=memory_overcommit,
        host_cpus=whole.host_cpus, host_memory_mb=whole.host_memory_mb,
    )  # fmt: skip
    config = NodeConfig(
        name=name, etcd=[e.strip() for e in etcd.split(",") if e.strip()], pki=pki,
        root=data_dir(), relay_host=relay_host, relay_port=relay_port, driver=driver,
        images_dir=images_dir, capacity=capacity,
    )  # fmt: skip
    asyncio.run(run_node(config))


def _line(node: dict[str, Any]) -> str:
    cap, req = node["capacity"], node["requested"]
    used = node.get("used") or {}
    return (f"{node['name']:<16} {node['state']:<10} {req['environments']:>4} envs  "
            f"cpus {req['cpus']:.2f}/{cap['cpus'] * cap['cpu_overcommit']:g}  "
            f"memory {req['memory_mb']}/{int(cap['memory_mb'] * cap['memory_overcommit'])} MB"
            f"  used {used.get('memory_mb', '-')} MB")  # fmt: skip


@node_app.command("ls")
def ls(as_json: JsonOpt = False) -> None:
    """Every node: state, environments, requests against capacity, real use."""
    from genos.client import Client  # noqa: PLC0415

    with Client() as client:
        nodes = client.call("GET", "/v1/nodes")
    if as_json:
        print(json.dumps(nodes, indent=2))
        return
    for node in nodes:
        out.print(_line(node))


@node_app.command("cordon")
def cordon(
    name: Annotated[str, typer.Argument(help="The node.")],
    reason: Annotated[str, typer.Option(help="Why (shown in `genos node ls`).")] = "",
) -> None:
    """Keep new environments off NAME (those on it stay)."""
    from genos.client import Client  # noqa: PLC0415

    with Client() as client:
        client.call("POST", f"/v1/nodes/{name}/cordon", {"reason": reason})
    out.print(f"{name} cordoned")


@node_app.command("uncordon")
def uncordon(name: Annotated[str, typer.Argument(help="The node.")]) -> None:
    """Let new environments go to NAME again."""
    from genos.client import Client  # noqa: PLC0415

    with Client() as client:
        client.call("POST", f"/v1/nodes/{name}/uncordon", {})
    out.print(f"{name} uncordoned")
