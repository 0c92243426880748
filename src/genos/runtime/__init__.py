"""Runtimes: images and the drivers that run environments.

- ``driver``: the :class:`Driver` protocol every tier implements.
- ``images/``: content-addressed root filesystem layers built with mmdebstrap.
- ``oci``: containers with runc / crun / runsc; ``fake``: the in-memory driver
  for orchestrator and API tests.
"""
