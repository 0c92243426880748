"""What a user's disk image file is, checked before GenOS keeps or boots it.

Two formats are accepted, each recognised by its own bytes and never by a
probe: an ISO 9660 image (``CD001`` at byte 32769, the primary volume
descriptor of ECMA-119 8.4.1), attached to a VM as a read-only CD-ROM, and a
qcow2 image (``QFI\\xfb``), used as the read-only base of a VM's own
overlay. ``qemu-img info`` is then run with the format given explicitly
(``-f qcow2`` or ``-f raw``), so neither it nor QEMU ever guesses a format.

Refused, with one line saying why:

- anything but a regular file, an empty file, a file over :data:`MAX_BYTES`;
- a qcow2 with a backing file or an external data file (either names another
  file on the host, which QEMU would open), an encrypted or corrupt one, or
  one with incompatible features this check does not know; these header
  fields (QEMU's ``docs/interop/qcow2.txt``) are read by GenOS itself before
  ``qemu-img`` opens the file;
- a virtual size over :data:`MAX_VIRTUAL_BYTES`;
- any other format (raw disks, VMDK, VDI...): convert it to qcow2 first.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genos.errors import CapabilityError, ExternalError, InputError

Format = Literal["qcow2", "iso"]
FORMATS: tuple[Format, ...] = ("qcow2", "iso")
MAX_BYTES = 64 << 30  # the largest file `genos images add` copies (64 GiB)
MAX_VIRTUAL_BYTES = 2 << 40  # the largest disk a qcow2 may describe (2 TiB)
HEAD_BYTES = 64 << 10  # enough for a qcow2 header and the ISO's volume descriptor
ISO_MAGIC, ISO_MAGIC_AT = b"CD001", 16 * 2048 + 1
QCOW2_MAGIC = b"QFI\xfb"
# Incompatible feature bits (qcow2.txt): 0 dirty, 1 corrupt, 2 external data
# file, 3 compression type, 4 extended L2 entries.
_CORRUPT, _DATA_FILE, _KNOWN = 1 << 1, 1 << 2, (1 << 5) - 1
_TIMEOUT = 60


@dataclass(frozen=True)
class Facts:
    """What a checked image is: its format, file size and the size of the disk it describes."""

    format: Format
    size: int
    virtual_size: int


def open_regular(path: Path) -> tuple[int, int]:
    """Open ``path`` for reading; refuse what is not a non-empty regular file up to the limit.

    The checks are on the open file, so a file swapped after them is not the one read.

    Returns:
        The descriptor (close-on-exec; the caller closes it) and the file's size.

    Raises:
        InputError: missing, unreadable, not a regular file, empty, or over :data:`MAX_BYTES`.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return fd, _regular_size(fd, path)
    except BaseException:
        os.close(fd)
        raise


def _regular_size(fd: int, path: Path) -> int:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path} is not a regular file")
    if info.st_size == 0:
        raise InputError(f"{path} is empty")
    if info.st_size > MAX_BYTES:
        raise InputError(
            f"{path} is {info.st_size / 2**30:.1f} GiB; the limit is {MAX_BYTES >> 30} GiB"
        )
    return info.st_size


def sniff(head: bytes) -> Format | None:
    """The format the first bytes of a file show (see :data:`HEAD_BYTES`), or None."""
    if head[:4] == QCOW2_MAGIC:
        return "qcow2"
    if head[ISO_MAGIC_AT : ISO_MAGIC_AT + len(ISO_MAGIC)] == ISO_MAGIC:
        return "iso"
    return None


def check_head(head: bytes, wanted: Format | None, name: str) -> Format:
    """The image's format, from its first bytes; refuse a header that points elsewhere.

    Args:
        head: the file's first :data:`HEAD_BYTES` (or all of a shorter file).
        wanted: the format the user named, if any.
        name: how to call the file in messages.

    Raises:
        InputError: not qcow2 or ISO, not the format named, or a refused qcow2 header.
    """
    found = sniff(head)
    if found is None:
        raise InputError(
            f"{name} is neither a qcow2 image nor an ISO 9660 image "
            "(convert other formats with `qemu-img convert -O qcow2`)"
        )
    if wanted is not None and wanted != found:
        label = {"qcow2": "a qcow2", "iso": "an ISO 9660"}[found]
        raise InputError(f"{name} is {label} image, not {wanted}")
    if found == "qcow2":
        _check_qcow2_header(head, name)
    return found


def _check_qcow2_header(head: bytes, name: str) -> None:
    if len(head) < 72:
        raise InputError(f"{name}: qcow2 header is truncated")
    version, backing_offset, _, _, _, crypt = struct.unpack_from(">IQIIQI", head, 4)
    if version not in (2, 3):
        raise InputError(f"{name}: qcow2 version {version} is not supported")
    if backing_offset:
        raise InputError(
            f"{name} has a backing file; only a self-contained qcow2 is accepted "
            "(flatten it with `qemu-img convert -O qcow2`)"
        )
    if crypt:
        raise InputError(f"{name} is an encrypted qcow2; only unencrypted images are accepted")
    if version == 2:
        return
    if len(head) < 80:
        raise InputError(f"{name}: qcow2 header is truncated")
    (incompatible,) = struct.unpack_from(">Q", head, 72)
    if incompatible & _DATA_FILE:
        raise InputError(f"{name} keeps its data in an external file; this is not accepted")
    if incompatible & _CORRUPT:
        raise InputError(f"{name} is marked corrupt (repair it with `qemu-img check -r all`)")
    if incompatible & ~_KNOWN:
        raise InputError(f"{name} uses qcow2 features this GenOS does not know")


def inspect(path: Path, fmt: Format, name: str) -> Facts:
    """``qemu-img info`` of a file whose head passed :func:`check_head`, format explicit.

    Raises:
        InputError: qemu-img does not read it as that format, it names another
            file after all, or its virtual size is over :data:`MAX_VIRTUAL_BYTES`.
        CapabilityError: qemu-img is not installed.
    """
    argv = ["qemu-img", "info", "--output=json", "-f", "qcow2" if fmt == "qcow2" else "raw"]
    try:
        done = subprocess.run([*argv, str(path)], capture_output=True, text=True,
                              timeout=_TIMEOUT, check=False)  # fmt: skip
    except FileNotFoundError as exc:
        raise CapabilityError("checking disk images needs qemu-img (qemu-utils)") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"qemu-img info failed: {exc}") from exc
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise InputError(f"{name} is not a readable {fmt} image: {why}")
    try:
        info = json.loads(done.stdout)
        virtual = int(info["virtual-size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ExternalError("qemu-img info gave no virtual size", detail=done.stdout) from exc
    data = info.get("format-specific", {}).get("data", {})
    if "backing-filename" in info or "full-backing-filename" in info or "data-file" in data:
        raise InputError(f"{name} refers to another file; only a self-contained image is accepted")
    if info.get("encrypted"):
        raise InputError(f"{name} is encrypted; only unencrypted images are accepted")
    if virtual > MAX_VIRTUAL_BYTES:
        raise InputError(
            f"{name} describes a {virtual / 2**40:.1f} TiB disk; "
            f"the limit is {MAX_VIRTUAL_BYTES >> 40} TiB"
        )
    return Facts(fmt, path.stat().st_size, virtual)
