"""User namespaces for environments: an id range per env and id-mapped layer mounts.

Root inside an environment (and its uid 1000) are, on the host, ids of a
range nobody else uses: slot ``n`` maps ``0..65535`` inside to
``BASE + n * 65536..`` outside, so two environments never share a host id.
Slots are claimed with ``O_EXCL`` marker files under ``/run/genos/ids`` (one
per slot, holding the env id and the node that claimed it), which works
across processes, and across GenOS nodes sharing a machine, and is forgotten
at reboot.

The shared read-only layers stay owned by real root on disk; each env sees
them through id-mapped bind mounts (``mount_setattr(MOUNT_ATTR_IDMAP)``,
Linux >= 5.12) that shift their owners into its range, and overlayfs stacks
those. Nothing is copied or chowned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import tempfile
import time
from pathlib import Path

from genos.errors import CapabilityError, ExternalError
from genos.paths import node_name
from genos.sandbox.config import IdMap

IDS_DIR = Path("/run/genos/ids")  # host-wide: every node's environments need distinct ranges

BASE = 1 << 20  # above the ranges /etc/subuid usually hands out
SIZE = 65536
MAX_SLOTS = 4096

_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442  # x86_64 and aarch64
_AT_FDCWD = -100
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, 0o2000000
_AT_EMPTY_PATH = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_MOUNT_ATTR_IDMAP = 0x100000


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def id_map(slot: int) -> IdMap:
    """The host id range of a slot."""
    return IdMap(host_id=BASE + slot * SIZE, size=SIZE)


def claim(ids_dir: Path, env_id: str) -> int:
    """Claim the lowest free slot for ``env_id``.

    Args:
        ids_dir: where the slot markers live.
        env_id: the environment.

    Returns:
        The slot number.

    Raises:
        CapabilityError: every slot is taken.
    """
    ids_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        try:
            fd = os.open(ids_dir / str(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        node = node_name()
        with os.fdopen(fd, "w") as marker:
            marker.write(f"{env_id}\n{node}" if node else env_id)
        return slot
    raise CapabilityError(f"all {MAX_SLOTS} user-namespace id ranges are in use")


def _marker(path: Path) -> tuple[str, str]:
    env_id, _, node = path.read_text().partition("\n")
    return env_id, node


def release(ids_dir: Path, env_id: str) -> None:
    """Free every slot ``env_id`` holds on this node (nothing if it holds none).

    Another node's claim for the same id stays: during a live migration both
    ends hold one, and the source's release must not free the target's.
    """
    node = node_name()
    with contextlib.suppress(FileNotFoundError):
        for marker in ids_dir.iterdir():
            with contextlib.suppress(OSError):
                if _marker(marker) == (env_id, node):
                    marker.unlink()


def holders(ids_dir: Path) -> set[str]:
    """Env ids of this node holding a slot (a crash may leave one without its env)."""
    found = set()
    node = node_name()
    with contextlib.suppress(FileNotFoundError):
        for marker in ids_dir.iterdir():
            with contextlib.suppress(OSError):
                env_id, owner = _marker(marker)
                if owner == node:
                    found.add(env_id)
    return found


_USERNS_FDS: dict[tuple[int, int], int] = {}


def userns_fd(mapping: IdMap) -> int:
    """An fd of a user namespace with ``mapping`` (one per range, kept open and reused).

    Raises:
        CapabilityError: user namespaces cannot be made here.
    """
    key = (mapping.host_id, mapping.size)
    if key not in _USERNS_FDS:
        _USERNS_FDS[key] = _make_userns(mapping)
    return _USERNS_FDS[key]


def _make_userns(mapping: IdMap) -> int:
    mine = Path("/proc/self/ns/user").readlink()
    try:
        child = subprocess.Popen(["unshare", "--user", "sleep", "30"])
    except OSError as exc:
        raise CapabilityError(f"cannot run unshare: {exc}") from exc
    try:
        deadline = time.monotonic() + 5.0
        while Path(f"/proc/{child.pid}/ns/user").readlink() == mine:
            if child.poll() is not None or time.monotonic() > deadline:
                raise CapabilityError("this host does not allow user namespaces")
            time.sleep(0.001)
        line = f"0 {mapping.host_id} {mapping.size}"
        Path(f"/proc/{child.pid}/uid_map").write_text(line)
        Path(f"/proc/{child.pid}/setgroups").write_text("deny")
        Path(f"/proc/{child.pid}/gid_map").write_text(line)
        return os.open(f"/proc/{child.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CapabilityError(f"cannot set up a user namespace: {exc}") from exc
    finally:
        child.kill()
        child.wait()


def bind_idmapped(source: Path, target: Path, mapping: IdMap, *, readonly: bool = True) -> None:
    """Bind ``source`` at ``target`` nosuid, nodev, owners shifted into ``mapping``.

    Args:
        source: a directory (a layer, or a volume with ``readonly=False``).
        target: an existing empty directory.
        mapping: the env's id range.
        readonly: mount it read-only (layers are shared by every env).

    Raises:
        CapabilityError: the kernel or file system cannot id-map mounts.
        ExternalError: the mount could not be moved into place.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    flags = _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC
    fd = libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, str(source).encode(), flags)
    if fd < 0:
        raise CapabilityError(f"open_tree({source}): {os.strerror(ctypes.get_errno())}")
    try:
        attrs = _MOUNT_ATTR_IDMAP | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV
        attr = _MountAttr(attrs | (_MOUNT_ATTR_RDONLY if readonly else 0), 0, 0, userns_fd(mapping))
        size = ctypes.sizeof(attr)
        if libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr), size):
            err = os.strerror(ctypes.get_errno())
            raise CapabilityError(f"cannot id-map a mount of {source}: {err}")
        empty = _MOVE_MOUNT_F_EMPTY_PATH
        if libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, str(target).encode(), empty):
            raise ExternalError(f"move_mount to {target}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


_PROBLEMS: dict[Path, str | None] = {}


def problem(where: Path) -> str | None:
    """Why id-mapped mounts do not work on ``where``'s file system (None: they do).

    Tried once per directory (a scratch bind mount, removed at once), then cached.
    """
    if where not in _PROBLEMS:
        _PROBLEMS[where] = _try_idmap(where)
    return _PROBLEMS[where]


def _try_idmap(where: Path) -> str | None:
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".idmap-probe-", dir=where) as tmp:
        source, target = Path(tmp, "src"), Path(tmp, "dst")
        source.mkdir()
        target.mkdir()
        try:
            bind_idmapped(source, target, id_map(MAX_SLOTS))
        except (CapabilityError, ExternalError) as exc:
            return str(exc)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.umount2(str(target).encode(), 2):  # MNT_DETACH
            return f"cannot unmount the probe: {os.strerror(ctypes.get_errno())}"
    return None
