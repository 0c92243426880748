"""The knowledge base the composer resolves against, and the host it composes for.

:class:`Knowledge` joins the curated catalog with Debian's package index of
each release and what the archive says its programs are for (all loaded
lazily from the cache, once per process), the task search built from both,
and the speller. With nothing cached the composer still works from the
catalog alone and says so when a name needs the index. :class:`HostLimits` is
the most this host could ever give one environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from genos.composer import catalog as catalog_mod
from genos.composer import debindex, programs
from genos.composer.catalog import Catalog
from genos.composer.debindex import PackageIndex
from genos.composer.lexicon import ENV_NOUNS, VOCABULARY, lexicon_words
from genos.composer.matcher import ORDINARY, PhraseMatcher
from genos.composer.programs import ProgramIndex
from genos.composer.search import TaskIndex
from genos.composer.spelling import Speller
from genos.composer.words import STOP
from genos.errors import CatalogError
from genos.paths import data_dir


def _load_programs(release: str) -> ProgramIndex:
    return programs.load(release, debindex.host_arch())


@dataclass
class Knowledge:
    """Catalog + Debian index + what the programs are for, as the composer sees them."""

    catalog: Catalog
    index_loader: Callable[[str], PackageIndex] = debindex.load
    programs_loader: Callable[[str], ProgramIndex] = _load_programs
    _indexes: dict[str, PackageIndex | None] = field(default_factory=dict, repr=False)
    _programs: dict[str, ProgramIndex | None] = field(default_factory=dict, repr=False)
    _tasks: dict[str, TaskIndex] = field(default_factory=dict, repr=False)
    _speller: Speller | None = field(default=None, repr=False)
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

    def programs(self, release: str) -> ProgramIndex | None:
        """What ``release``'s programs are for, or None when it is not cached."""
        if release not in self._programs:
            try:
                self._programs[release] = self.programs_loader(release)
            except CatalogError:
                self._programs[release] = None
        return self._programs[release]

    def tasks(self, release: str) -> TaskIndex:
        """The task search of ``release`` (the catalog alone when nothing is cached)."""
        if release not in self._tasks:
            self._tasks[release] = TaskIndex(self.catalog, self.programs(release), release)
        return self._tasks[release]

    def speller(self) -> Speller:
        """The speller: catalog phrases and lexicon words, against every word the archive uses."""
        if self._speller is None:
            found = self.programs("bookworm")
            words_df = found.words_df if found is not None else {}
            english = found.english if found is not None else frozenset()
            index = self.index("bookworm")
            common = STOP | ORDINARY | ENV_NOUNS | lexicon_words()

            def known(word: str) -> bool:
                # Two or fewer uses in all of Debian's descriptions may be a typo there too.
                used = words_df.get(word, 0) >= 3
                return word in common or word in english or used or bool(index and index.has(word))

            vocabulary = [w for phrase, _, _ in self.catalog.phrases() for w in phrase.split()]
            self._speller = Speller([*vocabulary, *VOCABULARY], known)
        return self._speller


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
