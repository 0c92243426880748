"""``genos serve``: the engine, the API, the gateway's WebSocket path and the web client.

On first start it creates the ``admin`` account, prints its API token once
and keeps it in ``<data dir>/api/admin.token`` (0600) for the local CLI.
``--tls-cert``/``--tls-key`` make it HTTPS and WSS (uvicorn's TLS; both
files are checked before anything starts), ``--trusted-proxy`` names the
reverse proxies whose ``X-Forwarded-For`` counts (:mod:`genos.api.proxy`).
``--driver fake`` runs without a runtime (an in-process RFB display per
environment) for trying the API and the web client and for benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import uvicorn

from genos.api.app import create_app
from genos.api.service import Service
from genos.errors import GenOSError, InputError, NotFoundError
from genos.gateway.metrics import REGISTRY
from genos.gateway.server import serve_tcp, token_preamble
from genos.gateway.session import ProxyOptions
from genos.gateway.tokens import TokenAuthority
from genos.node.local import local_driver
from genos.orchestrator.capacity import Capacity, Requests
from genos.orchestrator.engine import Engine
from genos.orchestrator.registry import Registry
from genos.orchestrator.states import State
from genos.runtime.driver import Driver
from genos.spec import EnvironmentSpec, Tier

log = logging.getLogger("genos.api.serve")
GC_THRESHOLDS = (20_000, 20, 50)  # gen0 allocations; gen0 runs per gen1; gen1 runs per gen2
DriverName = Literal["oci", "fake"]


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``genos serve`` is told."""

    host: str = "127.0.0.1"
    port: int = 8731
    root: Path = Path("/var/lib/genos")
    database_url: str | None = None
    driver: DriverName = "oci"
    public_url: str | None = None
    web_dir: Path | None = None
    capacity: Capacity | None = None
    requests: Requests | None = None  # what each environment reserves (None: the defaults)
    images_dir: Path | None = None
    vnc_port: int | None = None  # the native RFB listener (viewers send a token line first)
    tls_cert: Path | None = None  # with tls_key: HTTPS and WSS (and TLS on vnc_port)
    tls_key: Path | None = None
    trusted_proxies: tuple[str, ...] = ()  # addresses/networks whose X-Forwarded-For counts
    gateway_only: bool = False  # `genos gateway`: display paths only, beside a `genos serve`
    cluster: ClusterConfig | None = None  # a replica of a cluster's control plane


@dataclass(frozen=True)
class ClusterConfig:
    """How a ``genos serve`` replica joins its cluster."""

    etcd: list[str]
    pki: Path  # the cluster's certificates: <replica>.pem/.key (control-plane), ca.pem
    replica: str
    placement: str = "spread"


def make_driver(config: ServeConfig) -> Driver:
    """The runtime driver ``config`` names: the fake, or OCI for containers and QEMU for VMs."""
    return local_driver(config.driver, config.root, config.images_dir)


async def build(config: ServeConfig) -> Service:
    """Open the registry, make the driver and the engine, and wrap them in a :class:`Service`."""
    # Traversable, not listable: QEMU runs as its own user and must reach its
    # VM's files below; everything secret inside is 0600/0700 itself.
    config.root.mkdir(parents=True, exist_ok=True)
    config.root.chmod(0o711)
    registry = await Registry.open(config.database_url)  # None: GENOS_DATABASE_URL or SQLite
    if config.cluster is not None:
        return await _cluster_replica(config, config.cluster, registry)
    driver = make_driver(config)
    engine = Engine(
        registry,
        driver,
        config.capacity,
        requests=config.requests,
        presence=viewer_connected,
        host_name=socket.gethostname(),
    )
    gateway = TokenAuthority.from_data_dir(config.root)
    service = Service(engine, config.root, gateway, public_url=config.public_url)
    _probe_accelerator(service, driver)
    return service


async def _cluster_replica(
    config: ServeConfig, cluster: ClusterConfig, registry: Registry
) -> Service:
    """A control-plane replica: the cluster's driver and placement, leadership, one gateway key."""
    from genos.cluster.control import ControlPlane  # noqa: PLC0415 - cluster parts only here
    from genos.cluster.driver import ClusterDriver  # noqa: PLC0415
    from genos.cluster.etcd import EtcdClient  # noqa: PLC0415
    from genos.cluster.pki import Identity  # noqa: PLC0415
    from genos.cluster.store import ClusterStore  # noqa: PLC0415

    identity = Identity(cluster.pki / f"{cluster.replica}.pem",
                        cluster.pki / f"{cluster.replica}.key", cluster.pki / "ca.pem")  # fmt: skip
    for path in (identity.cert, identity.key, identity.ca):
        if not path.is_file():
            raise InputError(f"no {path}: issue this replica's certificate first")
    store = ClusterStore(EtcdClient(cluster.etcd, identity))
    driver = ClusterDriver(store, identity)
    engine = Engine(
        registry, driver, config.capacity or Capacity(cpus=1, memory_mb=256),
        requests=config.requests, presence=viewer_connected, host_name=cluster.replica,
        event_poll=0.25,
    )  # fmt: skip
    plane = ControlPlane(engine, store, driver, cluster.replica, cluster.placement)  # type: ignore[arg-type]
    # One key for display tokens across replicas: a viewer may reach any of them.
    gateway = TokenAuthority.from_data_dir(cluster.pki)
    service = Service(engine, config.root, gateway, public_url=config.public_url)
    service.cluster = plane
    plane.drainer.audit = service.audit_log.append  # what a drain does is audited
    return service


