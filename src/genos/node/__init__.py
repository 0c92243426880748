"""What runs on every host of a cluster: ``genos node``.

- ``agent``: fence, announce under a lease, follow this node's assignments,
  report what the host has (:class:`~genos.node.agent.NodeAgent`).
- ``relay``: the display relay a control plane's gateway opens displays
  through (mutual TLS).
- ``local``: the host's own driver (OCI and QEMU behind one router, or the
  demo fake), which one-host ``genos serve`` uses too.
- ``run``: the process: driver, agent and relay, until a signal.
"""
