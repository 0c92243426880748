"""Where GenOS keeps its state on the host, and which node this process is.

The data directory is ``GENOS_DATA_DIR`` (default ``/var/lib/genos``). The
node's name is ``GENOS_NODE`` (``genos node --name``, ``genos serve --node``):
empty for the one-host default. Every host-global name that GenOS lists to
find what is its own carries the node's name, so several nodes (or a node and
a one-host ``genos serve``) can share a machine and never take each other's
environments for orphans: run roots (``/run/genos-<node>``,
``/run/genos-qemu-<node>``, the OCI runtimes' state under them) and cgroup
parents (``genos-<node>``, ``genos-vm-<node>``). Names keyed by an
environment's id (network namespaces, nft tables) are unique already, and
what must be unique on the machine whatever the node (user-namespace id
ranges, VM uids, addresses) is claimed host-wide, each claim naming its node.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from genos.errors import InputError

DEFAULT_DATA_DIR = Path("/var/lib/genos")
NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")


def data_dir() -> Path:
    """The data directory: ``GENOS_DATA_DIR`` if set, else ``/var/lib/genos``."""
    configured = os.environ.get("GENOS_DATA_DIR", "").strip()
    return Path(configured) if configured else DEFAULT_DATA_DIR


def node_name() -> str:
    """This process's node (``GENOS_NODE``), ``""`` for the one-host default.

    Raises:
        InputError: not a lower-case label of at most 20 characters.
    """
    name = os.environ.get("GENOS_NODE", "").strip()
    if name and not NODE_NAME.fullmatch(name):
        raise InputError(
            f"node name {name[:40]!r}: 1-20 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def node_scoped(name: str) -> str:
    """``name`` as this node uses it: itself on the one-host default, else ``<name>-<node>``."""
    node = node_name()
    return f"{name}-{node}" if node else name
