"""Which Debian archive the layers are built from.

The main mirror is the composer's (``GENOS_DEBIAN_MIRROR``, else the host's
apt source); security updates come from ``GENOS_DEBIAN_SECURITY_MIRROR``, else
the host's ``debian-security`` source, else none. Nothing here names a host.
"""

from __future__ import annotations

import os

from genos import aptsources
from genos.composer import debindex
from genos.errors import CapabilityError, CatalogError


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
    return aptsources.find(r"/debian-security/?$")
