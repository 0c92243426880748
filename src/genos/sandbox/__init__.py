"""The sandbox: what stands between an environment and the host.

- ``config``: the hardened OCI runtime config (namespaces, capabilities,
  masked and read-only paths, devices, mounts); ``seccomp``: the syscall
  allowlist; ``cgroups``: limits, freeze/thaw, usage; ``idmap``: per-env
  user-namespace id ranges and id-mapped layer mounts.
- ``network``: per-environment network namespaces and their policy;
  ``netns``: namespaces, veths, addresses; ``nft``: the nftables rules per
  mode; ``tor``: the Tor gateway namespace.
- ``audit``: the hash-chained record of every sandbox decision.
"""
