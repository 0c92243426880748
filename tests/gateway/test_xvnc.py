"""The gateway against a real TigerVNC Xvnc: frames, viewers, input and clipboard policy."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image, ImageChops
from vncdotool import api

from genos.errors import StreamClosedError
from genos.gateway import ConnectionRegistry, Grant, Permission, ProxyOptions, serve_local
from genos.gateway.server_messages import ServerCutText, UpdateRelayed
from genos.spec import Direction
from tests.gateway.helpers import LoopThread, XServer, async_wait_until, run
from tests.gateway.rfbclient import Viewer


@pytest.fixture(scope="session")
def vnc_api() -> Iterator[ModuleType]:
    """vncdotool's threaded API; its Twisted reactor runs once per session."""
    try:
        yield api
    finally:
        api.shutdown()


def grant(
    permission: Permission = Permission.CONTROL, clipboard: Direction = Direction.BOTH
) -> Grant:
    """A grant on the test display."""
    return Grant("xvnc", "tester", permission, clipboard)


def capture(api: ModuleType, server: str, path: Path) -> Image.Image:
    """One full frame through vncdotool, as an RGB image."""
    client = api.connect(server, timeout=30)
    try:
        client.captureScreen(str(path))
    finally:
        client.disconnect()
    with Image.open(path) as image:
        return image.convert("RGB")


def test_vncdotool_frame_through_gateway_is_pixel_equal(
    xvnc: XServer, vnc_api: ModuleType, loop_thread: LoopThread, tmp_path: Path
) -> None:
    """A native VNC client captures the same pixels through serve_local as on the socket."""
    server, port = loop_thread.run(serve_local(grant(Permission.VIEW), lambda _env: xvnc.socket))
    try:
        through = capture(vnc_api, f"127.0.0.1::{port}", tmp_path / "gateway.png")
    finally:
        server.close()
        loop_thread.run(server.wait_closed())
    direct = capture(vnc_api, str(xvnc.socket), tmp_path / "direct.png")
    assert through.size == direct.size == (640, 480)
    assert ImageChops.difference(through, direct).getbbox() is None
    assert len(direct.getcolors(1 << 20) or []) > 1  # -retro's root weave, not a blank screen


async def read_forever(viewer: Viewer) -> None:
    """Read messages until the stream ends (raises StreamClosedError)."""
    while True:
        await viewer.next_message()


async def frame(viewer: Viewer) -> UpdateRelayed:
    """Request a full frame and read until its update arrives."""
    await viewer.request(incremental=False)
    while True:
        msg = await viewer.next_message()
        if isinstance(msg, UpdateRelayed) and msg.nbytes >= 640 * 480 * 4:
            return msg
        if isinstance(msg, UpdateRelayed):
            await viewer.request(incremental=False)


async def viewer_on(port: int, *encodings: int) -> Viewer:
    """A test viewer on the gateway port, handshaken, Raw + cursor + desktop size."""
    viewer = await Viewer.tcp(port)
    OPEN.append(viewer)
    await viewer.handshake()
    await viewer.set_encodings(*(encodings or (0, -239, -223)))
    return viewer


OPEN: list[Viewer] = []


@contextlib.asynccontextmanager
async def gateway(
    xvnc: XServer, g: Grant, registry: ConnectionRegistry | None = None
) -> AsyncIterator[int]:
    """serve_local for ``g`` on the test display; closes it and every viewer opened."""
    options = ProxyOptions(registry=registry if registry is not None else ConnectionRegistry())
    server, port = await serve_local(g, lambda _e: xvnc.socket, options=options)
    try:
        yield port
    finally:
        while OPEN:
            await OPEN.pop().close()
        server.close()
        await server.wait_closed()


def test_several_viewers_get_frames(xvnc: XServer) -> None:
    """Three viewers on one display each receive a whole frame at once."""

    async def go() -> None:
        registry = ConnectionRegistry()
        async with gateway(xvnc, grant(), registry) as port:
            viewers = [await viewer_on(port) for _ in range(3)]
            updates = await asyncio.gather(*(frame(v) for v in viewers))
            assert all(u.nbytes >= 640 * 480 * 4 for u in updates)
            assert len(registry.snapshot("xvnc")) == 3
        await async_wait_until(lambda: registry.count() == 0, what="connections to end")

    run(go())


def test_tight_stream_from_xvnc_is_relayed(xvnc: XServer) -> None:
    """Xvnc's preferred Tight encoding, with JPEG levels, passes the gateway's checks."""

    async def go() -> None:
        async with gateway(xvnc, grant()) as port:
            viewer = await viewer_on(port, 7, 0, -239, -223, -224, -308, -26, -247)
            for attempt in range(5):  # Xvnc answers a full request with the layout alone first
                await viewer.request(incremental=attempt > 0)
                while not isinstance(await viewer.next_message(), UpdateRelayed):
                    pass
                if len(viewer.updates[-1]) > 200:
                    break
            pixels = viewer.updates[-1]
            assert 200 < len(pixels) < 640 * 480  # the whole screen, compressed: not Raw
            x, y, w, _h, enc = struct.unpack("!HHHHi", pixels[4:16])
            assert (x, y, w, enc) == (0, 0, 640, 7)  # a full-width Tight strip first

    run(go())


