"""``genos node run``: this host's runtime, agent and display relay, until SIGTERM or SIGINT.

The node's name is its identity everywhere: the etcd record, the
certificate ``<pki>/<name>.pem`` (role ``node``), and ``GENOS_NODE``, which
scopes its run roots and cgroups (:mod:`genos.paths`), so several nodes can
share a machine. On SIGTERM it leaves at once (its record goes with its
lease) and stops; its environments keep running, and whatever is not
assigned to it any more when it comes back is fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from genos.cluster.etcd import EtcdClient, close
from genos.cluster.pki import Identity
from genos.cluster.store import ClusterStore
from genos.errors import GenOSError, InputError
from genos.node.agent import NodeAgent
from genos.node.local import leave_host, local_driver
from genos.node.relay import Relay
from genos.orchestrator.capacity import Capacity
from genos.paths import NODE_NAME
from genos.runtime.volumes import VolumeStore

log = logging.getLogger("genos.node")


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``genos node run`` is told."""

    name: str
    etcd: list[str]
    pki: Path
    root: Path
    relay_host: str = "127.0.0.1"
    relay_port: int = 0
    driver: str = "oci"
    images_dir: Path | None = None
    capacity: Capacity | None = None

    def identity(self) -> Identity:
        """This node's certificate files.

        Raises:
            InputError: they are not there.
        """
        found = Identity(self.pki / f"{self.name}.pem", self.pki / f"{self.name}.key",
                         self.pki / "ca.pem")  # fmt: skip
        for path in (found.cert, found.key, found.ca):
            if not path.is_file():
                raise InputError(f"no {path}: issue this node's certificate first")
        return found


async def run_node(config: NodeConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run the node until SIGTERM/SIGINT.

    Raises:
        InputError: a bad name or missing certificates.
        ConflictError: another live node has this name.
        ClusterUnavailableError: etcd cannot be reached.
    """
    if not NODE_NAME.fullmatch(config.name):
        raise InputError(f"bad node name {config.name[:40]!r}")
    os.environ["GENOS_NODE"] = config.name
    identity = config.identity()
    config.root.mkdir(parents=True, exist_ok=True)
    config.root.chmod(0o711)  # QEMU's own user passes through to its VMs' files
    driver = local_driver(config.driver, config.root, config.images_dir)
    volumes = VolumeStore(config.root / "volumes")  # where the OCI driver keeps them
    relay = Relay(driver, identity, config.relay_host, config.relay_port, volumes)
    client = EtcdClient(config.etcd, identity)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await relay.start()
        agent = NodeAgent(config.name, ClusterStore(client), driver,
                          config.capacity or Capacity.from_host(),
                          f"{config.relay_host}:{relay.port}")  # fmt: skip
        running = asyncio.create_task(agent.run(stop))
        if ready is not None:
            await asyncio.wait({running, asyncio.create_task(agent.ready.wait())},
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            ready.set()
        await running
        await agent.leave()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await relay.aclose()
        with contextlib.suppress(GenOSError, OSError):
            await leave_host(driver)
        with contextlib.suppress(GenOSError):
            await driver.aclose()
        await close(client)
