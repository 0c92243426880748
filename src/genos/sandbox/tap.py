"""A tap device's queue, opened by GenOS and handed to QEMU as a descriptor.

QEMU runs as an unprivileged user of its own and must not open host device
nodes itself: ``/dev/net/tun`` is ``0600 root`` on many hosts, and a device
mode GenOS does not control is not a permission it may rely on. As libvirt
does, GenOS (root) opens ``/dev/net/tun`` inside the environment's network
namespace, attaches the queue to the namespace's persistent ``tap0``
(``TUNSETIFF``) and passes the descriptor on (``-netdev tap,fd=N``); QEMU
never sees the device node.

The tun driver binds a queue to the network namespace of the thread that
opened ``/dev/net/tun``, so the open happens on a short-lived thread of its
own that enters the namespace with ``setns(2)`` (per thread for network
namespaces) and returns to the original one before it ends; no other thread
of the process ever changes namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import threading
from pathlib import Path

from genos.errors import ExternalError

TUN_DEVICE = "/dev/net/tun"
NETNS_DIR = Path("/run/netns")
# linux/if_tun.h and linux/sched.h
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
CLONE_NEWNET = 0x40000000
IFNAMSIZ = 16


def open_tap(netns: str, name: str = "tap0") -> int:
    """A queue of the tap ``name`` in ``netns``, for a child process to inherit.

    Args:
        netns: the network namespace (``/run/netns/<netns>``).
        name: the persistent tap device there.

    Returns:
        The descriptor (close-on-exec; pass it with ``pass_fds``). The caller closes it.

    Raises:
        ExternalError: the namespace, the device or the attach failed.
    """
    if not name or len(name.encode()) >= IFNAMSIZ:
        raise ValueError(f"bad interface name {name!r}")
    result: list[int | BaseException] = []
    worker = threading.Thread(
        target=lambda: result.append(_attempt(netns, name)), name=f"genos-tap-{netns}"
    )
    worker.start()
    worker.join()
    found = result[0]
    if isinstance(found, BaseException):
        raise ExternalError(f"cannot open {name} in {netns}", detail=str(found)) from found
    return found


def _attempt(netns: str, name: str) -> int | BaseException:
    try:
        return _open_in(netns, name)
    except OSError as exc:
        return exc


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _open_in(netns: str, name: str) -> int:
    flags = os.O_RDONLY | os.O_CLOEXEC
    own = os.open("/proc/thread-self/ns/net", flags)
    try:
        target = os.open(NETNS_DIR / netns, flags)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            return _attach(name)
        finally:
            _setns(own)  # back before the thread ends (a failure here ends the thread anyway)
    finally:
        os.close(own)


def _attach(name: str) -> int:
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        request = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError:
        os.close(fd)
        raise
    return fd
