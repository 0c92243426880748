"""Fixtures for tests that run real environments: an event loop, a data dir, QEMU roots."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
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


@pytest.fixture(scope="module")
def roots() -> Iterator[tuple[Path, Path]]:
    """A QEMU run root and data root QEMU's own user can reach (pytest's tmp dirs are 0700)."""
    run_root = Path(tempfile.mkdtemp(prefix="genos-qemu-test-", dir="/run"))
    data_root = Path(tempfile.mkdtemp(prefix="genos-qemu-test-", dir="/var/tmp"))
    for path in (run_root, data_root):
        path.chmod(0o711)
    yield run_root / "qemu", data_root
    shutil.rmtree(run_root, ignore_errors=True)
    shutil.rmtree(data_root, ignore_errors=True)
