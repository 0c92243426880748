"""A display that moves (a live-migrated VM): the viewer keeps its connection.

The proxy runs between an in-memory viewer and fake displays; ``follow``
says where the display is after its stream ends. What must hold: no new
handshake reaches the viewer, the new display gets the viewer's pixel
format, encodings (ZRLE left out) and a full refresh, input typed after the
move reaches it, Tight's zlib streams are reset once, and a display that is
gone, cut mid-update or of a size the viewer cannot take ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path

from genos.errors import StreamClosedError
from genos.gateway import Closed, ConnectionRegistry, Grant, Permission, ProxyOptions, proxy
from genos.gateway.client_messages import (
    KeyEvent,
    SetEncodings,
    SetPixelFormat,
    UpdateRequest,
)
from genos.gateway.fake import FakeDisplay
from genos.gateway.rfb import Encoding, PixelFormat
from genos.gateway.server_messages import UpdateRelayed
from genos.gateway.streams import ByteStream, memory_pair
from genos.runtime.driver import DisplayTarget
from genos.spec import Direction
from tests.gateway.helpers import async_wait_until, run
from tests.gateway.rfbclient import Viewer

OLD, NEW = Path("/displays/old"), Path("/displays/new")
RGB565 = PixelFormat(16, 16, False, True, 31, 63, 31, 11, 5, 0)


class Moving:
    """Two fake displays; ``follow`` answers with ``where`` (None: gone)."""

    def __init__(self, old: FakeDisplay, new: FakeDisplay) -> None:
        self.displays = {OLD: old, NEW: new}
        self.where: Path | None = NEW
        self.asked = 0

    async def connect(self, target: DisplayTarget) -> ByteStream:
        assert isinstance(target, Path)
        return await self.displays[target].connect(target)

    async def follow(self) -> Path | None:
        self.asked += 1
        return self.where

    async def move(self) -> None:
        """The old display goes away (between two messages)."""
        old = self.displays[OLD]
        for stream in list(old.clients):
            await stream.close()


async def start(
    moving: Moving, *encodings: int, timeout: float = 2.0
) -> tuple[Viewer, asyncio.Task[Closed]]:
    client_end, gateway_end = memory_pair()
    options = ProxyOptions(connect=moving.connect, registry=ConnectionRegistry(),
                           follow=moving.follow, follow_timeout=timeout)  # fmt: skip
    grant = Grant("env-1", "alice", Permission.CONTROL, Direction.BOTH, False, "jti-1")
    task = asyncio.create_task(proxy(gateway_end, OLD, grant, options))
    viewer = Viewer(client_end)
    await viewer.handshake()
    await viewer.set_encodings(*(encodings or (0,)))
    return viewer, task


async def refresh(viewer: Viewer) -> bytes:
    """Ask for the whole screen; the update's bytes."""
    await viewer.request(incremental=False)
    return await next_update(viewer)


async def next_update(viewer: Viewer) -> bytes:
    while not isinstance(await viewer.next_message(), UpdateRelayed):
        pass
    return viewer.updates[-1]


def test_the_viewer_keeps_its_connection_when_the_display_moves() -> None:
    """Same connection, new display: the viewer's format and encodings, a full refresh,
    then input; the old display never hears from the viewer again."""

    async def go() -> None:
        old, new = FakeDisplay(colour=b"\x01\x02\x03\x00"), FakeDisplay(colour=b"\x09\x08\x07\x00")
        moving = Moving(old, new)
        viewer, task = await start(moving, 0, Encoding.ZRLE)
        await viewer.stream.write(SetPixelFormat(RGB565).pack())
        viewer.state.format = RGB565  # type: ignore[union-attr]
        assert (await refresh(viewer)).endswith(b"\x01\x02")
        await moving.move()
        # The refresh the gateway asked the new display for reaches the viewer unasked.
        assert (await next_update(viewer)).endswith(b"\x09\x08")
        assert not task.done()
        assert new.count(SetPixelFormat) == 1
        assert new.received[0] == SetPixelFormat(RGB565)
        sent = [m for m in new.received if isinstance(m, SetEncodings)]
        assert sent
        assert Encoding.RAW in sent[-1].encodings
        assert Encoding.ZRLE not in sent[-1].encodings
        full = [m for m in new.received if isinstance(m, UpdateRequest)]
        assert full[0] == UpdateRequest(False, 0, 0, 64, 48)
        before = len(old.received)
        await viewer.key(0x62, True)
        assert (await refresh(viewer)).endswith(b"\x09\x08")
        assert KeyEvent(True, 0x62) in new.received
        assert len(old.received) == before
        await viewer.close()
        closed = await task
        assert closed.side == "client"
        assert new.errors == []
        assert old.errors == []

    run(go())


