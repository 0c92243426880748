"""Root filesystems as content-addressed layers, built from Debian's archive.

An environment's root is an overlay: base -> desktop -> apps, read-only, under
the environment's own writable dir. How the package is laid out:

- ``store``: :class:`ImageStore` - ensure a spec's layers (build only what is
  missing, once, atomically), ``ls``, ``rm``, ``gc``.
- ``recipes``: what each layer holds and the digest that names it; ``steps``:
  the named, versioned changes a recipe makes beyond installing packages.
- ``session``: the guest contract inside the desktop layer (``genos-session``,
  the unprivileged user) and :func:`session_env` for drivers.
- ``tor``: Firefox ESR locked to the Tor gateway ("Tor Browser").
- ``build``: mmdebstrap and apt in throw-away namespaces; ``archive``: which
  mirror; ``locks``: flock per digest.
- ``layers``: a built layer on disk; ``mounts``: :func:`mount_root`,
  :func:`unmount_root` and the host's mount table.
"""

from genos.runtime.images.build import Builder, DebianBuilder
from genos.runtime.images.layers import Layer, LayerMeta
from genos.runtime.images.mounts import mount_root, unmount_root
from genos.runtime.images.recipes import LayerRecipe
from genos.runtime.images.session import (
    DISPLAY_DIR,
    RDP_SOCKET,
    RFB_SOCKET,
    SESSION_ARGV,
    USER_UID,
    session_env,
)
from genos.runtime.images.store import ImageStore, Progress, ProgressFn

__all__ = [
    "DISPLAY_DIR",
    "RDP_SOCKET",
    "RFB_SOCKET",
    "SESSION_ARGV",
    "USER_UID",
    "Builder",
    "DebianBuilder",
    "ImageStore",
    "Layer",
    "LayerMeta",
    "LayerRecipe",
    "Progress",
    "ProgressFn",
    "mount_root",
    "session_env",
    "unmount_root",
]
