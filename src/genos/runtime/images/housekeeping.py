"""Which layers may go: pure decisions for ``rm`` and ``gc`` over a list of layers."""

from __future__ import annotations

import time
from pathlib import Path

from genos.runtime.images.layers import Layer

DEPTH = {"base": 0, "desktop": 1, "apps": 2}


def created(layer: Layer) -> float:
    return layer.meta.created


def is_digest(digest: str) -> bool:
    return len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def descendants(target: Layer, layers: list[Layer]) -> list[Layer]:
    """``target`` and every layer built on it, children first."""
    doomed = {target.digest}
    grew = True
    while grew:
        children = {layer.digest for layer in layers if layer.meta.parent in doomed}
        grew = not children <= doomed
        doomed |= children
    return leaves_first(
        [target, *(layer for layer in layers if layer.digest in doomed - {target.digest})]
    )


def keep_set(
    layers: list[Layer], in_use: set[str], mounted: set[Path], recent_seconds: float
) -> set[str]:
    """Digests gc must keep: used, mounted or recent layers and all their ancestors."""
    by_digest = {layer.digest: layer for layer in layers}
    now = time.time()
    keep: set[str] = set()
    for layer in layers:
        if (
            layer.digest in in_use
            or layer.path in mounted
            or now - layer.last_used < recent_seconds
        ):
            current: Layer | None = layer
            while current is not None and current.digest not in keep:
                keep.add(current.digest)
                current = by_digest.get(current.meta.parent or "")
    return keep


def leaves_first(layers: list[Layer]) -> list[Layer]:
    """``layers`` with every child before its parent."""
    return sorted(layers, key=lambda layer: DEPTH.get(layer.kind, len(DEPTH)), reverse=True)
