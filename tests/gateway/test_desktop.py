"""The agent's RFB client (Desktop), key names, and the input lease between agents and viewers."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from genos.errors import InputError, LeaseHeldError, StreamClosedError
from genos.gateway import Grant, Permission, ProxyOptions, proxy
from genos.gateway.client_messages import KeyEvent, PointerEvent, SetEncodings, SetPixelFormat
from genos.gateway.desktop import BGRX, Desktop
from genos.gateway.fake import FakeDisplay
from genos.gateway.keys import parse_combo, text_keysyms
from genos.gateway.lease import InputLease, Leases
from genos.gateway.streams import memory_pair
from tests.gateway.helpers import async_wait_until, run
from tests.gateway.rfbclient import Viewer

NOWHERE = Path("/nonexistent/rfb.sock")


async def _open(fake: FakeDisplay) -> Desktop:
    return await Desktop.open(NOWHERE, connect=fake.connect)


def test_refresh_fills_the_framebuffer_with_the_display_pixels() -> None:
    """A refresh asks for BGRX Raw/CopyRect and copies the display's pixels in."""

    async def main() -> None:
        fake = FakeDisplay(32, 16, b"\x01\x02\x03\x00", answer_incremental=False)
        desktop = await _open(fake)
        try:
            await desktop.refresh(timeout=5)
            width, height, pixels = desktop.snapshot()
            assert (width, height) == (32, 16)
            assert pixels == b"\x01\x02\x03\x00" * (32 * 16)
            assert desktop.changes == 1
            sent = fake.received
            assert isinstance(sent[0], SetPixelFormat)
            assert sent[0].format == BGRX
            assert isinstance(sent[1], SetEncodings)
            assert sent[1].encodings == (0, 1, -223, -224)
        finally:
            await desktop.aclose()
        await async_wait_until(lambda: fake.clients == [], what="the display sees the close")

    run(main())


def test_input_reaches_the_display_as_canonical_events() -> None:
    """Click, drag, scroll, type and key combinations become the exact RFB events."""

    async def main() -> None:
        fake = FakeDisplay(100, 50, answer_incremental=False)
        desktop = await _open(fake)
        try:
            await desktop.click(10, 20, "right", count=2)
            await desktop.drag([(1, 1), (5, 6), (9, 9)])
            await desktop.scroll(3, 4, dx=0, dy=-1)
            await desktop.type(text_keysyms("é€\n"))
            await desktop.keys(parse_combo("ctrl+l"))
            await desktop.refresh(timeout=5)  # a barrier: everything before it was read
        finally:
            await desktop.aclose()
        pointers = [(m.buttons, m.x, m.y) for m in fake.received if isinstance(m, PointerEvent)]
        assert pointers == [
            (0, 10, 20), (4, 10, 20), (0, 10, 20), (4, 10, 20), (0, 10, 20),
            (0, 1, 1), (1, 1, 1), (1, 5, 6), (1, 9, 9), (0, 9, 9),
            (0, 3, 4), (8, 3, 4), (0, 3, 4),
        ]  # fmt: skip
        keys = [(m.down, m.key) for m in fake.received if isinstance(m, KeyEvent)]
        assert keys == [
            (True, 0xE9), (False, 0xE9), (True, 0x010020AC), (False, 0x010020AC),
            (True, 0xFF0D), (False, 0xFF0D),
            (True, 0xFFE3), (True, ord("l")), (False, ord("l")), (False, 0xFFE3),
        ]  # fmt: skip

    run(main())


def test_off_screen_and_unknown_input_send_nothing() -> None:
    """Off-screen points, unknown buttons, keys and untypable characters fail before sending."""

    async def main() -> None:
        fake = FakeDisplay(100, 50, answer_incremental=False)
        desktop = await _open(fake)
        try:
            with pytest.raises(InputError, match=r"\(100, 0\) is off the 100x50 screen"):
                await desktop.click(100, 0)
            with pytest.raises(InputError, match="off the"):
                await desktop.drag([(1, 1), (1, 50)])
            with pytest.raises(InputError, match="unknown button"):
                await desktop.click(1, 1, "fourth")
            await desktop.refresh(timeout=5)
        finally:
            await desktop.aclose()
        assert (fake.count(PointerEvent), fake.count(KeyEvent)) == (0, 0)

    run(main())
    with pytest.raises(InputError, match="unknown key 'hyper'"):
        parse_combo("ctrl+hyper")
    with pytest.raises(InputError, match="cannot be typed"):
        text_keysyms("a\x07b")
    with pytest.raises(InputError, match="not a key combination"):
        parse_combo("ctrl++a")
    assert parse_combo("ctrl++") == [0xFFE3, 0x2B]
    assert parse_combo("shift+F5") == [0xFFE1, 0xFFC2]