def viewer_connected(env_id: str) -> bool:
    """Whether a viewer is connected to ``env_id`` through this process's gateway now."""
    return REGISTRY.watching(env_id)


def _probe_accelerator(service: Service, driver: Driver) -> None:
    """Find out in the background whether VMs get KVM or TCG (the probe boots a tiny guest)."""
    vms = getattr(driver, "by_tier", {}).get(Tier.VM)
    if vms is None or not hasattr(vms, "accelerator"):
        return

    def probe() -> None:
        service.accelerator = str(vms.accelerator)
        log.info("virtual machines run on %s", service.accelerator)

    asyncio.get_running_loop().run_in_executor(None, probe)


async def serve(config: ServeConfig, *, announce: bool = True) -> None:
    """Run the server until SIGINT/SIGTERM; the engine and registry are closed on the way out."""
    if not 0 < config.port < 65536:
        raise InputError(f"port {config.port} is out of range")
    _tls(config.tls_cert, config.tls_key)  # a bad certificate or key fails here, in one line
    _check_bind(config.host, config.port)
    if config.vnc_port is not None:
        _check_bind(config.host, config.vnc_port)
    service = await build(config)
    native: asyncio.Server | None = None
    try:
        if not config.gateway_only:
            token = await service.bootstrap_admin()
            if token is not None and announce:
                _announce(service, token)
        native = await _native_listener(service, config)
        app = create_app(
            service,
            web_dir=config.web_dir,
            manage=True,
            gateway_only=config.gateway_only,
            trusted_proxies=config.trusted_proxies,
        )
        gc.collect()
        gc.freeze()  # start-up's objects live as long as the server: never scan them again
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_level="warning",
                ws="websockets-sansio",
                lifespan="on",
                proxy_headers=False,  # X-Forwarded-For: only from --trusted-proxy (create_app)
                ssl_certfile=config.tls_cert,
                ssl_keyfile=config.tls_key,
            )
        )
        await server.serve()
    finally:
        if native is not None:
            native.close()
            await native.wait_closed()
        driver = service.engine.driver
        with contextlib.suppress(GenOSError):
            await driver.aclose()
        await service.engine.registry.aclose()


async def _native_listener(service: Service, config: ServeConfig) -> asyncio.Server | None:
    """The TCP listener for native VNC viewers (``--vnc-port``), TLS with ``--tls-cert/--tls-key``.

    A viewer first sends one line ``GENOS <env_id> <display token>``; the
    gateway checks it, then speaks RFB as on the WebSocket path.
    """
    if config.vnc_port is None:
        return None
    engine = service.engine

    async def resolve(env_id: str) -> Path:
        env = await engine.get(env_id)
        if env.state is not State.RUNNING:
            raise NotFoundError("running environment", env_id)
        return engine.driver.display(env_id)

    async def security(env_id: str) -> EnvironmentSpec:
        return (await engine.get(env_id)).spec

    context = _tls(config.tls_cert, config.tls_key)
    options = ProxyOptions(recordings=service.root / "recordings")
    authorize = token_preamble(service.gateway, security)
    return await serve_tcp(
        config.host, config.vnc_port, resolve, authorize, ssl=context, options=options
    )


def _tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server's TLS context from ``--tls-cert``/``--tls-key`` (None without them).

    Raises:
        InputError: only one of the two, a file missing or unreadable, not
            PEM, or a key that does not belong to the certificate.
    """
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise InputError("TLS needs both --tls-cert and --tls-key")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise InputError(f"cannot read {option} {path}: {exc.strerror or exc}") from exc
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = "the key does not match the certificate" if "MISMATCH" in str(exc) else (
            f"not a PEM certificate and its key ({exc.reason or exc})"
        )  # fmt: skip
        raise InputError(f"cannot use --tls-cert {cert} with --tls-key {key}: {reason}") from exc
    except OSError as exc:
        raise InputError(f"cannot load the TLS certificate or key: {exc}") from exc
    return context


def _check_bind(host: str, port: int) -> None:
    """Fail early, in one line, when the address cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _announce(service: Service, token: str) -> None:
    lines = (
        "GenOS: first start; created the user 'admin'.",
        f"Admin API token (shown once; the local CLI reads {service.admin_token_path}):",
        f"  {token}",
    )
    print("\n".join(lines), file=sys.stderr, flush=True)


def run(config: ServeConfig) -> None:
    """Blocking entry point for the CLI."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # A long-lived server with many live objects: the default collector
    # thresholds make full collections frequent and each one a pause of every
    # request in flight (p99 creates: 130 ms -> 70 ms). Young garbage is still
    # collected often; the objects made at start-up are frozen out of it.
    gc.set_threshold(*GC_THRESHOLDS)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
