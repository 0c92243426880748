"""The sandbox: what stands between an environment and the host.

- ``config``: the hardened OCI runtime config (namespaces, capabilities,
  masked and read-only paths, devices, mounts); ``seccomp``: the syscall
  allowlist; ``cgroups``: limits, freeze/thaw, usage.
- ``network``: per-environment network namespaces and their nftables policy;
  ``tor``: the Tor gateway namespace.
- ``audit``: append-only JSON-lines record of every sandbox decision.
"""
