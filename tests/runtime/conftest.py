"""Fixtures for tests that run real environments: an event loop and a data dir per module."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for the module's environments."""
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private GenOS data dir (overlay dirs, volumes, audit log, network state)."""
    root = tmp_path_factory.mktemp("genos-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENOS_DATA_DIR", str(root))
        yield root
