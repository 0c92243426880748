"""Fixtures for runtime tests: one shared store of real layers, cached outside the repo.

Real layers take half a minute to build, so every test session shares one
store under ``$GENOS_TEST_CACHE`` (default ``/var/cache/genos-test``). Layers are
content-addressed, so a rerun finds them and builds nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from genos.runtime.images import ImageStore, Layer
from genos.spec import EnvironmentSpec

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
