"""An environment's root: an overlay of read-only layers under its own writable dir.

Also the host's mount table as this package needs it: what is mounted under a
path (so nothing is deleted through a live mount) and which layer directories
a mounted overlay uses (so a layer in use is never removed).
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from genos.errors import ExternalError, InputError

log = logging.getLogger("genos.runtime.images")

MOUNTINFO = Path("/proc/self/mountinfo")
# Characters overlayfs' option parser treats specially in a directory name.
_BAD_IN_OVERLAY_PATH = re.compile(r"[:,\\\s]")


class HasPath(Protocol):
    """Anything with the directory overlayfs uses as a lower layer (a :class:`Layer`)."""

    @property
    def path(self) -> Path: ...


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    target: Path
    fstype: str
    options: str


def mounts() -> list[Mount]:
    """The mounts this process sees, in mount order."""
    found = []
    for line in MOUNTINFO.read_text(encoding="utf-8", errors="replace").splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        found.append(Mount(Path(_unescape(fields[4])), tail[0], _unescape(tail[2])))
    return found


def _unescape(text: str) -> str:
    # The kernel writes space, tab, newline and backslash as \ooo octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mounted_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``.

    Args:
        path: a directory (need not exist).

    Returns:
        The mount points, deepest first (the order to unmount them in).
    """
    root = path.absolute()
    hits = {m.target for m in mounts() if m.target == root or root in m.target.parents}
    return sorted(hits, key=lambda p: len(p.parts), reverse=True)


def overlay_dirs_in_use() -> set[Path]:
    """Every lower, upper and work directory of a mounted overlay."""
    used: set[Path] = set()
    for mount in mounts():
        if mount.fstype != "overlay":
            continue
        for option in mount.options.split(","):
            key, _, value = option.partition("=")
            if key in {"lowerdir", "upperdir", "workdir"}:
                used.update(Path(p) for p in value.split(":") if p)
    return used


def overlay_options(lowers: Sequence[Path], upper: Path | None, work: Path | None) -> str:
    """Mount options for an overlay of ``lowers`` (base first) under ``upper``.

    Args:
        lowers: read-only layer directories, base first.
        upper: the writable dir, or None for a read-only overlay.
        work: overlayfs' work dir (with ``upper``).

    Returns:
        The ``-o`` argument for ``mount -t overlay``.

    Raises:
        InputError: a directory name overlayfs cannot take in its options.
    """
    for path in (*lowers, *(p for p in (upper, work) if p is not None)):
        if _BAD_IN_OVERLAY_PATH.search(str(path)):
            raise InputError(f"overlay directory {path} has ':', ',', '\\' or a space in it")
    # overlayfs lists the top layer first.
    options = ["lowerdir=" + ":".join(str(p) for p in reversed(lowers))]
    if upper is not None and work is not None:
        options += [f"upperdir={upper}", f"workdir={work}"]
    # Plain copy-up: layers and upper dirs stay valid under any later stack.
    options += ["index=off", "metacopy=off", "redirect_dir=off", "xino=off"]
    return ",".join(options)


def mount_root(layers: Sequence[HasPath | Path], upper: Path, work: Path, target: Path) -> None:
    """Mount an environment's root at ``target``.

    Args:
        layers: the image's layers base first (:class:`Layer` or their ``path``).
        upper: the environment's writable dir (created if missing).
        work: overlayfs' work dir, on the same file system as ``upper``.
        target: the mount point (created if missing).

    Raises:
        InputError: no layers, or a path overlayfs cannot take.
        ExternalError: the kernel refused the mount.
    """
    lowers = [layer if isinstance(layer, Path) else layer.path for layer in layers]
    if not lowers:
        raise InputError("an environment's root needs at least one layer")
    options = overlay_options(lowers, upper, work)
    for path in (upper, work, target):
        path.mkdir(parents=True, exist_ok=True)
    _run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], "mount overlay")
    log.debug("mounted root %s over %d layers", target, len(lowers))


def unmount_root(target: Path) -> None:
    """Unmount an environment's root; nothing to do when it is not mounted.

    A busy mount is detached lazily (the kernel frees it when its last user
    goes), so this always returns with ``target`` out of the mount table.

    Raises:
        ExternalError: ``umount`` failed even lazily.
    """
    unmount_all(target)


def unmount_all(path: Path) -> None:
    """Unmount everything at or below ``path``, deepest first, lazily if busy.

    Raises:
        ExternalError: a mount could not be detached even lazily.
    """
    for point in mounted_under(path):
        try:
            _run(["umount", str(point)], "umount")
        except ExternalError:
            log.warning("%s is busy; detaching it lazily", point)
            _run(["umount", "--lazy", str(point)], "umount --lazy")


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise ExternalError(f"{what} failed (exit {done.returncode})", detail)
