"""Which accelerator QEMU gets here: KVM only when a guest really makes progress under it.

``/dev/kvm`` existing proves little: in nested set-ups KVM guests may run a
few instructions and then hang, or QEMU may abort setting MSRs. So the probe
boots a 64 KiB firmware of our own (:func:`probe_firmware`) that writes
``K`` to the first serial port in an endless, delayed loop, and requires
:data:`PROBE_BYTES` of them within the timeout; anything less (or an error)
means TCG. The probe runs the way every VM does (:mod:`genos.runtime.qemu.user`:
its own network namespace, an unprivileged uid of its own, ``/dev/kvm`` as a
device node made for that uid), so it says whether KVM works for QEMU as
GenOS runs it, not for root. The answer is cached for the life of the process.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Literal

from genos.runtime.qemu.host import QEMU_UID_BASE
from genos.runtime.qemu.user import KVM_DEVICE, wrapper
from genos.sandbox.idmap import MAX_SLOTS

logger = logging.getLogger("genos.runtime.qemu")

Accelerator = Literal["kvm", "tcg"]
QEMU = "qemu-system-x86_64"
# One past the VMs' uid range (QEMU_UID_BASE + slot): the probe's own, never a VM's.
PROBE_UID = QEMU_UID_BASE + MAX_SLOTS
PROBE_BYTES = 2048
_FIRMWARE_SIZE = 65536
# Real mode at 0xF000:0000: mov dx,0x3f8; l: mov al,'K'; out dx,al;
# mov cx,0x4000; loop $; jmp l
_LOOP = bytes([0xBA, 0xF8, 0x03, 0xB0, 0x4B, 0xEE, 0xB9, 0x00, 0x40, 0xE2, 0xFE, 0xEB, 0xF6])


def probe_firmware() -> bytes:
    """A 64 KiB BIOS image whose reset vector jumps to the serial-writing loop."""
    image = bytearray(b"\xf4" * _FIRMWARE_SIZE)  # hlt everywhere else
    image[: len(_LOOP)] = _LOOP
    rel = (0x0000 - (0xFFF0 + 3)) & 0xFFFF  # near jmp from the reset vector to offset 0
    image[0xFFF0:0xFFF3] = bytes([0xE9, rel & 0xFF, rel >> 8])
    return bytes(image)


def guest_progress(accel: Accelerator, timeout: float) -> int:
    """How many bytes the probe firmware wrote under ``accel`` (stops at :data:`PROBE_BYTES`).

    Args:
        accel: ``kvm`` or ``tcg``.
        timeout: seconds to let the guest run.

    Returns:
        The bytes seen on the serial port (0 if QEMU could not start).
    """
    if shutil.which(QEMU) is None:
        return 0
    with tempfile.TemporaryDirectory(prefix="genos-kvm-probe-") as tmp:
        Path(tmp).chmod(0o711)  # QEMU's user passes through to its own dir
        work = Path(tmp) / "work"  # QEMU's: the firmware it reads, the serial file it writes
        work.mkdir(mode=0o700)
        firmware, out = work / "probe.bin", work / "serial.out"
        firmware.write_bytes(probe_firmware())
        for path in (work, firmware):
            os.chown(path, PROBE_UID, PROBE_UID)
        scratch = Path(tmp) / "kvm" if accel == "kvm" else None
        if scratch is not None:
            scratch.mkdir(mode=0o700)
        argv = [*wrapper(PROBE_UID, None, kvm_scratch=scratch),
                QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-M", "pc",
                "-accel", accel, "-bios", str(firmware), "-m", "16",
                "-chardev", f"file,id=s,path={out}", "-device", "isa-serial,chardev=s"]  # fmt: skip
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            return 0
        try:
            return _watch(proc, out, timeout)
        finally:
            proc.kill()
            proc.wait()


def _watch(proc: subprocess.Popen[bytes], out: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        seen = out.stat().st_size if out.exists() else 0
        if seen >= PROBE_BYTES:
            return seen
        time.sleep(0.02)
    return out.stat().st_size if out.exists() else seen


def probe_kvm(timeout: float = 3.0) -> bool:
    """Whether KVM guests really run on this host (``genos host`` shows it).

    Args:
        timeout: seconds the probe guest gets to show progress.

    Returns:
        True if ``/dev/kvm`` exists and the probe guest, run as VMs are, kept running under it.
    """
    if not KVM_DEVICE.is_char_device():
        return False
    seen = guest_progress("kvm", timeout)
    logger.info("KVM probe: %d of %d bytes from the guest", seen, PROBE_BYTES)
    return seen >= PROBE_BYTES


@cache
def accelerator() -> Accelerator:
    """``kvm`` when :func:`probe_kvm` says so, else ``tcg`` (probed once per process)."""
    return "kvm" if probe_kvm() else "tcg"
