"""The host's apt sources: which archive URIs this machine already trusts.

GenOS names no mirror of its own: the Debian index and the image builds use
the mirror the host's apt uses, unless an environment variable says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def uris() -> Iterator[str]:
    """Every archive URI in apt's one-line (``deb ...``) and deb822 (``URIs:``) sources."""
    for path in _source_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            # One-line form: "deb [options] URI suite ..."; deb822: "URIs: URI ...".
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if words[:1] == ["URIs:"]:
                yield from words[1:]
            elif words[:1] == ["deb"]:
                yield from words[1:2]


def find(path_pattern: str) -> str | None:
    """The first http(s) URI whose path matches ``path_pattern`` (e.g. ``/debian/?$``)."""
    for uri in uris():
        if re.search(path_pattern, uri) and uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    return None


def _source_files() -> list[Path]:
    files: list[Path] = []
    for src in APT_SOURCES:
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in {".list", ".sources"})
        elif src.is_file():
            files.append(src)
    return files
