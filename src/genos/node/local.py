"""A host's own driver: the real runtimes behind one router, or the demo fake.

``genos serve`` on one host and ``genos node`` on each host of a cluster
make theirs here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from genos.errors import CapabilityError
from genos.gateway.fake import FakeDisplay
from genos.runtime.driver import Driver
from genos.runtime.fake import FakeDriver, serve_tracked
from genos.spec import Tier


class DemoDriver(FakeDriver):
    """The fake driver with a real (in-process) RFB display per environment."""

    name = "fake"

    async def start(self, env_id: str, *, timeout: float = 30.0) -> None:
        """Start as the fake does, then serve a :class:`FakeDisplay` on the display socket."""
        await super().start(env_id, timeout=timeout)
        env = self.envs[env_id]
        if env.server is not None:
            env.server.close()
            await env.server.wait_closed()
        sock = self.display(env_id)
        sock.unlink(missing_ok=True)
        res = env.spec.display.resolution
        display = FakeDisplay(res.width, res.height, answer_incremental=False)
        env.server = await serve_tracked(env, display.handle, str(sock))


def local_driver(kind: str, root: Path, images_dir: Path | None = None) -> Driver:
    """This host's driver: ``fake`` (:class:`DemoDriver`), or ``oci``: OCI for containers
    and QEMU (where it is installed) for VMs, behind one :class:`TierRouter`.

    Raises:
        CapabilityError: the real runtime without root.
    """
    if kind == "fake":
        return DemoDriver(root / "fake-displays")
    from genos.runtime.images import ImageStore  # noqa: PLC0415 - the real runtime only when asked
    from genos.runtime.oci.driver import OCIDriver  # noqa: PLC0415
    from genos.runtime.router import TierRouter  # noqa: PLC0415
    from genos.sandbox.network import NetworkSandbox  # noqa: PLC0415

    if os.geteuid() != 0:
        raise CapabilityError("the oci driver needs root (or use --driver fake)")
    images = ImageStore(images_dir or root / "images")
    network = NetworkSandbox()
    oci = OCIDriver(images, network=network, data_root=root)
    routes: dict[Tier, Driver] = {Tier.CONTAINER: oci, Tier.GVISOR: oci}
    if shutil.which("qemu-system-x86_64"):
        from genos.runtime.qemu.driver import QemuDriver  # noqa: PLC0415

        qemu = QemuDriver(images, network=network, data_root=root)
        routes |= {Tier.VM: qemu, Tier.MICROVM: qemu}
    return TierRouter(routes)


def run_roots() -> tuple[Path, Path]:
    """This node's run roots, one per runtime: ``/run/genos`` and ``/run/genos-qemu`` (with
    ``-<node>`` for a named node); each environment has a directory under one of them."""
    from genos.runtime.oci.driver import default_run_root  # noqa: PLC0415
    from genos.runtime.qemu import host as qemuhost  # noqa: PLC0415

    return default_run_root(), qemuhost.default_run_root()


async def leave_host(driver: Driver) -> bool:
    """Remove a named node's empty run roots and parent cgroups when it holds nothing any more.

    The one-host default keeps its ``/run/genos`` (shared with nothing, made again at once).

    Returns:
        Whether there was nothing left and the node's traces are gone.
    """
    from genos.paths import node_name  # noqa: PLC0415
    from genos.runtime.qemu import host as qemuhost  # noqa: PLC0415
    from genos.sandbox import cgroups  # noqa: PLC0415

    if not node_name() or await driver.list_ids():
        return False
    for root in run_roots():
        shutil.rmtree(root, ignore_errors=True)
    cgroups.remove_parent()
    qemuhost.remove_parent()
    return True
