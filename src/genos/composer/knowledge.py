"""The knowledge base the composer resolves against, and the host it composes for.

:class:`Knowledge` joins the curated catalog with Debian's package index of
each release (loaded lazily from the cache, once per process). With no cached
index the composer still works from the catalog alone and says so when a name
needs the index. :class:`HostLimits` is the most this host could ever give one
environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from genos.composer import catalog as catalog_mod
from genos.composer import debindex
from genos.composer.catalog import Catalog
from genos.composer.debindex import PackageIndex
from genos.composer.matcher import PhraseMatcher
from genos.errors import CatalogError
from genos.paths import data_dir


@dataclass
class Knowledge:
    """Catalog + Debian index, as the composer sees them."""

    catalog: Catalog
    index_loader: Callable[[str], PackageIndex] = debindex.load
    _indexes: dict[str, PackageIndex | None] = field(default_factory=dict, repr=False)
    matcher: PhraseMatcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.matcher = PhraseMatcher(self.catalog.phrases())

    def index(self, release: str) -> PackageIndex | None:
        """Debian's index of ``release``, or None when it is not cached."""
        if release not in self._indexes:
            try:
                self._indexes[release] = self.index_loader(release)
            except CatalogError:
                self._indexes[release] = None
        return self._indexes[release]


@cache
def default_knowledge() -> Knowledge:
    """The shipped catalog with the cached indexes (one per process)."""
    return Knowledge(catalog_mod.load())


@dataclass(frozen=True)
class HostLimits:
    """The most one environment could get here: all of the host, less a reserve."""

    cpus: int
    memory_mb: int
    disk_mb: int

    @classmethod
    def from_host(cls, reserve_mb: int = 1024) -> HostLimits:
        """Read the host's CPUs, memory (``/proc/meminfo``) and data-disk size."""
        return cls(
            cpus=os.cpu_count() or 1,
            memory_mb=max(256, _mem_total_mb() - reserve_mb),
            disk_mb=_disk_total_mb(data_dir()),
        )


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024  # pragma: no cover - every Linux has MemTotal


def _disk_total_mb(path: Path) -> int:
    while not path.exists():
        path = path.parent
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize // (1024 * 1024)
