"""End to end with the real runtime: ``genos serve --driver oci``, the CLI, a real desktop."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from genos.api.views import TCG_NOTE
from genos.runtime.images import ImageStore, Layer
from genos.spec import EnvironmentSpec, dump
from tests.api.test_server import (
    Server,
    as_json,
    connected,
    display_token,
    free_port,
    genos,
    native_hello,
    rfb_size,
    start_server,
    stop,
)
from tests.api.viewers import agreement, grab, placed_agreement, rfb_frame
from tests.gateway.helpers import XServer, run_xvnc
from tests.sandbox.probes import NOTHING, host_traces

ARTIFACTS = Path(os.environ.get("GENOS_ARTIFACTS", "/tmp/genos-artifacts")) / "viewers"
pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.server]


@pytest.fixture(scope="module")
def real_server(
    tmp_path_factory: pytest.TempPathFactory, image_store: ImageStore, desktop_layers: list[Layer]
) -> Iterator[Server]:
    """``genos serve --driver oci`` over the warm test image store."""
    # Under /var/tmp: QEMU's own user must traverse every parent (pytest's are 0700).
    top = Path(tempfile.mkdtemp(prefix="genos-real-", dir="/var/tmp"))
    top.chmod(0o711)
    root = top / "data"
    args = [
        "--driver",
        "oci",
        "--cpus",
        "2",
        "--memory-mb",
        "4096",
        "--images-dir",
        str(image_store.root),
    ]
    process, url = start_server(root, *args)
    token = (root / "api" / "admin.token").read_text().strip()
    try:
        yield Server(url, root, token, process)
    finally:
        stop(process)
        shutil.rmtree(top, ignore_errors=True)


def test_up_show_connect_rm_with_a_real_desktop(
    real_server: Server, desktop_spec: EnvironmentSpec, tmp_path: Path
) -> None:
    """A real desktop comes up via the CLI, reports cgroup use, streams RFB, and goes away clean."""
    spec = tmp_path / "desk.json"
    spec.write_text(json.dumps(dump(desktop_spec)))
    env = as_json(genos(real_server, "up", "-f", str(spec), "--json"))
    assert env["state"] == "running"
    shown = as_json(genos(real_server, "show", env["id"], "--json"))
    assert shown["usage"]["pids"] >= 3  # tini, the session, Xvnc
    assert shown["usage"]["memory_bytes"] > 10 << 20
    with connected(real_server, env["id"]) as announced:
        assert rfb_size(announced["port"]) == (1280, 800)
    host = json.loads(genos(real_server, "host", "--json").stdout)
    assert host["requested"]["environments"] == 1
    assert host["used"]["memory_mb"] > 10  # the desktop's real working set, from its cgroup
    assert as_json(genos(real_server, "rm", env["id"], "--json"))["state"] == "terminated"
    assert host_traces(env["id"], real_server.root) == NOTHING


@pytest.mark.qemu
def test_a_microvm_through_the_server(real_server: Server, tmp_path: Path) -> None:
    """A microvm goes to the QEMU driver; TCG is said; connect speaks RFB; rm cleans up."""
    spec = tmp_path / "micro.json"
    micro = {"name": "micro-e2e", "tier": "microvm", "resources": {"memory_mb": 512}}
    spec.write_text(json.dumps(micro))
    env = as_json(genos(real_server, "up", "-f", str(spec), "--json"))
    assert env["state"] == "running", env
    host = as_json(genos(real_server, "host", "--json"))
    if host["accelerator"] == "tcg":
        assert env["tier_note"] == TCG_NOTE
    assert "microvm: qemu" in host["runtimes"]
    with connected(real_server, env["id"]) as announced:
        assert rfb_size(announced["port"]) == (1280, 800)  # QEMU's VNC shows the guest's Xorg
    assert as_json(genos(real_server, "rm", env["id"], "--json"))["state"] == "terminated"
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _names(p, env["id"])]
    assert left == []


def _names(proc: Path, env_id: str) -> bool:
    try:
        return f"genos-{env_id}".encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


SPICE_MAGIC = b"REDQ"


def spice_link(port: int) -> tuple[int, int]:
    """Send a SPICE link message for the main channel; the reply's (major version, error)."""
    mess = struct.pack("<IBBIII", 0, 1, 0, 0, 0, 18)  # connection 0, main channel, no caps
    header = SPICE_MAGIC + struct.pack("<III", 2, 2, len(mess))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(header + mess)
        reply = b""
        while len(reply) < 20:
            chunk = sock.recv(64)
            if not chunk:
                break
            reply += chunk
    assert reply[:4] == SPICE_MAGIC, reply[:16]
    major, _minor, _size, error = struct.unpack("<IIII", reply[4:20])
    return major, error


