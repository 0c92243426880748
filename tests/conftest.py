"""Fixtures shared by every test package.

Real image layers take half a minute to build, so every test session shares
one store under ``$GENOS_TEST_CACHE`` (default ``/var/cache/genos-test``),
outside the repository. Layers are content-addressed: a rerun builds nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from genos.composer import HostLimits, Knowledge
from genos.composer.knowledge import default_knowledge
from genos.runtime.images import ImageStore, Layer
from genos.spec import EnvironmentSpec

pytest_plugins = ["tests.databases"]

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


TEST_CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))


@pytest.fixture(scope="session")
def image_store() -> ImageStore:
    """The session's store of real layers (``$GENOS_TEST_CACHE/images``)."""
    return ImageStore(TEST_CACHE / "images")


@pytest.fixture(scope="session")
def desktop_spec() -> EnvironmentSpec:
    """A minimal environment: bookworm, openbox, VNC, no apps."""
    return EnvironmentSpec(name="desktop-test")


@pytest.fixture(scope="session")
def desktop_layers(image_store: ImageStore, desktop_spec: EnvironmentSpec) -> list[Layer]:
    """The base and desktop layers of ``desktop_spec`` (built once, then cached)."""
    return image_store.ensure(desktop_spec)
