"""``genos serve|up|ls|show|suspend|resume|rm|events|host``: the CLI around the API.

Each command talks to ``GENOS_URL`` with ``GENOS_TOKEN`` (see
:mod:`genos.client`); ``--json`` prints machine-readable objects (for
environments at least ``id``, ``state``, ``url`` and ``spec``). Exit codes: 0
done, 1 failure (server error, environment failed, not found), 2 bad input,
3 the composer asks back, 4 the composer refuses.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from genos.cli_console import LazyConsole
from genos.client import Client
from genos.errors import InputError
from genos.paths import data_dir, node_name

if TYPE_CHECKING:
    from collections.abc import Iterable

# Rich, YAML and the waiting machinery load inside the commands that use them:
# `genos ls --json` or a launch from a warm pool print plain text.
out = LazyConsole()
err = LazyConsole(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
EnvId = Annotated[str, typer.Argument(help="The environment's id (see genos ls).")]
FINAL = {"terminated", "failed", "lost"}


def _print_json(data: Any, *, compact: bool = False) -> None:
    if compact:
        print(json.dumps(data, separators=(",", ":"), default=str), flush=True)
    else:
        print(json.dumps(data, indent=2, default=str))


def _env_line(env: dict[str, Any]) -> str:
    note = f" ({env['failure_reason']})" if env.get("failure_reason") else ""
    return f"{env['id']}  {env['state']}{note}  {env['summary']}"


def _columns(rows: list[list[str]]) -> str:
    """Rows as left-aligned columns two spaces apart (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def serve(  # noqa: PLR0917 - Typer parameters
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8731,
    driver: Annotated[str, typer.Option(help="Runtime: oci (real) or fake (no runtime).")] = "oci",
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL (default SQLite in the data dir).")
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(help="Base URL people open (default: from each request).")
    ] = None,
    cpus: Annotated[
        float | None, typer.Option(help="CPUs environments may reserve (default: the host's).")
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option(help="Memory environments may reserve (default: host less 1 GiB).")
    ] = None,
    cpu_overcommit: Annotated[
        float, typer.Option(help="Requests may add up to this many times the CPUs.", min=0.1)
    ] = 4.0,
    memory_overcommit: Annotated[
        float, typer.Option(help="Requests may add up to this many times the memory.", min=0.1)
    ] = 1.0,
    requests: Annotated[
        Path | None,
        typer.Option(help="YAML of default requests per kind (container/desktop: {cpus: ...})."),
    ] = None,
    images_dir: Annotated[
        Path | None, typer.Option(help="The image layer store (default: <data dir>/images).")
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(help="This host's node name (GENOS_NODE): its run roots and cgroups."),
    ] = None,
    vnc_port: Annotated[
        int | None,
        typer.Option(
            help="Also listen for native VNC viewers here (a token line first).", min=1, max=65535
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate (chain): serve HTTPS and WSS (and TLS on --vnc-port)."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            help="A reverse proxy (address or network) whose X-Forwarded-For is believed; "
            "repeat for more."
        ),
    ] = None,
    etcd: Annotated[
        str | None,
        typer.Option(help="A cluster's etcd members (https://host:port,...): be a replica of it."),
    ] = None,
    pki: Annotated[
        Path | None, typer.Option(help="The cluster's certificates (<replica>.pem, ca.pem).")
    ] = None,
    replica: Annotated[
        str | None, typer.Option(help="This replica's name (its certificate's).")
    ] = None,
    placement: Annotated[
        str, typer.Option(help="spread or pack (a cluster's placement).")
    ] = "spread",
) -> None:
    """Run the API, the gateway's WebSocket path and the web client (first start: admin token)."""
    from genos.api.proxy import networks  # noqa: PLC0415 - server only
    from genos.api.serve import ClusterConfig, ServeConfig, run  # noqa: PLC0415
    from genos.orchestrator.capacity import Capacity  # noqa: PLC0415

    if driver not in {"oci", "fake"}:
        raise InputError(f"--driver must be oci or fake, got {driver!r}")
    proxies = tuple(trusted_proxy or ())
    networks(proxies)  # a bad address is refused here, in one line
    if node is not None:
        os.environ["GENOS_NODE"] = node
        node_name()  # a bad name is refused here, in one line
    if (cpus is not None and cpus <= 0) or (memory_mb is not None and memory_mb < 256):
        raise InputError("--cpus must be positive and --memory-mb at least 256")
    whole = Capacity.from_host()
    capacity = Capacity(
        cpus if cpus is not None else whole.cpus,
        memory_mb or whole.memory_mb,
        cpu_overcommit=cpu_overcommit,
        memory_overcommit=memory_overcommit,
        host_cpus=whole.host_cpus,
        host_memory_mb=whole.host_memory_mb,
    )
    config = ServeConfig(
        host=host,
        port=port,
        root=data_dir(),
        database_url=database_url,
        driver="fake" if driver == "fake" else "oci",
        public_url=public_url,
        capacity=capacity,
        requests=_requests(requests),
        images_dir=images_dir,
        vnc_port=vnc_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        trusted_proxies=proxies,
        cluster=_cluster(etcd, pki, replica, placement, ClusterConfig),
    )
    run(config)


