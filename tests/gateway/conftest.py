"""Fixtures for gateway tests: a real Xvnc we own, a gateway on its own loop thread."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.gateway.helpers import LoopThread, XServer, banner, free_display, wait_until


@pytest.fixture(scope="session")
def xvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XServer]:
    """A TigerVNC Xvnc on a unix socket only (no TCP), security None, always shared."""
    if shutil.which("Xvnc") is None:
        pytest.fail("Xvnc is not installed: run scripts/setup.sh (tigervnc-standalone-server)")
    tmp = tmp_path_factory.mktemp("xvnc")
    sock, log = tmp / "rfb.sock", tmp / "xvnc.log"
    display = free_display()
    argv = ["Xvnc", f":{display}", "-rfbunixpath", str(sock), "-rfbport", "-1"]
    argv += ["-SecurityTypes", "None", "-geometry", "640x480", "-AlwaysShared", "-retro"]
    argv += ["-nolisten", "tcp"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: banner(sock) or proc.poll() is not None, 20, "Xvnc's RFB banner")
        if proc.poll() is not None:
            pytest.fail(f"Xvnc exited: {log.read_text(errors='replace')[-2000:]}")
        yield XServer(display, sock, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    """A fresh event loop thread, stopped after the test."""
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.stop()