def test_an_update_outside_the_screen_ends_the_connection() -> None:
    """A rectangle past the screen's edge is a protocol error: the connection ends, cleanly."""

    async def main() -> None:
        fake = FakeDisplay(20, 10, answer_incremental=False)
        desktop = await _open(fake)
        bad = struct.pack("!BxH", 0, 1) + struct.pack("!HHHHi", 15, 0, 10, 1, 0) + b"\0" * 40
        await fake.broadcast(bad)
        await async_wait_until(lambda: not desktop.alive, what="the reader ends")
        assert desktop.error == "environment: rectangle 10x1+15+0 outside the screen"
        with pytest.raises(StreamClosedError, match="display connection ended"):
            await desktop.refresh(timeout=2)
        await desktop.aclose()

    run(main())


def test_wait_change_sees_new_pixels_and_times_out_on_none() -> None:
    """wait_change is True after pixels change and False when nothing changes in time."""

    async def main() -> None:
        fake = FakeDisplay(8, 8, b"\x00\x00\x00\x00", answer_incremental=False)
        desktop = await _open(fake)
        try:
            await desktop.refresh(timeout=5)
            assert await desktop.wait_change(0.2) is False
            red = struct.pack("!BxH", 0, 1) + struct.pack("!HHHHi", 0, 0, 1, 1, 0) + b"\0\0\xff\0"
            await fake.broadcast(red)
            assert await desktop.wait_change(5) is True
            assert desktop.snapshot()[2][:4] == b"\0\0\xff\0"
            assert await desktop.settle(0.1, 5) is True
        finally:
            await desktop.aclose()

    run(main())


def test_the_lease_refuses_agents_while_a_person_holds_it() -> None:
    """A person's touch takes the lease; agents get LeaseHeldError until it is released."""

    async def main() -> None:
        lease = InputLease("env-x")
        lease.agent_acts("u1", "robot")
        assert lease.holder is not None
        assert lease.holder.kind == "agent"
        assert lease.person_input("u2", "alice", touch=False) is False  # hovering
        version = lease.version
        assert lease.person_input("u2", "alice", touch=True) is True
        with pytest.raises(LeaseHeldError, match="alice") as caught:
            lease.agent_acts("u1", "robot")
        assert caught.value.holder == {"kind": "person", "name": "alice", "user_id": "u2"}
        assert await lease.changed(version, 0.01) is True
        version = lease.version
        assert await lease.changed(version, 0.05) is False
        assert lease.release() is not None
        assert await lease.changed(version, 0.01) is True
        lease.agent_acts("u1", "robot")
        assert lease.holder is not None
        assert lease.holder.name == "robot"

    run(main())


def test_a_control_viewer_takes_the_lease_and_its_hover_is_dropped_meanwhile() -> None:
    """Through the proxy: hover is dropped while an agent holds the lease; a key takes it."""

    async def main() -> None:
        fake = FakeDisplay(64, 48, answer_incremental=False)
        leases = Leases()
        leases.get("env-1").agent_acts("agent-user", "robot")
        client_end, gateway_end = memory_pair()
        grant = Grant("env-1", "alice", Permission.CONTROL)
        options = ProxyOptions(connect=fake.connect, leases=leases)
        task = asyncio.create_task(proxy(gateway_end, NOWHERE, grant, options))
        viewer = Viewer(client_end)
        await viewer.handshake()
        await viewer.pointer(5, 5)  # hover: dropped
        await viewer.key(0x61, True)  # a key: takes the lease, passes
        await viewer.key(0x61, False)
        await viewer.pointer(6, 6)  # hover by the holder: passes
        await async_wait_until(lambda: fake.count(KeyEvent) == 2, what="keys reach the display")
        await async_wait_until(lambda: fake.count(PointerEvent) == 1, what="hover reaches it")
        holder = leases.get("env-1").holder
        assert holder is not None
        assert (holder.kind, holder.user_id) == ("person", "alice")
        assert leases.get("env-1").pointer == (6, 6)
        await viewer.close()
        await task

    run(main())
