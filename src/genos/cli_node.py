"""``genos node``: run this host as a node of a cluster, and see or cordon the nodes.

``run`` is the process on every host (:mod:`genos.node.run`); ``ls``,
``cordon``, ``drain`` and ``uncordon`` ask the control plane (``GENOS_URL``).
"""

from __future__ import annotations

import json
import re
import sys
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


def _seconds(text: str) -> float:
    found = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not found or int(found.group(1)) == 0:
        raise InputError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h)")
    return int(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]


def _drain_line(status: dict[str, Any], total: int) -> str:
    left = status["remaining"]
    kinds: dict[str, int] = {}
    for env in left:
        kinds[env["action"]] = kinds.get(env["action"], 0) + 1
    what = ", ".join(f"{n} {action}" for action, n in sorted(kinds.items()))
    return f"{status['node']}: {total - len(left)}/{total} gone" + (
        f" ({what} left)" if what else ""
    )


@node_app.command("drain")
def drain(  # noqa: PLR0917 - Typer parameters
    name: Annotated[str, typer.Argument(help="The node.")],
    containers: Annotated[
        str, typer.Option(help="wait (until their TTL or removal), move, or stop.")
    ] = "wait",
    deadline: Annotated[
        str | None, typer.Option(help="After this (90s, 30m, 2h) what is left is stopped.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (shown in `genos node ls`).")] = "",
    wait: Annotated[bool, typer.Option(help="Follow it until the node is empty.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Cordon NAME and empty it: move, stop or wait for its environments (uncordon ends it)."""
    import time  # noqa: PLC0415

    from genos.client import Client  # noqa: PLC0415

    if containers not in ("wait", "move", "stop"):
        raise InputError(f"--containers must be wait, move or stop, not {containers!r}")
    body: dict[str, Any] = {"containers": containers, "reason": reason}
    if deadline is not None:
        body["deadline_s"] = _seconds(deadline)
    with Client() as client:
        status = client.call("POST", f"/v1/nodes/{name}/drain", body)
        total, said = len(status["remaining"]), ""
        while wait and status["remaining"]:
            line = _drain_line(status, total)
            if line != said and not as_json:
                print(line, file=sys.stderr, flush=True)
                said = line
            actions = {env["action"] for env in status["remaining"]}
            if status["deadline"] is None and actions <= {"wait", "stays"}:
                break  # only their owners or their TTLs end them now
            time.sleep(0.5)
            status = client.call("GET", f"/v1/nodes/{name}/drain")
    if as_json:
        print(json.dumps(status, indent=2))
        return
    out.print(_drain_line(status, total))
    for env in status["remaining"]:
        if env["action"] == "stays":
            out.print(f"{env['id']} stays on {name}: {env['why']}")
    if status["remaining"]:
        out.print(f"{name} is draining: what is left ends with its TTL or removal "
                  f"(`genos node uncordon {name}` ends the drain)")  # fmt: skip
    else:
        out.print(f"{name} is drained (cordoned until `genos node uncordon {name}`)")


@node_app.command("uncordon")
def uncordon(name: Annotated[str, typer.Argument(help="The node.")]) -> None:
    """Let new environments go to NAME again."""
    from genos.client import Client  # noqa: PLC0415

    with Client() as client:
        client.call("POST", f"/v1/nodes/{name}/uncordon", {})
    out.print(f"{name} uncordoned")
