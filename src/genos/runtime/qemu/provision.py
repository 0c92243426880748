"""Provisioning a VM: the steps of ``create``, in order.

- ``dirs``: a uid for QEMU, the run and data dirs, ``env.json`` (so a
  rollback or a later destroy finds everything);
- ``image``: the spec's layers plus the VM packages (and SPICE's agent, when
  the spec wants it), then the boot files;
- ``disk``: the VM's qcow2 overlay;
- ``network``: unless mode ``none``, the sandbox's namespace and a tap bridged there;
- ``guest``: the fw_cfg settings file and the final record.

With ``base.image`` (a user image) the image is looked up first (an unknown
name fails before anything is made), claimed for this environment after
``dirs``, and ``image``, ``disk`` and ``guest`` become one step: an overlay
on the image's qcow2 (backing format explicit), or a blank qcow2 of
``resources.disk_mb`` beside its ISO. Nothing of GenOS goes into the guest.

The caller rolls back with :func:`genos.runtime.qemu.stop.release` on failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from genos.errors import CapabilityError
from genos.runtime.images import ImageStore
from genos.runtime.qemu import host as qemuhost
from genos.runtime.qemu.accel import QEMU, Accelerator
from genos.runtime.qemu.cmd import Machine, mac_for
from genos.runtime.qemu.guest import guest_config, spice_agent
from genos.runtime.qemu.host import VmPaths
from genos.runtime.qemu.image import BootFiles, ensure_boot_files, vm_spec
from genos.runtime.userimages import UserImage, UserImages
from genos.sandbox.network import NetHandle, NetworkSandbox
from genos.spec import EnvironmentSpec, NetworkMode, Protocol, Tier

VM_TIERS = (Tier.MICROVM, Tier.VM)
TOOLS = (QEMU, "qemu-img", "nsenter", "unshare", "setpriv", "mkfs.ext4", "ip")


class Provision:
    """One VM's ``create`` (see the module docstring).

    Args:
        paths: the VM's host paths.
        spec: what to provision.
        accel: the accelerator it will run on.
        memory_mb: guest memory (the spec's, capped by the driver).
        images: the layer store.
        cache_dir: where VM images are cached.
        run_root: the driver's run root (uid slots live there).
        network: makes the network sandbox (asked unless the mode is ``none``).
        user_images: the registry ``base.image`` names an image of.
    """

    def __init__(
        self,
        paths: VmPaths,
        spec: EnvironmentSpec,
        *,
        accel: Accelerator,
        memory_mb: int,
        images: ImageStore,
        cache_dir: Path,
        run_root: Path,
        network: Callable[[], NetworkSandbox],
        user_images: UserImages,
    ) -> None:
        self.paths, self.spec, self.accel, self.memory_mb = paths, spec, accel, memory_mb
        self.images, self.cache_dir, self.run_root = images, cache_dir, run_root
        self.network, self.user_images = network, user_images
        self.env_id = paths.env_id
        self.record: dict[str, Any] = {
            "env_id": self.env_id,
            "tier": spec.tier.value,
            "accel": accel,
            "phase": "creating",
            "pid": None,
        }

    async def run(self) -> None:
        """Every step, in order.

        Raises:
            CapabilityError: not a VM tier, or a host tool is missing.
            NotFoundError: ``base.image`` names no registered image.
            GenOSError: a step failed (the caller releases what was made).
        """
        _check_host(self.spec)
        name = self.spec.base.image
        if name is not None:
            self.user_images.get(name)
        for place in (self.paths.data.parent, self.cache_dir, self.run_root):
            _check_reachable(place)
        uid = self._make_dirs()
        boot: BootFiles | UserImage
        if name is not None:
            boot = await self._user_disk(name, uid)
        else:
            boot = await self._own_disk(uid)
        address, handle = await self._network()
        if name is None:
            self._write_guest_config(uid, address, handle)
        self.record["machine"] = asdict(self._machine(boot, nic=handle is not None))
        self.record["phase"] = "created"
        qemuhost.write_record(self.paths, self.record)

    async def _own_disk(self, uid: int) -> BootFiles:
        layers = await asyncio.to_thread(self.images.ensure, vm_spec(self.spec))
        boot = await asyncio.to_thread(ensure_boot_files, self.cache_dir, layers)
        self.record["image"] = boot.key
        await asyncio.to_thread(qemuhost.create_overlay, boot.root, self.paths.disk, uid)
        return boot

    async def _user_disk(self, name: str, uid: int) -> UserImage:
        # Claimed once the dirs exist: `genos images rm` sees the claim as long as they do.
        image = self.user_images.claim(name, self.env_id, (self.paths.root, self.paths.data))
        self.record["user_image"] = {"name": name, "digest": image.digest,
                                     "format": image.format}  # fmt: skip
        if image.format == "qcow2":
            await asyncio.to_thread(qemuhost.create_overlay, image.path, self.paths.disk, uid,
                                    "qcow2")  # fmt: skip
        else:
            disk_mb = self.spec.resources.disk_mb
            await asyncio.to_thread(qemuhost.create_blank, self.paths.disk, disk_mb, uid)
        return image

    def _make_dirs(self) -> int:
        self.run_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        uid = qemuhost.claim_uid(self.env_id)
        self.record["uid"] = uid
        qemuhost.make_dirs(self.paths, uid)
        qemuhost.write_record(self.paths, self.record)
        return uid

    async def _network(self) -> tuple[str | None, NetHandle | None]:
        net = self.spec.network
        if net.mode is NetworkMode.NONE:
            return None, None
        sandbox = self.network()
        # Recorded first, so a failure half-way still tears the namespace down.
        self.record["netns"] = f"genos-{self.env_id}"
        qemuhost.write_record(self.paths, self.record)
        handle = await asyncio.to_thread(sandbox.setup, self.env_id, net, name=self.spec.name)
        self.record["netns"] = handle.netns
        address = await asyncio.to_thread(qemuhost.plumb_tap, handle.netns)
        return address, handle

    def _write_guest_config(self, uid: int, address: str | None, net: NetHandle | None) -> None:
        text = guest_config(
            self.spec,
            address=address,
            gateway=net.gateway if net else None,
            dns=net.dns if net else (),
            hosts=net.hosts if net else (),
        )
        path = self.paths.guest_cfg
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chown(path, uid, uid)

    def _machine(self, boot: BootFiles | UserImage, *, nic: bool) -> Machine:
        display = self.spec.display
        if isinstance(boot, BootFiles):
            kernel, initrd, image, image_format = str(boot.kernel), str(boot.initrd), "", ""
        else:
            kernel, initrd, image, image_format = "", "", str(boot.path), boot.format
        return Machine(
            tier=self.spec.tier.value,
            accel=self.accel,
            memory_mb=self.memory_mb,
            cpus=self.spec.resources.cpus,
            width=display.resolution.width,
            height=display.resolution.height,
            kernel=kernel,
            initrd=initrd,
            nic=nic,
            spice=display.protocol is Protocol.SPICE and self.spec.tier is Tier.VM,
            mac=mac_for(self.env_id),
            spice_agent=spice_agent(self.spec),
            image=image,
            image_format=image_format,
        )


def _check_host(spec: EnvironmentSpec) -> None:
    if spec.tier not in VM_TIERS:
        raise CapabilityError(f"the QEMU driver runs tiers vm and microvm, not {spec.tier.value}")
    if os.geteuid() != 0:
        raise CapabilityError("the QEMU driver needs root (it drops QEMU to its own user)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise CapabilityError(f"missing host tools for VMs: {', '.join(missing)}")


def _check_reachable(path: Path) -> None:
    """QEMU's own user must be able to pass through every parent of its files."""
    for parent in path.absolute().parents:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise CapabilityError(
                f"{parent} (above {path}) is closed to other users; QEMU runs as its own"
                " user and cannot reach its files there"
            )
