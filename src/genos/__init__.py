"""GenOS: describe a computer in a sentence, get a sandboxed Linux desktop.

How the package is laid out (arrows point one way, see ARCHITECTURE.md):

- ``spec``: ``EnvironmentSpec``, the one type every part shares.
- ``errors``: the error tree, rooted at ``GenOSError``.
- ``composer/``: text -> spec, clarification or rejection; the knowledge base.
- ``orchestrator/``: lifecycle, registry (SQLite / PostgreSQL), scheduling,
  events, reconcile.
- ``runtime/``: image layers and the drivers (OCI containers; fake).
- ``sandbox/``: OCI hardening, seccomp, cgroups, network namespaces + nftables.
- ``gateway/``: RFB proxy, tokens, policy, adaptive streaming.
- ``api/``: the HTTP surface (credentials so far).
- ``audit``: hash-chained append-only logs.
- ``cli``, ``cli_images``: the ``genos`` command.
"""

import logging

__version__ = "0.1.0"

logging.getLogger("genos").addHandler(logging.NullHandler())
