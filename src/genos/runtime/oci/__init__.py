"""The OCI container driver (tiers ``container`` and ``gvisor``), one concept per module.

- ``driver``: :class:`~genos.runtime.oci.driver.OCIDriver`, the verbs.
- ``runtime``: which OCI runtime works on this host (runc, crun, runsc;
  detected by a trial container) and how to call it.
- ``provision``: the steps of ``create`` (layers, root, network, volume,
  bundle, runtime ``create``), each undone if a later one fails.
- ``env``: one environment's host paths and readiness (the RFB banner).
- ``teardown``: graceful-then-forceful removal of everything an environment had.
"""
