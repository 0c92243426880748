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

One process may act as another node for a while (:func:`acting_as`): a
context variable, so each asyncio task (and each thread started with
``asyncio.to_thread``) keeps its own. Tests and benchmarks use it to run two
nodes' drivers side by side, e.g. the two ends of a live migration.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from genos.errors import InputError

DEFAULT_DATA_DIR = Path("/var/lib/genos")
NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$")
_ACTING_AS: ContextVar[str | None] = ContextVar("genos_node", default=None)


def data_dir() -> Path:
    """The data directory: ``GENOS_DATA_DIR`` if set, else ``/var/lib/genos``."""
    configured = os.environ.get("GENOS_DATA_DIR", "").strip()
    return Path(configured) if configured else DEFAULT_DATA_DIR


def node_name() -> str:
    """This process's node (``GENOS_NODE``), ``""`` for the one-host default.

    Raises:
        InputError: not a lower-case label of at most 20 characters.
    """
    acting = _ACTING_AS.get()
    name = acting if acting is not None else os.environ.get("GENOS_NODE", "").strip()
    if name and not NODE_NAME.fullmatch(name):
        raise InputError(
            f"node name {name[:40]!r}: 1-20 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


@contextlib.contextmanager
def acting_as(node: str) -> Iterator[None]:
    """Act as node ``node`` (``""``: the one-host default) here, whatever ``GENOS_NODE`` says.

    Raises:
        InputError: not a node name.
    """
    if node and not NODE_NAME.fullmatch(node):
        raise InputError(f"node name {node[:40]!r}: 1-20 lower-case letters, digits and '-'")
    token = _ACTING_AS.set(node)
    try:
        yield
    finally:
        _ACTING_AS.reset(token)


def node_scoped(name: str) -> str:
    """``name`` as this node uses it: itself on the one-host default, else ``<name>-<node>``."""
    node = node_name()
    return f"{name}-{node}" if node else name
