"""The QEMU driver (tiers ``microvm`` and ``vm``), one concept per module.

- ``driver``: :class:`~genos.runtime.qemu.driver.QemuDriver`, the verbs.
- ``image``: the VM image of a spec's layers (kernel, initramfs, ext4 root).
- ``guest``: the guest's init and the GenOS agent's command channel.
- ``cmd``: QEMU's command line (machine, devices, display, network).
- ``user``: how QEMU runs: its network namespace, its own uid, and the
  devices handed to it (tap and user image as descriptors, KVM as a node).
- ``host``: a VM's host paths, record, uid slot, cgroup and tap.
- ``provision``: the steps of ``create``.
- ``qmp``: QMP and the guest command channel.
- ``stop``: launch, graceful and forceful stop, release.
- ``accel``: KVM or TCG, decided by a probe guest.
- ``migrate``: live migration to another node's driver; ``channel``: its sockets and TLS files.

User images (``base.image``) are :mod:`genos.runtime.userimages` and
:mod:`genos.runtime.diskimage`, beside this package.
"""
