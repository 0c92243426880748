"""Runtimes: images and the drivers that run environments.

- ``driver``: the :class:`Driver` protocol every tier implements;
  ``lifecycle``: the verb/state table drivers share.
- ``images/``: content-addressed root filesystem layers built with mmdebstrap.
- ``oci/``: containers with runc / runsc (crun where the host allows it); see
  its docstring for its modules.
- ``qemu/``: VMs (tiers ``microvm`` and ``vm``) in QEMU; see its docstring.
  ``userimages``: the owners' own qcow2 and ISO images a ``vm`` boots
  (``base.image``), checked by ``diskimage``.
- ``volumes``: named per-owner volumes mounted at the environment user's
  home, optionally encrypted with gocryptfs.
- ``fake``: the in-memory driver (a real RFB banner on a unix socket) for
  orchestrator and API tests. ``genos.testing.check_driver`` is the
  conformance suite every driver passes.
"""