def test_the_next_tight_rectangle_resets_the_viewers_zlib_streams_once() -> None:
    """After a move the first Tight rectangle carries the four reset bits, the next does not."""

    async def go() -> None:
        moving = Moving(FakeDisplay(), FakeDisplay())
        viewer, task = await start(moving, 0, Encoding.TIGHT)
        await refresh(viewer)
        await moving.move()
        await next_update(viewer)  # the gateway's full refresh
        fill = struct.pack("!BxHHHHHi", 0, 1, 0, 0, 8, 8, Encoding.TIGHT) + b"\x80\x10\x20\x30"
        for _ in range(2):
            await moving.displays[NEW].broadcast(fill)
        first, second = await next_update(viewer), await next_update(viewer)
        assert first[16] == 0x8F  # fill, streams 0-3 reset
        assert second[16] == 0x80
        await viewer.close()
        await task

    run(go())


def test_a_display_that_is_gone_ends_the_session() -> None:
    """follow says None (the environment stopped): the viewer's connection closes."""

    async def go() -> None:
        moving = Moving(FakeDisplay(), FakeDisplay())
        moving.where = None
        viewer, task = await start(moving)
        await refresh(viewer)
        await moving.move()
        closed = await asyncio.wait_for(task, 5)
        assert closed.side == "environment"
        assert moving.asked == 1

    run(go())


def test_a_display_that_does_not_come_back_ends_the_session_after_the_timeout() -> None:
    """The display is said to run but never answers: tries until follow_timeout, then ends."""

    async def go() -> None:
        moving = Moving(FakeDisplay(), FakeDisplay())
        moving.where = Path("/displays/nowhere")

        async def refuse(target: DisplayTarget) -> ByteStream:
            if not isinstance(target, Path) or target not in moving.displays:
                raise OSError("connection refused")
            return await moving.displays[target].connect(target)

        moving.connect = refuse  # type: ignore[method-assign]
        viewer, task = await start(moving, timeout=0.6)
        await refresh(viewer)
        await moving.move()
        closed = await asyncio.wait_for(task, 5)
        assert closed.side == "environment"
        assert moving.asked >= 3  # retried, every 0.2 s

    run(go())


def test_a_display_cut_mid_update_is_not_followed() -> None:
    """Half an update reached the viewer: it cannot be spliced, the session ends."""

    async def go() -> None:
        moving = Moving(FakeDisplay(256, 256), FakeDisplay(256, 256))
        viewer, task = await start(moving)
        await refresh(viewer)
        old = moving.displays[OLD]
        # 256 KiB of pixels announced, 96 KiB sent: the gateway passes on its first 64 KiB.
        half = struct.pack("!BxHHHHHi", 0, 1, 0, 0, 256, 256, Encoding.RAW) + b"\x00" * (96 << 10)
        received = bytearray()

        async def read() -> None:
            with contextlib.suppress(StreamClosedError):
                while True:
                    received.extend(await viewer.stream.read_exact(1))

        reader = asyncio.create_task(read())
        await old.broadcast(half)
        await async_wait_until(lambda: len(received) >= 1 << 16, what="half an update")
        await moving.move()
        closed = await asyncio.wait_for(task, 5)
        assert closed.side == "environment"
        assert moving.asked == 0
        await reader

    run(go())


def test_a_new_size_is_told_to_a_viewer_that_takes_it_and_ends_one_that_cannot() -> None:
    """The display comes back larger: DesktopSize to a viewer that asked for it; a
    viewer that did not is closed."""

    async def go(encodings: tuple[int, ...]) -> tuple[Viewer, asyncio.Task[Closed]]:
        moving = Moving(FakeDisplay(), FakeDisplay(width=80, height=60))
        viewer, task = await start(moving, *encodings)
        await refresh(viewer)
        await moving.move()
        return viewer, task

    async def both() -> None:
        viewer, task = await go((0, Encoding.DESKTOP_SIZE))
        await next_update(viewer)  # the DesktopSize rectangle
        assert viewer.state is not None
        assert (viewer.state.fb.width, viewer.state.fb.height) == (80, 60)
        update = await next_update(viewer)
        assert struct.unpack("!HHHH", update[4:12]) == (0, 0, 80, 60)
        await viewer.close()
        await task
        _viewer, task = await go((0,))
        assert (await asyncio.wait_for(task, 5)).side == "environment"

    run(both())
