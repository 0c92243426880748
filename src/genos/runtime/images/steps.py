"""Steps: named, versioned changes a recipe makes after installing its packages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FileSpec:
    """A file a step writes into the layer (owned by root)."""

    path: str
    content: str
    mode: int = 0o644

    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass(frozen=True)
class Step:
    """A named, versioned change a recipe makes to its layer.

    ``files`` are written before the packages are installed (so configuration
    such as dpkg path excludes applies to the install); each of ``run`` is run
    with ``/bin/sh -c`` inside the layer's root after the install.
    """

    name: str
    version: int
    files: tuple[FileSpec, ...] = ()
    run: tuple[str, ...] = ()

    def identity(self) -> dict[str, Any]:
        """What of this step goes into the digest."""
        return {
            "name": self.name,
            "version": self.version,
            "files": [[f.path, f.mode, f.sha256()] for f in self.files],
            "run": list(self.run),
        }
