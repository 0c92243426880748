"""QEMU's command line for the two tiers, and the wrapper that runs it unprivileged.

``microvm``: ``-M microvm`` with ACPI (so the guest finds its virtio-mmio
devices and has a power button) and only virtio-mmio devices, in modern mode
(``force-legacy=false``: virtio-gpu and virtio-input have no legacy form).
``vm``: ``-M q35`` with virtio PCI devices and ``virtio-vga``, booted by
SeaBIOS through QEMU's linuxboot option ROM. Both boot the image's kernel
directly; the serial console goes to the environment's log file.

The display is QEMU's own VNC server (and SPICE for ``protocol: spice`` on
``vm``) on unix sockets, showing the guest's virtio GPU where Xorg runs; the
keyboard and tablet it feeds are virtio-input devices. Chosen over an Xvnc
in the guest bridged through vsock or virtio-serial because it needs no
proxy process on the host, survives viewers reconnecting, and is the same
for both tiers. SPICE's agent channel (the clipboard) is there only when the
spec allows a clipboard both ways (:func:`genos.runtime.qemu.guest.spice_agent`);
the pointer never goes through the agent (``agent-mouse=off``: it stays on
the tablet, and GenOS's guest has no input device for the agent to drive),
and the agent's file transfer is off.

A ``vm`` booting a user image (``base.image``) has no kernel or agent of
ours and devices any OS drives without extra drivers: its disk (and an ISO
as a CD-ROM, booted first) on q35's AHCI controller, standard VGA, the PS/2
keyboard, a USB tablet, an ``e1000e`` NIC; it may reboot (an installer
does), so ``-no-reboot`` is left out. See :func:`user_disks`.

QEMU runs under the wrapper of :mod:`genos.runtime.qemu.user`: in the
environment's network namespace, as its own user, with what it needs handed
over (the tap and a user image as descriptors, KVM as a device node of its own).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from genos.runtime.qemu.accel import QEMU, Accelerator
from genos.runtime.qemu.guest import AGENT_PORT, FW_CFG_NAME, SPICE_PORT
from genos.runtime.qemu.host import VmPaths

SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
TCG_TB_MB = 128  # TCG's translation cache (QEMU's default is 1 GiB of host memory)
KERNEL_ARGS = "console=ttyS0 root=/dev/vda quiet panic=-1"


@dataclass(frozen=True)
class Machine:
    """What the command line is built from (all of it is in the VM's record)."""

    tier: str
    accel: Accelerator
    memory_mb: int
    cpus: float
    width: int
    height: int
    kernel: str
    initrd: str
    nic: bool
    spice: bool
    mac: str
    spice_agent: bool = False  # SPICE's agent channel (qemuguest.spice_agent)
    image: str = ""  # a user image's file (no kernel, no agent); "": GenOS's own image
    image_format: str = ""  # the user image's format: qcow2 or iso


def smp(cpus: float) -> int:
    """Virtual CPUs for a spec's ``cpus`` (the cgroup quota enforces fractions)."""
    return max(1, min(math.ceil(cpus), os.cpu_count() or 1))


def qemu_argv(
    machine: Machine,
    paths: VmPaths,
    *,
    incoming: bool = False,
    image_fd: int | None = None,
    tap_fd: int | None = None,
) -> list[str]:
    """The full QEMU command line of a VM.

    Args:
        machine: the VM's settings.
        paths: its host paths.
        incoming: start paused, waiting for a saved state (``migrate-incoming``).
        image_fd: for a user image, the descriptor QEMU inherits it as (read-only).
        tap_fd: for a VM with a NIC, the tap queue QEMU inherits (it opens no device).

    Returns:
        argv, starting with ``qemu-system-x86_64``.
    """
    micro = machine.tier == "microvm"
    bus = "device" if micro else "pci"
    own = not machine.image
    argv = [QEMU, "-name", f"genos-{paths.env_id}", "-nodefaults", "-no-user-config",
            "-display", "none", *(["-no-reboot"] if own else []), "-sandbox", SANDBOX,
            *_accel(machine.accel), "-m", str(machine.memory_mb),
            "-smp", str(smp(machine.cpus))]  # fmt: skip
    if own:
        argv += ["-kernel", machine.kernel, "-initrd", machine.initrd,
                 "-append", kernel_args(machine),
                 "-drive", f"id=root,file={paths.disk},format=qcow2,if=none,discard=unmap",
                 "-device", f"virtio-blk-{bus},drive=root"]  # fmt: skip
    else:
        argv += user_disks(machine, paths, image_fd)
    argv += ["-vnc", f"unix:{paths.vnc}"]
    if own:
        argv += ["-device", f"virtio-keyboard-{bus}", "-device", f"virtio-tablet-{bus}",
                 "-device", f"virtio-serial-{bus}",
                 "-chardev", f"socket,id=agent,path={paths.agent},server=on,wait=off",
                 "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}"]  # fmt: skip
    else:  # the PS/2 keyboard is built into q35; a USB tablet points without a driver of ours
        argv += ["-device", "qemu-xhci,id=uxhci", "-device", "usb-tablet,bus=uxhci.0"]
    argv += ["-chardev", f"file,id=console,path={paths.console}", "-serial", "chardev:console"]
    if own:
        argv += ["-fw_cfg", f"name={FW_CFG_NAME},file={paths.guest_cfg}"]
    argv += ["-qmp", f"unix:{paths.qmp},server=on,wait=off"]
    size = f"xres={machine.width},yres={machine.height}"
    if micro:
        argv += ["-M", "microvm,acpi=on,rtc=on,isa-serial=on,x-option-roms=off",
                 "-global", "virtio-mmio.force-legacy=false",
                 "-device", f"virtio-gpu-device,{size}"]  # fmt: skip
    else:
        argv += ["-M", "q35", "-device", f"{'virtio-vga' if own else 'VGA'},{size}"]
        if machine.spice:
            argv += spice_argv(paths.spice, agent=machine.spice_agent)
    if machine.nic:
        if tap_fd is None:
            raise ValueError("a VM with a NIC needs its tap's descriptor")
        model = f"virtio-net-{bus}" if own else "e1000e"
        argv += ["-netdev", f"tap,id=net0,fd={tap_fd}",
                 "-device", f"{model},netdev=net0,mac={machine.mac}"]  # fmt: skip
    if incoming:
        argv += ["-S", "-incoming", "defer"]
    return argv


def user_disks(machine: Machine, paths: VmPaths, image_fd: int | None) -> list[str]:
    """The drives of a VM booting a user image, on q35's built-in AHCI controller.

    The image comes in as an inherited descriptor (``-add-fd``), read-only,
    with its format named; a qcow2 image is the explicit backing node of the
    VM's overlay (so QEMU never opens the path written in the overlay's
    header), an ISO is a CD-ROM booted first, beside the VM's blank disk.

    Raises:
        ValueError: no descriptor for the image.
    """
    if image_fd is None:
        raise ValueError("a user image VM needs the image's descriptor")
    iso = machine.image_format == "iso"
    argv = ["-add-fd", f"fd={image_fd},set=1,opaque=user-image",
            "-blockdev", "driver=file,node-name=image-file,filename=/dev/fdset/1,read-only=on",
            "-blockdev", f"driver={'raw' if iso else 'qcow2'},node-name=image,file=image-file,"
            "read-only=on",
            "-blockdev", f"driver=file,node-name=disk-file,filename={paths.disk},discard=unmap",
            "-blockdev", "driver=qcow2,node-name=disk,file=disk-file,discard=unmap"
            + ("" if iso else ",backing=image")]  # fmt: skip
    if iso:
        return [*argv, "-device", "ide-cd,drive=image,bus=ide.1,bootindex=0",
                "-device", "ide-hd,drive=disk,bus=ide.0,bootindex=1"]  # fmt: skip
    return [*argv, "-device", "ide-hd,drive=disk,bus=ide.0,bootindex=0"]


def spice_argv(socket: Path, *, agent: bool) -> list[str]:
    """QEMU's SPICE server on a unix socket, with audio and USB redirection channels,
    and the agent's channel (the clipboard, no file transfer) when ``agent``."""
    argv = ["-spice", f"unix=on,addr={socket},disable-ticketing=on,agent-mouse=off,"
            "disable-agent-file-xfer=on",
            "-audiodev", "spice,id=snd0", "-device", "ich9-intel-hda",
            "-device", "hda-output,audiodev=snd0",
            "-device", "qemu-xhci,id=xhci",
            "-chardev", "spicevmc,id=usbredir0,name=usbredir",
            "-device", "usb-redir,chardev=usbredir0,bus=xhci.0"]  # fmt: skip
    if agent:
        argv += ["-chardev", "spicevmc,id=vdagent,name=vdagent",
                 "-device", f"virtserialport,chardev=vdagent,name={SPICE_PORT}"]  # fmt: skip
    return argv


def kernel_args(machine: Machine) -> str:
    """The guest kernel's command line.

    A microVM has no HPET and no ACPI PM timer, so the kernel calibrates its
    TSC against the PIT alone, which fails now and then under TCG on a busy
    host and leaves the guest hanging before its first message. Under TCG the
    guest's TSC is the host's, so its frequency is known: it is passed in.
    """
    khz = host_tsc_khz() if machine.accel == "tcg" and machine.tier == "microvm" else None
    return KERNEL_ARGS + (f" tsc_early_khz={khz} tsc=reliable" if khz else "")


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The host's TSC frequency in kHz, when its TSC is constant (else None)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    if " constant_tsc" not in text:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            return round(float(value) * 1000)
    return None


def _accel(accel: Accelerator) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", f"tcg,tb-size={TCG_TB_MB}", "-cpu", "max"]


def mac_for(env_id: str) -> str:
    """A stable, locally administered MAC for the VM's NIC."""
    digits = hashlib.sha256(env_id.encode()).hexdigest()[:8]
    pairs = [digits[i : i + 2] for i in range(0, 8, 2)]
    return "52:54:" + ":".join(pairs)
