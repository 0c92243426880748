"""Fixtures for gateway tests: a real Xvnc we own, a gateway on its own loop thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.helpers import LoopThread, XServer, run_xvnc


@pytest.fixture(scope="session")
def xvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XServer]:
    """A TigerVNC Xvnc on a unix socket only (no TCP), security None, always shared."""
    with run_xvnc(tmp_path_factory.mktemp("xvnc")) as server:
        yield server


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    """A fresh event loop thread, stopped after the test."""
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.stop()