def _cluster(
    etcd: str | None, pki: Path | None, replica: str | None, placement: str, make: Any
) -> Any:
    """The replica's cluster settings (None without ``--etcd``)."""
    if etcd is None:
        if pki is not None or replica is not None:
            raise InputError("--pki and --replica go with --etcd")
        return None
    if pki is None or replica is None:
        raise InputError("a cluster replica needs --pki and --replica")
    if placement not in {"spread", "pack"}:
        raise InputError(f"--placement must be spread or pack, got {placement!r}")
    endpoints = [e.strip() for e in etcd.split(",") if e.strip()]
    return make(etcd=endpoints, pki=pki, replica=replica, placement=placement)


def _requests(path: Path | None) -> Any:
    """The default requests with an operator's file applied (None: the defaults as they are)."""
    import yaml  # noqa: PLC0415

    from genos.orchestrator.capacity import Requests  # noqa: PLC0415

    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} must map kinds to requests (container/desktop: {{cpus: 0.02}})")
    return Requests().with_overrides(data)


def gateway(  # noqa: PLR0917 - Typer parameters
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the WebSocket paths.")] = 8732,
    vnc_port: Annotated[
        int | None, typer.Option(help="Native VNC viewers (token line first).", min=1, max=65535)
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate: HTTPS/WSS (and TLS on --vnc-port).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    driver: Annotated[str, typer.Option(help="Runtime: oci (real) or fake.")] = "oci",
    images_dir: Annotated[
        Path | None, typer.Option(help="The image layer store (default: <data dir>/images).")
    ] = None,
) -> None:
    """Run only the streaming gateway, beside a genos serve on this host (same data dir)."""
    from genos.api.serve import ServeConfig, run  # noqa: PLC0415

    if driver not in {"oci", "fake"}:
        raise InputError(f"--driver must be oci or fake, got {driver!r}")
    run(
        ServeConfig(
            host=host, port=port, root=data_dir(), driver="fake" if driver == "fake" else "oci",
            images_dir=images_dir, vnc_port=vnc_port, tls_cert=tls_cert, tls_key=tls_key,
            gateway_only=True,
        )
    )  # fmt: skip


def _spec_body(prompt: str | None, file: Path | None) -> dict[str, Any]:
    if (prompt is None) == (file is None):
        raise InputError("give a prompt or -f SPEC.yaml (one of them)")
    if file is None:
        return {"prompt": prompt}
    import yaml  # noqa: PLC0415

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {file}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{file} does not hold a spec (a mapping)")
    return {"spec": data}


def up(  # noqa: PLR0917 - Typer parameters
    prompt: Annotated[str | None, typer.Argument(help="What you need, in words.")] = None,
    file: Annotated[
        Path | None, typer.Option("-f", "--file", help="A spec file (YAML/JSON).")
    ] = None,
    answer: Annotated[
        list[str] | None, typer.Option("--answer", "-a", help="FIELD=OPTION reply to a question.")
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return once it is accepted (it keeps its place).")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for running; then it is cancelled, exit 1.")
    ] = 900.0,
    as_json: JsonOpt = False,
    show_events: Annotated[
        bool,
        typer.Option(
            "--events", help="With --json: a JSON line per event and queue move, then the result."
        ),
    ] = False,
) -> None:
    """Create an environment and wait until it runs; prints the URL where its desktop opens.

    While it waits it shows its place in the queue and the provisioning steps.
    On --timeout or Ctrl-C it cancels the environment it asked for: up leaves
    a running desktop or nothing (--no-wait leaves the request waiting).
    """
    import uuid  # noqa: PLC0415

    from genos.cli import _answers  # noqa: PLC0415 - shared parsing of --answer

    deadline = time.monotonic() + timeout
    if show_events and not as_json:
        raise InputError("--events goes with --json")
    if not timeout > 0:
        raise InputError(f"--timeout must be positive, got {timeout:g}")
    body = _spec_body(prompt, file) | {"request_id": uuid.uuid4().hex}
    if answer:
        body["answers"] = _answers(answer)
    with Client(timeout=min(30.0, timeout)) as client:
        created = client.call("POST", "/v1/environments", body)
        if "outcome" in created:
            _composer_answer(created, as_json, compact=show_events)
        env = created
        if not no_wait:
            env = _wait(client, created, (deadline, timeout), as_json=as_json, events=show_events)
        if env["state"] == "running":
            link = client.call("POST", "/v1/login-links")
            env["login_url"] = f"{env['url']}?login={link['code']}"
    if as_json:
        _print_json(env, compact=show_events)
    elif env["state"] == "running":
        print(f"{env['id']} is running: {env['summary']}")
        print(f"Open the desktop: {env['login_url']}")
    else:
        print(_env_line(env))
    if env["state"] in FINAL:
        raise typer.Exit(1)


