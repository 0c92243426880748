"""One container environment's files on the host, and the small host-side chores around it.

::

    /run/genos/<id>/                  0700 root; gone at reboot like the processes
        env.json                      what create decided (runtime, network, layers)
        bundle/config.json            the OCI config GenOS wrote
        bundle/rootfs/                the overlay root (mounted)
        display/                      bind-mounted at /run/genos-display; rfb.sock
        hosts, resolv.conf            bind-mounted read-only at /etc/
        home/                         a volume's plaintext (mounted), bound at /home/user
        session.log                   the session's stdout and stderr
    <data dir>/envs/<id>/upper, work  the overlay's writable dirs
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genos.errors import ExternalError

RFB_BANNER = b"RFB 003.008\n"
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


@dataclass(frozen=True)
class EnvPaths:
    """Every host path of one environment."""

    env_id: str
    root: Path
    data: Path

    @classmethod
    def of(cls, env_id: str, run_root: Path, data_root: Path) -> EnvPaths:
        """The paths of ``env_id`` under a run root and a data root."""
        return cls(env_id, run_root / env_id, data_root / "envs" / env_id)

    @property
    def record(self) -> Path:
        """``env.json``: what create decided."""
        return self.root / "env.json"

    @property
    def bundle(self) -> Path:
        """The OCI bundle directory."""
        return self.root / "bundle"

    @property
    def config(self) -> Path:
        """The ``config.json`` GenOS wrote."""
        return self.bundle / "config.json"

    @property
    def rootfs(self) -> Path:
        """The overlay root (a mount point)."""
        return self.bundle / "rootfs"

    @property
    def display_dir(self) -> Path:
        """Host side of ``/run/genos-display``."""
        return self.root / "display"

    @property
    def socket(self) -> Path:
        """The display socket (RFB)."""
        return self.display_dir / "rfb.sock"

    @property
    def hosts(self) -> Path:
        """Bind-mounted read-only at ``/etc/hosts``."""
        return self.root / "hosts"

    @property
    def resolv_conf(self) -> Path:
        """Bind-mounted read-only at ``/etc/resolv.conf`` (when the network has DNS)."""
        return self.root / "resolv.conf"

    @property
    def home(self) -> Path:
        """Where a volume is mounted, to be bound at ``/home/user``."""
        return self.root / "home"

    @property
    def session_log(self) -> Path:
        """The session's stdout and stderr."""
        return self.root / "session.log"

    @property
    def upper(self) -> Path:
        """The overlay's writable dir."""
        return self.data / "upper"

    @property
    def work(self) -> Path:
        """overlayfs' work dir."""
        return self.data / "work"


def write_record(paths: EnvPaths, record: dict[str, Any]) -> None:
    """Write ``env.json`` atomically (a crash leaves the old one or the new one)."""
    write_private(paths.record, json.dumps(record, indent=1, sort_keys=True))


def write_private(path: Path, text: str) -> None:
    """Write a file only root may read, atomically (a temp file renamed over it)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


def read_record(paths: EnvPaths) -> dict[str, Any] | None:
    """``env.json`` of an environment, or None when there is none (or it is torn)."""
    try:
        data = json.loads(paths.record.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def runsc_network(record: dict[str, Any] | None) -> str:
    """runsc's ``--network`` for an environment: ``none`` if it has its own netns."""
    return "none" if record is None or record.get("own_netns", True) else "sandbox"


def read_pid(paths: EnvPaths) -> int | None:
    """The pid of the session's init on the host (from the runtime's pid file)."""
    try:
        return int((paths.root / "pid").read_text().strip())
    except (OSError, ValueError):
        return None


def log_tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log file ('' if it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def wait_gone(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` has exited; False if it still runs at the deadline."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _try_banner(path: Path, timeout: float) -> bytes | None:
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return None
    try:
        return await asyncio.wait_for(reader.readexactly(len(RFB_BANNER)), timeout)
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def wait_banner(path: Path, pid: int | None, timeout: float) -> None:
    """Poll the display socket until it answers with the RFB banner (RFC 6143 7.1.1).

    Args:
        path: the socket.
        pid: the session's init on the host; when it dies, stop waiting.
        timeout: seconds.

    Raises:
        ExternalError: no banner before the deadline, the session died, or
            something else answered.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        left = max(deadline - time.monotonic(), 0.05)
        banner = await _try_banner(path, left)
        if banner is not None and banner:
            if banner != RFB_BANNER:
                raise ExternalError(
                    "the display answered, but not with RFB 3.8", detail=repr(banner)
                )
            return
        if pid is not None and not alive(pid):
            raise ExternalError("the session exited before its display answered")
        if time.monotonic() > deadline:
            raise ExternalError(f"the display did not answer within {timeout:g}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.01)


def loopback_up(pid: int) -> None:
    """Bring ``lo`` up in the network namespace of ``pid`` (a fresh netns has it down).

    Runs on a short-lived thread that joins the namespace, so no other thread
    of GenOS ever changes namespace.

    Raises:
        ExternalError: the namespace could not be joined or ``lo`` configured.
    """
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _set_lo_up(pid)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"lo-up-{pid}")
    thread.start()
    thread.join()
    if failure:
        raise ExternalError("cannot bring up loopback", detail=str(failure[0])) from failure[0]


def _set_lo_up(pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def make_dirs(paths: EnvPaths, owner: int) -> None:
    """Create the environment's directories (``display`` owned by the session user).

    Args:
        paths: the environment's paths.
        owner: host uid (and gid) of the session user, who creates ``rfb.sock``.
    """
    paths.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths.root.mkdir(mode=0o700)
    paths.bundle.mkdir(mode=0o700)
    paths.display_dir.mkdir(mode=0o700)
    os.chown(paths.display_dir, owner, owner)
    paths.data.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The session's output may hold anything the user typed: root's eyes only.
    os.close(os.open(paths.session_log, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


def remove_tree(path: Path) -> None:
    """Delete a directory tree (nothing if it is absent)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
