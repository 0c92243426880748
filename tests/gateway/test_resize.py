"""The remote screen follows the viewer: SetDesktopSize through the gateway to a real Xvnc,
within the spec's display.resize and display.max_resolution."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import ValidationError

from genos.gateway import ConnectionRegistry, Grant, Permission, ProxyOptions, serve_local
from genos.gateway.server_messages import UpdateRelayed
from genos.spec import Display, EnvironmentSpec, Resolution, Security
from tests.gateway.helpers import XServer, async_wait_until, run, run_xvnc
from tests.gateway.rfbclient import Viewer

RAW, DESKTOP_SIZE, EXTENDED_DESKTOP_SIZE = 0, -223, -308
SMALL = Resolution(width=640, height=480)
LIMITED = Display(resolution=SMALL, max_resolution=Resolution(width=1024, height=768))


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XServer]:
    """An Xvnc of this module's own (its size changes here), 640x480 to start."""
    with run_xvnc(tmp_path_factory.mktemp("xvnc-resize")) as server:
        yield server


def grant(display: Display = LIMITED, permission: Permission = Permission.CONTROL) -> Grant:
    """A grant made from a spec with ``display``."""
    spec = EnvironmentSpec(display=display)
    return Grant.from_security("xvnc", "tester", permission, spec)


async def set_desktop_size(viewer: Viewer, width: int, height: int) -> None:
    """rfbproto 7.5.9: one screen (id 0) covering the whole framebuffer."""
    screen = struct.pack("!IHHHHI", 0, 0, 0, width, height, 0)
    await viewer.stream.write(struct.pack("!BxHHBx", 251, width, height, 1) + screen)


async def size_on_socket(server: XServer) -> tuple[int, int]:
    """The framebuffer size a new, direct connection to Xvnc is told."""
    viewer = await Viewer.unix(server.socket)
    try:
        init = await viewer.handshake()
        return init.width, init.height
    finally:
        await viewer.close()


@contextlib.asynccontextmanager
async def viewer_through(
    server: XServer, g: Grant
) -> AsyncIterator[tuple[Viewer, ConnectionRegistry]]:
    """A handshaken viewer on a gateway with grant ``g``, Raw and both desktop-size encodings."""
    registry = ConnectionRegistry()
    gateway, port = await serve_local(
        g, lambda _e: server.socket, options=ProxyOptions(registry=registry)
    )
    viewer = await Viewer.tcp(port)
    try:
        await viewer.handshake()
        await viewer.set_encodings(RAW, DESKTOP_SIZE, EXTENDED_DESKTOP_SIZE)
        await viewer.request(incremental=False)
        while not isinstance(await viewer.next_message(), UpdateRelayed):
            pass
        yield viewer, registry
    finally:
        await viewer.close()
        gateway.close()
        await gateway.wait_closed()


async def follow_until(viewer: Viewer, size: tuple[int, int]) -> None:
    """Read updates until the viewer's framebuffer is ``size``."""
    assert viewer.state is not None
    async with asyncio.timeout(15):
        while (viewer.state.fb.width, viewer.state.fb.height) != size:
            await viewer.request(incremental=True)
            await viewer.next_message()


async def refused(server: XServer, g: Grant, width: int, height: int) -> dict[str, int]:
    """Ask for ``width`` x ``height``; return the dropped counts once the gateway dropped it."""
    before = await size_on_socket(server)
    async with viewer_through(server, g) as (viewer, registry):
        await set_desktop_size(viewer, width, height)
        await async_wait_until(
            lambda: registry.snapshot()[0].dropped.get("SetDesktopSize") == 1, what="the drop"
        )
        await viewer.request(incremental=False)  # the connection still works
        while not isinstance(await viewer.next_message(), UpdateRelayed):
            pass
        dropped = registry.snapshot()[0].dropped
    assert await size_on_socket(server) == before
    return dropped


def test_set_desktop_size_resizes_the_real_screen(screen: XServer) -> None:
    """A SetDesktopSize within the limits reaches Xvnc: its framebuffer and the viewer's change."""

    async def go() -> None:
        async with viewer_through(screen, grant()) as (viewer, registry):
            await set_desktop_size(viewer, 800, 600)
            await follow_until(viewer, (800, 600))
            assert registry.snapshot()[0].forwarded["SetDesktopSize"] == 1
        assert await size_on_socket(screen) == (800, 600)
        async with viewer_through(screen, grant()) as (viewer, _):
            await set_desktop_size(viewer, 1024, 768)  # exactly the maximum
            await follow_until(viewer, (1024, 768))
        assert await size_on_socket(screen) == (1024, 768)

    run(go())


@pytest.mark.parametrize(
    ("width", "height"),
    [(1025, 768), (1024, 769), (8000, 8000), (319, 480), (640, 239)],
)
def test_sizes_outside_the_limits_are_refused(screen: XServer, width: int, height: int) -> None:
    """Larger than display.max_resolution or smaller than 320x240: dropped, screen unchanged."""
    assert run(refused(screen, grant(), width, height)) == {"SetDesktopSize": 1}


def test_resize_off_or_view_only_is_refused(screen: XServer) -> None:
    """display.resize false, or a view token, never resizes the screen."""
    off = Display(resolution=SMALL, resize=False, max_resolution=Resolution(width=1024, height=768))
    assert run(refused(screen, grant(off), 700, 500)) == {"SetDesktopSize": 1}
    assert run(refused(screen, grant(permission=Permission.VIEW), 700, 500)) == {
        "SetDesktopSize": 1
    }


def test_grant_limits_come_from_the_spec_or_its_defaults() -> None:
    """A grant from the security section alone has the default display's limits."""
    g = Grant.from_security("e", "u", Permission.CONTROL, Security())
    assert (g.resize, g.max_size) == (True, (3840, 2160))
    assert g.resize_allowed(3840, 2160) is True
    assert g.resize_allowed(3841, 2160) is False
    assert g.resize_allowed(320, 240) is True
    assert g.resize_allowed(320, 239) is False
    assert grant().max_size == (1024, 768)


def test_spec_refuses_a_start_resolution_above_the_maximum() -> None:
    """display.resolution must fit within display.max_resolution."""
    with pytest.raises(ValidationError, match="larger than max_resolution 1024x768"):
        Display(
            resolution=Resolution(width=1280, height=800),
            max_resolution=Resolution(width=1024, height=768),
        )
    assert Display().max_resolution == Resolution(width=3840, height=2160)