def _composer_answer(result: dict[str, Any], as_json: bool, *, compact: bool = False) -> None:
    from genos.composer.result import EXIT_CODES  # noqa: PLC0415

    if as_json:
        _print_json(result, compact=compact)
    elif result["outcome"] == "clarify":
        for q in result["clarifications"]:
            print(f"{q['question']} ({q['field']}: {', '.join(q['options'])})", file=sys.stderr)
        print("Answer with --answer FIELD=OPTION.", file=sys.stderr)
    else:
        for v in result["violations"]:
            print(f"refused: {v['field']}: {v['reason']}", file=sys.stderr)
    raise typer.Exit(EXIT_CODES[result["outcome"]])


def _wait(
    client: Client, env: dict[str, Any], limit: tuple[float, float], *, as_json: bool, events: bool
) -> dict[str, Any]:
    """The record once ``env`` runs or ended; at the deadline or on Ctrl-C, cancel it and exit.

    ``limit`` is the deadline (monotonic clock) and the ``--timeout`` it came from.
    """
    from genos import cli_wait  # noqa: PLC0415

    if env["state"] in cli_wait.SETTLED:
        return env  # running at once (a warm pool): no stream to open
    report = cli_wait.reporter(env["id"], as_json=as_json, events=events)
    wait = cli_wait.Wait(client, env, report)
    try:
        with contextlib.closing(report), cli_wait.stopped_by_signals():
            settled = wait.until(limit[0])
        if settled:
            return dict(client.call("GET", f"/v1/environments/{env['id']}"))
        why, code, hint = f"timed out after {limit[1]:g}s", 1, " (--no-wait leaves it waiting)"
    except KeyboardInterrupt:
        why, code, hint = "interrupted", 130, ""
    except cli_wait.Stopped as stop:
        why, code, hint = f"stopped by {stop.name}", 128 + stop.signum, ""
    ended, message = cli_wait.give_up(client, wait, why, hint=hint)
    if not message:
        return ended  # it ran after all
    if as_json:
        _print_json(ended, compact=events)
    print(f"genos: {message}", file=sys.stderr)
    raise typer.Exit(code)


