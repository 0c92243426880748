"""QEMU's tap queue and KVM device, opened by GenOS and handed over (no host device modes)."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from genos.errors import ExternalError
from genos.runtime.qemu.user import KVM_DEVICE, wrapper
from genos.sandbox.tap import IFF_TAP, IFF_VNET_HDR, open_tap

pytestmark = pytest.mark.root

TUNGETIFF = 0x800454D2
UID = (1 << 20) + 4096 * 65536 + 4097  # above every GenOS id range: nobody's


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own with a persistent, root-owned tap0."""
    name = f"genos-taptest-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "tuntap", "add", "dev", "tap0", "mode", "tap"],
                       check=True)  # fmt: skip
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def _netns_id() -> int:
    return Path("/proc/thread-self/ns/net").stat().st_ino


def test_open_tap_attaches_to_the_namespace_tap_and_leaves_this_thread_home(netns: str) -> None:
    """The descriptor is a queue of tap0 in the namespace (vnet header on), opened
    close-on-exec, and the caller's network namespace is the same afterwards."""
    home = _netns_id()
    fd = open_tap(netns)
    try:
        assert _netns_id() == home
        name, flags = struct.unpack("16sH22x", fcntl.ioctl(fd, TUNGETIFF, bytes(40)))
        assert name.rstrip(b"\0") == b"tap0"
        assert flags & IFF_TAP == IFF_TAP
        assert flags & IFF_VNET_HDR == IFF_VNET_HDR
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)


def test_open_tap_in_a_missing_namespace_is_an_external_error() -> None:
    """A namespace that does not exist is a clear ExternalError, not an OSError."""
    with pytest.raises(ExternalError, match="cannot open tap0 in genos-no-such-ns"):
        open_tap("genos-no-such-ns")
    assert _netns_id() == Path("/proc/self/ns/net").stat().st_ino


def _opens_kvm_as(argv_prefix: list[str]) -> subprocess.CompletedProcess[str]:
    code = "import os; os.close(os.open('/dev/kvm', os.O_RDWR)); print('opened')"
    return subprocess.run([*argv_prefix, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip


@pytest.mark.skipif(not KVM_DEVICE.is_char_device(), reason="no /dev/kvm on this host")
def test_qemus_user_opens_kvm_through_a_node_of_its_own(tmp_path: Path) -> None:
    """Under the wrapper QEMU's uid opens /dev/kvm whatever the host node's mode, and the
    host's /dev/kvm is not changed."""
    tmp_path.chmod(0o711)
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    before = KVM_DEVICE.stat()
    done = _opens_kvm_as(wrapper(UID, None, kvm_scratch=scratch))
    assert (done.returncode, done.stdout.strip()) == (0, "opened"), done.stderr
    after = KVM_DEVICE.stat()
    assert (after.st_mode, after.st_uid, after.st_gid) == (
        before.st_mode, before.st_uid, before.st_gid)  # fmt: skip
    assert list(scratch.iterdir()) == []  # the tmpfs was only ever in QEMU's mount namespace
    if before.st_mode & 0o006 == 0:  # the control: without the handover the host's mode says no
        denied = _opens_kvm_as(wrapper(UID, None))
        assert denied.returncode != 0
        assert "Permission denied" in denied.stderr
