"""A built layer on disk: its files, its metadata, its last use.

::

    <store>/layers/<digest>/rootfs/      the layer's files (an overlay lowerdir)
    <store>/layers/<digest>/meta.json    LayerMeta
    <store>/layers/<digest>/last-used    mtime = the last ensure() that used it
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOTFS = "rootfs"
META = "meta.json"
LAST_USED = "last-used"
META_FORMAT = 1


@dataclass(frozen=True)
class LayerMeta:
    """What a layer is and where it came from (``meta.json``)."""

    digest: str
    kind: str
    parent: str | None
    packages: tuple[str, ...]
    release: str
    arch: str
    size: int
    created: float
    recipe_version: int
    steps: tuple[str, ...]
    # A fresh id per build; a child records its parent's, so a child built on
    # an earlier build of the same parent digest is known to be stale.
    instance: str
    parent_instance: str | None
    recipe: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": META_FORMAT, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LayerMeta:
        """Parse ``meta.json``.

        Raises:
            ValueError: not a layer's metadata.
        """
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.pop("format", None) != META_FORMAT:
            raise ValueError("not GenOS layer metadata (format 1)")
        try:
            raw["packages"] = tuple(raw["packages"])
            raw["steps"] = tuple(raw["steps"])
            return cls(**raw)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad layer metadata: {exc}") from exc


@dataclass(frozen=True)
class Layer:
    """A built, read-only layer."""

    digest: str
    dir: Path
    meta: LayerMeta

    @property
    def path(self) -> Path:
        """The directory an overlay uses as this layer's ``lowerdir``."""
        return self.dir / ROOTFS

    @property
    def kind(self) -> str:
        return self.meta.kind

    @property
    def last_used(self) -> float:
        """When an ensure() last used this layer (epoch seconds)."""
        try:
            return (self.dir / LAST_USED).stat().st_mtime
        except FileNotFoundError:
            return self.meta.created

    def touch(self) -> None:
        """Record a use now."""
        (self.dir / LAST_USED).touch()


def read_layer(layer_dir: Path) -> Layer | None:
    """The layer stored in ``layer_dir``.

    Args:
        layer_dir: ``<store>/layers/<digest>``.

    Returns:
        The layer, or None when there is none there or its metadata is unreadable.
    """
    try:
        meta = LayerMeta.from_json((layer_dir / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.digest != layer_dir.name:
        return None
    return Layer(meta.digest, layer_dir, meta)


def disk_usage(path: Path) -> int:
    """Bytes ``path`` takes on disk, each hard-linked inode counted once (like ``du``)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            st = Path(top, name).lstat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total