@pytest.mark.qemu
def test_a_spice_vm_through_the_gateway(real_server: Server, tmp_path: Path) -> None:
    """A spice vm answers a SPICE link through genos connect --spice; --view is refused."""
    spec = tmp_path / "spice.json"
    vm = {"name": "spice-e2e", "tier": "vm", "resources": {"memory_mb": 512},
          "display": {"protocol": "spice", "headless": True}}  # fmt: skip
    spec.write_text(json.dumps(vm))
    env = as_json(genos(real_server, "up", "-f", str(spec), "--json"))
    assert env["state"] == "running", env
    with (
        connected(real_server, env["id"], "--spice") as announced,
        connected(real_server, env["id"]) as vnc,
    ):
        assert announced["protocol"] == "spice"
        assert spice_link(announced["port"]) == (2, 0)
        # remote-viewer, full screen on a screen of the guest's size, shows
        # what the VNC path shows.
        expected = _desktop(vnc["port"])
        with run_xvnc(tmp_path, f"{expected.width}x{expected.height}", retro=False) as screen:
            argv = ["remote-viewer", "--kiosk", f"spice://127.0.0.1:{announced['port']}"]
            assert _viewer_shows(screen, argv, expected, "spice") >= 0.95
    refused = genos(real_server, "connect", env["id"], "--spice", "--view")
    assert refused.returncode == 2
    assert "VNC only" in refused.stderr
    assert as_json(genos(real_server, "rm", env["id"], "--json"))["state"] == "terminated"


def test_rdp_through_the_gateway_shows_the_desktop(real_server: Server, tmp_path: Path) -> None:
    """FreeRDP authenticates through genos connect --rdp and shows the same desktop as RFB."""
    spec = tmp_path / "rdp.json"
    rdp_spec = {"name": "rdp-e2e", "display": {"protocol": "rdp", "headless": True}}
    spec.write_text(json.dumps(rdp_spec))
    env = as_json(genos(real_server, "up", "-f", str(spec), "--json"))
    assert env["state"] == "running", env
    refused = genos(real_server, "connect", env["id"], "--rdp", "--view")
    assert refused.returncode == 2
    assert "VNC only" in refused.stderr
    with (
        run_xvnc(tmp_path, "1280x800", retro=False) as screen,
        connected(real_server, env["id"], "--rdp") as rdp,
        connected(real_server, env["id"]) as vnc,
    ):
        assert rdp["protocol"] == "rdp"
        target = f"/v:127.0.0.1:{rdp['port']}"
        # xrdp takes any user name and password (the gateway's token is the
        # authentication); with none it shows its session dialog first.
        login = ["/u:user", "/p:genos"]
        auth = subprocess.run(
            ["xfreerdp", target, "/auth-only", "/cert:ignore", *login],
            env=screen.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert auth.returncode == 0, auth.stderr[-2000:]
        assert "Authentication only, exit status 0" in auth.stderr
        expected = _desktop(vnc["port"])
        argv = ["xfreerdp", target, "/cert:ignore", *login, "/f", "/bpp:24", "-wallpaper"]
        assert _viewer_shows(screen, argv, expected, "rdp") >= 0.95
    assert as_json(genos(real_server, "rm", env["id"], "--json"))["state"] == "terminated"
    assert host_traces(env["id"], real_server.root) == NOTHING


def _desktop(port: int, timeout: float = 60.0) -> Image.Image:
    """The environment's screen over RFB, once it shows something (a terminal: mostly white)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = rfb_frame(port)
        if agreement(frame, Image.new("RGB", frame.size)) < 0.5 or time.monotonic() > deadline:
            return frame
        time.sleep(1)


def _viewer_shows(
    screen: XServer, argv: list[str], expected: Image.Image, name: str, timeout: float = 30.0
) -> float:
    """Run a native viewer on ``screen``; how much of the screen equals ``expected`` once it
    does (or at the deadline). The empty screen must not pass for the desktop, so a viewer
    showing nothing cannot. Pictures go to ``$GENOS_ARTIFACTS/viewers/<name>-*.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    expected.save(ARTIFACTS / f"{name}-rfb.png")
    assert placed_agreement(grab(screen.display), expected) < 0.5, "the empty screen passes"
    viewer = subprocess.Popen(argv, env=screen.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            seen = grab(screen.display)
            share = placed_agreement(seen, expected)
            if share >= 0.95 or time.monotonic() > deadline:
                seen.save(ARTIFACTS / f"{name}-viewer.png")
                return share
            time.sleep(0.5)
    finally:
        viewer.terminate()
        viewer.wait(10)


def test_a_gateway_of_its_own_serves_tokens_of_the_server(
    real_server: Server, desktop_spec: EnvironmentSpec, tmp_path: Path, image_store: ImageStore
) -> None:
    """genos gateway beside genos serve (same data dir) admits the server's tokens, natively too."""
    spec = tmp_path / "desk.json"
    spec.write_text(json.dumps(dump(desktop_spec)))
    env = as_json(genos(real_server, "up", "-f", str(spec), "--json"))
    vnc_port = free_port()
    args = ["--vnc-port", str(vnc_port), "--images-dir", str(image_store.root)]
    gateway, url = start_server(real_server.root, *args, command="gateway")
    try:
        token = display_token(real_server.url, real_server.token, env["id"])
        with socket.create_connection(("127.0.0.1", vnc_port), timeout=10) as sock:
            assert native_hello(sock, env["id"], token) == b"RFB 003.008\n"
        assert httpx.get(f"{url}/v1/environments").status_code == 404  # no API here
    finally:
        stop(gateway)
    assert as_json(genos(real_server, "rm", env["id"], "--json"))["state"] == "terminated"
    assert host_traces(env["id"], real_server.root) == NOTHING