def ls(
    state: Annotated[list[str] | None, typer.Option(help="Only these states.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List environments (yours; an admin sees everybody's)."""
    items: list[dict[str, Any]] = []
    with Client() as client:
        cursor = None
        while True:
            page = client.call("GET", "/v1/environments", state=state, limit=500, cursor=cursor)
            items += page["items"]
            cursor = page["next"]
            if cursor is None:
                break
    if as_json:
        _print_json(items)
        return
    rows = [[e["id"], e["state"], e["summary"], str(e["created"])[:19]] for e in items]
    print(_columns([["id", "state", "what", "created"], *rows]) if items else "no environments")


def show(env_id: EnvId, as_json: JsonOpt = False) -> None:
    """One environment in detail (with CPU and memory use while it runs)."""
    with Client() as client:
        env = client.call("GET", f"/v1/environments/{env_id}")
    if as_json:
        _print_json(env)
        return
    import yaml  # noqa: PLC0415

    print(_env_line(env))
    print(f"url: {env['url']}")
    if env.get("usage"):
        u = env["usage"]
        mib = u["memory_bytes"] >> 20
        print(f"usage: cpu {u['cpu_seconds']:.1f}s, memory {mib} MiB, pids {u['pids']}")
    if env.get("tier_note"):
        print(f"note: {env['tier_note']}")
    print(yaml.safe_dump(env["spec"], sort_keys=False).rstrip())


def _verb(method: str, path: str, env_id: str, as_json: bool) -> None:
    with Client() as client:
        env = client.call(method, f"/v1/environments/{env_id}{path}")
    if as_json:
        _print_json(env)
    else:
        print(_env_line(env))


def suspend(env_id: EnvId, as_json: JsonOpt = False) -> None:
    """Freeze a running environment."""
    _verb("POST", "/suspend", env_id, as_json)


def resume(env_id: EnvId, as_json: JsonOpt = False) -> None:
    """Thaw a suspended environment."""
    _verb("POST", "/resume", env_id, as_json)


def rm(env_id: EnvId, as_json: JsonOpt = False) -> None:
    """End an environment and release everything it held."""
    _verb("DELETE", "", env_id, as_json)


def events(
    env_id: EnvId,
    follow: Annotated[bool, typer.Option(help="Keep following until it ends.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Print an environment's events (one JSON object per line with --json)."""
    with Client() as client, client.events(env_id, follow=follow) as stream:
        _print_events(stream, as_json)


def _print_events(source: Iterable[dict[str, Any]], as_json: bool) -> None:
    for ev in source:
        if as_json:
            print(json.dumps(ev), flush=True)
        else:
            when = str(ev["time"])[11:19]
            print(f"{ev['seq']:>4} {when} {ev['type']:<8} {ev['state']:<12} {ev['message']}")
        sys.stdout.flush()


def host(as_json: JsonOpt = False) -> None:
    """This host's capacity, what environments request, may use and use, the queue, and VMs."""
    with Client() as client:
        status = client.call("GET", "/v1/host")
    if as_json:
        _print_json(status)
        return
    cap, req, lim, used = status["capacity"], status["requested"], status["limits"], status["used"]
    out.print(f"host {status['host']}: {req['environments']} environments")
    out.print(f"{'':8}{'requested':>22}{'limits':>12}{'used now':>12}")
    cpu_used = "-" if used["cpus"] is None else f"{used['cpus']:.2f}"
    out.print(
        f"{'cpus':8}{req['cpus']:>10.2f} of {cap['allocatable_cpus']:<8g}"
        f"{lim['cpus']:>12g}{cpu_used:>12}   ({cap['cpus']:g} cpus x{cap['cpu_overcommit']:g})"
    )
    mem_used = "-" if used["memory_mb"] is None else str(used["memory_mb"])
    out.print(
        f"{'memory':8}{req['memory_mb']:>10} of {cap['allocatable_memory_mb']:<8}"
        f"{lim['memory_mb']:>12}{mem_used:>12}   "
        f"MB ({cap['memory_mb']} x{cap['memory_overcommit']:g})"
    )
    if status.get("memory_pressure"):
        out.print(f"memory pressure: {status['memory_pressure']}")
    out.print(f"queue  {len(status['queue'])} waiting")
    out.print(
        f"runtimes {', '.join(status['runtimes'])}; VM accelerator {status['accelerator'] or 'n/a'}"
    )


def connect(  # noqa: PLR0917 - Typer parameters
    env_id: EnvId,
    port: Annotated[int, typer.Option(help="Local port (0: any free one).", min=0, max=65535)] = 0,
    view: Annotated[bool, typer.Option("--view", help="View only: no input reaches it.")] = False,
    spice: Annotated[
        bool, typer.Option("--spice", help="SPICE (VMs with protocol spice) instead of VNC.")
    ] = False,
    rdp: Annotated[
        bool, typer.Option("--rdp", help="RDP (specs with protocol rdp) instead of VNC.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"port": P, "protocol": ...} once listening.')
    ] = False,
) -> None:
    """Open a local port for a native viewer of the environment's desktop (until Ctrl-C)."""
    import asyncio  # noqa: PLC0415

    from genos import connect as bridge  # noqa: PLC0415

    if spice and rdp:
        raise InputError("choose one of --spice and --rdp")
    protocol = "spice" if spice else "rdp" if rdp else "vnc"
    if protocol != "vnc" and view:
        raise InputError(f"--view works with VNC only ({protocol} input cannot be filtered)")
    with Client() as client:
        ready = bridge.announce(as_json, env_id, protocol)
        permission = "view" if view else "control"
        asyncio.run(
            bridge.serve(
                client, env_id, port=port, permission=permission, protocol=protocol, ready=ready
            )
        )


def register(app: typer.Typer) -> None:
    """Add these commands to the ``genos`` app."""
    for command in (serve, gateway, up, ls, show, suspend, resume, rm, events, host, connect):
        app.command(command.__name__)(command)
