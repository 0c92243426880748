"""Host side of ``bench/stream.py``: Xvnc, the workload, websockify, the gateway, a netem link.

Every process is started here with its pid kept in :class:`Procs`, and is
ended by that pid (SIGTERM, wait, SIGKILL). Network namespaces, the veth pair
and their qdiscs carry the ``genos-bench-`` prefix; leftovers of that prefix
only are removed before use.

Run as a module entry point, this file is the gateway under test: a Starlette
app served by uvicorn (``ws="websockets-sansio"`` as in ``genos.api.serve``)
whose route does what the API's does::

    python bench/_stream_host.py gateway HOST PORT SOCKET (adaptive|fixed)
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from genos.gateway import (
    REGISTRY,
    Grant,
    Permission,
    ProxyOptions,
    Tuning,
    proxy,
    websocket_stream,
)

NS_A, NS_B = "genos-bench-a", "genos-bench-b"  # viewer side, display side
VETH_A, VETH_B = "genos-bv-a", "genos-bv-b"
ADDR_A, ADDR_B = "198.18.250.1", "198.18.250.2"
HERE = Path(__file__).resolve().parent
PYTHON = sys.executable


@dataclass
class Procs:
    """Processes this benchmark started; :meth:`stop_all` ends each by pid."""

    running: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self.running.append(proc)
        return proc.pid

    def stop(self, pid: int) -> None:
        for proc in [p for p in self.running if p.pid == pid]:
            _end(proc)
            self.running.remove(proc)

    def stop_all(self) -> None:
        while self.running:
            _end(self.running.pop())

    def alive(self, pid: int) -> bool:
        return any(p.pid == pid and p.poll() is None for p in self.running)


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check()`` every 10 ms until true; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _unix_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(1)
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


def free_display() -> int:
    x11 = Path("/tmp")  # noqa: S108 - where every X server keeps its socket and lock
    for n in range(170, 400):
        if not (x11 / ".X11-unix" / f"X{n}").exists() and not (x11 / f".X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Display:
    """One Xvnc on a unix socket only, plus X clients drawn on it."""

    procs: Procs
    tmp: Path
    number: int = 0
    socket: Path = Path()
    pid: int = 0
    workload: int = 0

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": f":{self.number}"}

    def start(self, geometry: str = "1280x800") -> None:
        self.number, self.socket = free_display(), self.tmp / "xvnc.sock"
        argv = ["Xvnc", f":{self.number}", "-rfbunixpath", str(self.socket), "-rfbport", "-1"]
        argv += ["-SecurityTypes", "None", "-geometry", geometry, "-AlwaysShared"]
        argv += ["-nolisten", "tcp", "-desktop", "genos-bench"]
        self.pid = self.procs.start(argv, self.tmp / "xvnc.log")
        wait_for(lambda: _unix_answers(self.socket), 20, "Xvnc's socket")
        # A root cursor Xvnc draws into the framebuffer (the viewer asks for no
        # Cursor pseudo-encoding): a pointer move is then a screen change.
        xsetroot = ["xsetroot", "-cursor_name", "left_ptr", "-solid", "gray30"]
        subprocess.run(xsetroot, env=self.env, check=True, timeout=10)

    def animate(self, fps: float = 25.0) -> None:
        """Start the moving workload: a photo-like picture panning at (0, 0), 640x360."""
        argv = [PYTHON, str(HERE / "_stream_draw.py"), str(self.number), str(fps)]
        self.workload = self.procs.start(argv, self.tmp / "draw.log")
        time.sleep(1.0)  # its picture is ready and drawing
        if not self.procs.alive(self.workload):
            raise RuntimeError(f"the workload died: {(self.tmp / 'draw.log').read_text()[-500:]}")

    def still(self) -> None:
        """Stop the workload and repaint the root so the screen is quiet."""
        if self.workload:
            self.procs.stop(self.workload)
            self.workload = 0


def _in_ns(netns: str) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def _listening(host: str, port: int, netns: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            connect_in(netns, host, port).close()
        except OSError:
            return False
        return True

    return check


def start_websockify(
    procs: Procs, tmp: Path, target: Path, host: str, port: int, *, netns: str = ""
) -> int:
    argv = [*_in_ns(netns), "websockify", f"--unix-target={target}", f"{host}:{port}"]
    pid = procs.start(argv, tmp / f"websockify-{port}.log")
    wait_for(_listening(host, port, netns), 20, "websockify")
    return pid


def start_gateway(
    procs: Procs, tmp: Path, target: Path, host: str, port: int, *, mode: str, netns: str = ""
) -> int:
    argv = [*_in_ns(netns), PYTHON, str(HERE / "_stream_host.py"), "gateway", host, str(port)]
    argv += [str(target), mode]
    pid = procs.start(argv, tmp / f"gateway-{mode}-{port}.log")
    wait_for(_listening(host, port, netns), 30, f"the gateway ({mode})")
    return pid


def connect_in(netns: str, host: str, port: int) -> socket.socket:
    """A TCP connection made from inside network namespace ``netns`` ("" for this one).

    ``setns`` moves only the calling thread, so a short-lived thread enters
    the namespace and connects; the socket stays there after the thread ends.
    """
    made: list[socket.socket | OSError] = []

    def run() -> None:
        try:
            if netns:
                fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
                try:
                    if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {netns}")
                finally:
                    os.close(fd)
            sock = socket.create_connection((host, port), 5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            made.append(sock)
        except OSError as exc:  # handed to the caller's thread
            made.append(exc)

    thread = threading.Thread(target=run, name=f"connect-in-{netns}")
    thread.start()
    thread.join()
    if isinstance(made[0], OSError):
        raise made[0]
    return made[0]


_LIBC = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


# -- the constrained link -------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], capture_output=True, check=check, timeout=10)


def link_down() -> None:
    """Remove this benchmark's namespaces (and so the veth pair and qdiscs in them)."""
    for ns in (NS_A, NS_B):
        _ip("netns", "del", ns, check=False)


