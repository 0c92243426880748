"""Helpers shared by gateway tests: polling with deadlines, a loop thread, Xvnc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` until it is true or ``timeout`` seconds pass (then fail)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


async def async_wait_until(
    check: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Like :func:`wait_until`, yielding to the event loop between polls."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class XServer:
    """A running Xvnc: its X display number and its RFB unix socket."""

    display: int
    socket: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment for X clients (xclip) talking to this display."""
        return {**os.environ, "DISPLAY": f":{self.display}"}


@contextlib.contextmanager
def run_xvnc(tmp: Path, geometry: str = "640x480", *, retro: bool = True) -> Iterator[XServer]:
    """A TigerVNC Xvnc of our own on a unix socket only (no TCP), security None,
    always shared; stopped (by its pid) on exit. ``retro``: the root window is
    the classic weave, else plain black."""
    if shutil.which("Xvnc") is None:
        pytest.fail("Xvnc is not installed: run scripts/setup.sh (tigervnc-standalone-server)")
    sock, log = tmp / "rfb.sock", tmp / "xvnc.log"
    display = free_display()
    argv = ["Xvnc", f":{display}", "-rfbunixpath", str(sock), "-rfbport", "-1"]
    argv += ["-SecurityTypes", "None", "-geometry", geometry, "-AlwaysShared", "-nolisten", "tcp"]
    argv += ["-retro"] if retro else []
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: banner(sock) or proc.poll() is not None, 20, "Xvnc's RFB banner")
        if proc.poll() is not None:
            pytest.fail(f"Xvnc exited: {log.read_text(errors='replace')[-2000:]}")
        yield XServer(display, sock, proc, log)
    finally:
        end_process(proc)


def end_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate a process we started (by its handle), killing it if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def free_display() -> int:
    for n in range(60, 400):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    pytest.fail("no free X display number")


def banner(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
            return sock.recv(12).startswith(b"RFB ")
        except OSError:
            return False


class LoopThread:
    """An asyncio loop on its own thread, for sync clients (vncdotool) in tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        """Stop the loop and join the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run one async test body with an overall deadline."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())
