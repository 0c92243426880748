"""Fixtures for tests that run real environments: an event loop, a data dir, QEMU roots, and
one running desktop a module's tests share."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from genos.runtime.images import ImageStore, Layer
from genos.spec import EnvironmentSpec
from tests.sandbox.probes import Env, running_env


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


@pytest.fixture(scope="module")
def env_security() -> dict[str, bool]:
    """Security settings a module's shared desktop has on top of ``desktop_spec``'s (a module
    overrides this fixture)."""
    return {}


@pytest.fixture(scope="module")
def env(
    runner: asyncio.Runner,
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    *,
    desktop_layers: list[Layer],
    data_root: Path,
    env_security: dict[str, bool],
) -> Iterator[Env]:
    """A running desktop (``desktop_spec`` with ``env_security``) shared by a module's tests."""
    assert desktop_layers
    security = desktop_spec.security.model_copy(update=env_security)
    spec = desktop_spec.model_copy(update={"security": security})
    with running_env(runner, image_store, spec, data_root) as running:
        yield running