def test_malformed_viewer_closed_neighbour_keeps_streaming(xvnc: XServer) -> None:
    """One viewer sending an unknown message is cut off; the other still gets frames."""

    async def go() -> None:
        async with gateway(xvnc, grant()) as port:
            good, bad = await viewer_on(port), await viewer_on(port)
            await frame(good)
            await bad.stream.write(b"\xfe" + b"\x00" * 20)
            with pytest.raises(StreamClosedError, match="end of stream"):
                await read_forever(bad)
            await frame(good)
            assert xvnc.process.poll() is None

    run(go())


def selection(xvnc: XServer) -> str:
    """The X CLIPBOARD selection's text on the display, or '' if none."""
    out = subprocess.run(
        ["xclip", "-o", "-selection", "clipboard"],
        env=xvnc.env,
        capture_output=True,
        timeout=10,
        check=False,
    )
    return out.stdout.decode("latin-1") if out.returncode == 0 else ""


async def send_cut_text(
    xvnc: XServer, g: Grant, text: bytes, registry: ConnectionRegistry, expect: str
) -> str:
    """Send ClientCutText through a gateway with grant ``g``; read the X selection.

    Xvnc keeps a viewer's clipboard only while that viewer is connected, so the
    selection is read (polled up to 10 s for ``expect``) before disconnecting.
    """
    async with gateway(xvnc, g, registry) as port:
        viewer = await viewer_on(port)
        await viewer.key(0x61, True)
        await viewer.key(0x61, False)
        await viewer.cut_text(text)
        await frame(viewer)  # a round trip: the cut text was forwarded or dropped before it
        [stats] = registry.snapshot()
        assert stats.forwarded.get("ClientCutText", 0) + stats.dropped.get("ClientCutText", 0) == 1
        if not g.input_allowed:
            assert "KeyEvent" not in stats.forwarded
            assert stats.dropped["KeyEvent"] == 2
        deadline = time.monotonic() + 10
        seen = await asyncio.to_thread(selection, xvnc)
        while seen != expect and time.monotonic() < deadline and g.clipboard_to_env:
            await asyncio.sleep(0.05)
            seen = await asyncio.to_thread(selection, xvnc)
        return seen


def test_cut_text_reaches_x_selection_with_control_and_clipboard(xvnc: XServer) -> None:
    """Control + clipboard both: the viewer's cut text becomes the X CLIPBOARD."""
    g = grant(Permission.CONTROL, Direction.BOTH)
    text = "hello-from-viewer"
    assert run(send_cut_text(xvnc, g, text.encode(), ConnectionRegistry(), text)) == text


@pytest.mark.parametrize(
    ("permission", "clipboard"),
    [
        (Permission.VIEW, Direction.BOTH),
        (Permission.CONTROL, Direction.NONE),
        (Permission.CONTROL, Direction.FROM_ENV),
    ],
)
def test_cut_text_blocked_by_policy(
    xvnc: XServer, permission: Permission, clipboard: Direction
) -> None:
    """View or a clipboard closed toward the env: the X selection never gets the text."""
    g = grant(permission, clipboard)
    seen = run(send_cut_text(xvnc, g, b"must-not-arrive", ConnectionRegistry(), "must-not-arrive"))
    assert seen != "must-not-arrive"


def test_server_cut_text_only_to_allowed_viewers(xvnc: XServer) -> None:
    """A selection set on the display reaches a from_env viewer, never a to_env one."""

    async def go() -> None:
        registry = ConnectionRegistry()
        owner: asyncio.subprocess.Process | None = None
        async with (
            gateway(xvnc, grant(Permission.VIEW, Direction.FROM_ENV), registry) as yes_port,
            gateway(xvnc, grant(Permission.CONTROL, Direction.TO_ENV), registry) as no_port,
        ):
            yes, no = await viewer_on(yes_port), await viewer_on(no_port)
            await frame(yes)
            await frame(no)
            try:
                owner = await asyncio.create_subprocess_exec(
                    *["xclip", "-quiet", "-selection", "clipboard", "-i"],
                    env=xvnc.env,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                assert owner.stdin is not None
                owner.stdin.write(b"from-the-environment")
                owner.stdin.close()
                msg = await yes.next_message()
                while not isinstance(msg, ServerCutText):
                    msg = await yes.next_message()
                assert msg == ServerCutText(b"from-the-environment")

                def dropped() -> bool:
                    return any(s.dropped.get("ServerCutText", 0) >= 1 for s in registry.snapshot())

                await async_wait_until(dropped, what="the to_env viewer's copy to be dropped")
            finally:
                if owner is not None:
                    owner.kill()  # by its pid: the selection owner we started
                    await owner.wait()

    run(go())