def link_up(rate: str) -> None:
    """Two namespaces joined by a veth pair; each end sends at most ``rate``.

    A tbf on each end limits the rate with a queue of at most 100 ms (a
    modest buffer, as on a real access link) and splits GSO packets so the
    rate holds. The delay comes from :func:`start_delay` (no netem here).
    """
    link_down()
    _ip("netns", "add", NS_A)
    _ip("netns", "add", NS_B)
    _ip("link", "add", VETH_A, "netns", NS_A, "type", "veth", "peer", VETH_B, "netns", NS_B)
    for ns, dev, addr in ((NS_A, VETH_A, ADDR_A), (NS_B, VETH_B, ADDR_B)):
        _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
        _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        tbf = ["tbf", "rate", rate, "burst", "16kb", "latency", "100ms"]
        argv = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", *tbf]
        subprocess.run(argv, check=True, capture_output=True, timeout=10)


def start_delay(procs: Procs, tmp: Path, port: int, target: int, delay_ms: float) -> int:
    """A delay line in ``NS_B`` on ``ADDR_B:port`` to ``127.0.0.1:target`` there."""
    argv = [*_in_ns(NS_B), PYTHON, str(HERE / "_stream_delay.py"), ADDR_B, str(port)]
    argv += [str(target), str(delay_ms)]
    pid = procs.start(argv, tmp / f"delay-{port}.log")
    wait_for(_listening(ADDR_B, port, NS_A), 20, "the delay line")
    return pid


# -- the gateway under test -------------------------------------------------------------


async def _watch() -> None:
    """Every second, one line per live connection: the controller's level and figures."""
    while True:
        await asyncio.sleep(1.0)
        for c in REGISTRY.snapshot():
            link = c.link
            print(
                f"level={link.level} rtt_ms={link.rtt_ms or 0:.0f} fps={link.fps:.1f} "
                f"kbps={link.kbps:.0f} q={link.quality} c={link.compression}",
                flush=True,
            )


def level_log(log: Path) -> str:
    """The levels a gateway's :func:`_watch` printed, in order, compressed (``6x3 5x2``)."""
    levels = [line.split()[0].removeprefix("level=") for line in _lines(log) if "level=" in line]
    runs: list[list[str | int]] = []
    for level in levels:
        if runs and runs[-1][0] == level:
            runs[-1][1] = int(runs[-1][1]) + 1
        else:
            runs.append([level, 1])
    return " ".join(f"{lv}x{n}" for lv, n in runs) or "-"


def _lines(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines() if log.exists() else []


def serve_gateway(host: str, port: int, target: Path, mode: str) -> None:
    """Serve the gateway's WebSocket route at ``/ws`` until SIGTERM."""
    # "fixed": the narrowest off switch there is - never adjust, stay on the start level.
    tuning = Tuning(adjust_every=math.inf) if mode == "fixed" else None
    options = ProxyOptions(tuning=tuning)

    async def route(websocket: WebSocket) -> None:
        grant = Grant("bench", "bench", Permission.CONTROL)
        await websocket.accept(subprotocol="binary")
        watch = asyncio.create_task(_watch())
        try:
            await proxy(websocket_stream(websocket), target, grant, options)
        finally:
            watch.cancel()

    app = Starlette(routes=[WebSocketRoute("/ws", route)])
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", ws="websockets-sansio", lifespan="off"
    )
    uvicorn.Server(config).run()


if __name__ == "__main__" and sys.argv[1:2] == ["gateway"]:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _host, _port, _target, _mode = sys.argv[2:6]
    serve_gateway(_host, int(_port), Path(_target), _mode)
