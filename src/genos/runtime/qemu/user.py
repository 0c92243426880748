"""How QEMU is run: in the environment's network namespace, as its own user, given what it needs.

The wrapper: ``nsenter --net`` into the environment's namespace (``unshare
--net`` for network mode ``none``: a namespace with nothing in it), then
``setpriv`` to QEMU's own uid with no capabilities, no groups and no new
privileges; QEMU adds its seccomp ``-sandbox``.

QEMU never relies on the mode of a host device node (``/dev/kvm`` and
``/dev/net/tun`` are ``0600 root`` on many hosts, and GenOS does not change
them). What it needs, GenOS hands over:

- the tap: a descriptor (:mod:`genos.sandbox.tap`);
- a user image: a read-only descriptor;
- KVM, which QEMU 7.2 cannot take as a descriptor: QEMU gets a mount
  namespace of its own in which ``/dev/kvm`` is a device node GenOS made
  for it (same device numbers, owned by QEMU's uid, ``0600``), on a tmpfs
  mounted for the moment of the ``mknod`` over a directory of the VM's and
  unmounted again before QEMU starts. The host's ``/dev/kvm`` is untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

KVM_DEVICE = Path("/dev/kvm")
# $1 scratch dir, $2 uid, $3 major:minor, then the command.
KVM_HANDOVER = (
    'set -e; d=$1; u=$2; dev=$3; shift 3; '
    'mount -t tmpfs -o size=4k,mode=0700 genos-kvm "$d"; '
    'mknod -m 0600 "$d/kvm" c "${dev%:*}" "${dev#*:}"; chown "$u" "$d/kvm"; '
    'mount --bind "$d/kvm" /dev/kvm; umount "$d"; exec "$@"'
)  # fmt: skip


def wrapper(uid: int, netns: str | None, *, kvm_scratch: Path | None = None) -> list[str]:
    """The commands QEMU is run under: a network namespace, then its own unprivileged user.

    Args:
        uid: QEMU's user (and group) id.
        netns: the environment's network namespace; None for a namespace of its own, empty.
        kvm_scratch: for KVM, an existing directory of the VM's (root's) where the
            device node is made; None runs without KVM.

    Returns:
        argv to put before QEMU's own.
    """
    enter = ["nsenter", f"--net=/run/netns/{netns}", "--"] if netns else ["unshare", "--net", "--"]
    kvm: list[str] = []
    if kvm_scratch is not None:
        rdev = KVM_DEVICE.stat().st_rdev
        kvm = ["unshare", "--mount", "--propagation", "private", "--",
               "sh", "-c", KVM_HANDOVER, "genos-kvm", str(kvm_scratch), str(uid),
               f"{os.major(rdev)}:{os.minor(rdev)}"]  # fmt: skip
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
    return [*enter, *kvm, *drop]
