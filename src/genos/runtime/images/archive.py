"""Which Debian archive the layers are built from.

The main mirror is the composer's (``GENOS_DEBIAN_MIRROR``, else the host's
apt source); security updates come from ``GENOS_DEBIAN_SECURITY_MIRROR``, else
the host's ``debian-security`` source, else none. Nothing here names a host.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from genos.composer import debindex
from genos.errors import CapabilityError, CatalogError

APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def sources(release: str, mirror: str | None = None) -> list[str]:
    """One-line apt sources for ``release``: main, updates and (if known) security.

    Args:
        release: Debian codename.
        mirror: the main mirror; default :func:`genos.composer.debindex.mirror`.

    Returns:
        ``deb URI SUITE main`` lines.

    Raises:
        CapabilityError: no Debian mirror is configured on this host.
    """
    if mirror is None:
        try:
            mirror = debindex.mirror()
        except CatalogError as exc:
            raise CapabilityError(str(exc)) from exc
    lines = [f"deb {mirror} {release} main", f"deb {mirror} {release}-updates main"]
    security = security_mirror()
    if security is not None:
        lines.append(f"deb {security} {release}-security main")
    return lines


def security_mirror() -> str | None:
    """``GENOS_DEBIAN_SECURITY_MIRROR``, else the host's ``debian-security`` source."""
    configured = os.environ.get("GENOS_DEBIAN_SECURITY_MIRROR", "").strip()
    if configured:
        return configured.rstrip("/")
    for uri in _host_uris():
        if re.search(r"/debian-security/?$", uri) and uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    return None


def _host_uris() -> Iterator[str]:
    for path in _source_files():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            # One-line form: "deb [options] URI suite ..."; deb822: "URIs: URI ...".
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if words[:1] == ["URIs:"]:
                yield from words[1:]
            elif words[:1] == ["deb"]:
                yield from words[1:2]


def _source_files() -> list[Path]:
    files: list[Path] = []
    for src in APT_SOURCES:
        if src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in {".list", ".sources"})
        elif src.is_file():
            files.append(src)
    return files
