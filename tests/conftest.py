"""Fixtures shared by every test package."""

from __future__ import annotations

import pytest

from genos.composer import HostLimits, Knowledge
from genos.composer.knowledge import default_knowledge

# A fixed host so composer tests do not depend on the machine they run on.
TEST_HOST = HostLimits(cpus=2, memory_mb=23 * 1024, disk_mb=200 * 1024)


@pytest.fixture(scope="session")
def kb() -> Knowledge:
    """The shipped catalog with Debian's real (cached) package indexes."""
    knowledge = default_knowledge()
    for release in ("bookworm", "trixie"):
        if knowledge.index(release) is None:
            pytest.fail(f"Debian's {release} index is not cached: run `genos catalog update`")
    return knowledge


@pytest.fixture
def host() -> HostLimits:
    """A 2-CPU, 23 GiB host."""
    return TEST_HOST
