"""The proxy against the shipped fake display: policy, pacing, levels, recording, isolation."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from genos.gateway import (
    Closed,
    ConnectionRegistry,
    Grant,
    Permission,
    ProxyOptions,
    Tuning,
    proxy,
    read_recording,
)
from genos.gateway.client_messages import (
    ClientCutText,
    KeyEvent,
    PointerEvent,
    SetDesktopSize,
    SetEncodings,
    UpdateRequest,
)
from genos.gateway.fake import FakeDisplay
from genos.gateway.server_messages import Bell, ServerCutText, UpdateRelayed
from genos.gateway.streams import memory_pair, websocket_stream
from genos.spec import Direction
from tests.gateway import wire
from tests.gateway.helpers import async_wait_until, run
from tests.gateway.rfbclient import Viewer

NOWHERE = Path("/nonexistent/rfb.sock")


@dataclass
class Rig:
    """One viewer proxied to a fake display in memory."""

    viewer: Viewer
    task: asyncio.Task[Closed]
    registry: ConnectionRegistry
    fake: FakeDisplay

    async def sync(self) -> None:
        """Barrier: a full refresh round trip (earlier client messages are processed)."""
        await self.viewer.request(incremental=False)
        while not isinstance(await self.viewer.next_message(), UpdateRelayed):
            pass

    async def finish(self) -> Closed:
        """Close the viewer and return how the proxy ended."""
        await self.viewer.close()
        return await self.task


async def start(
    grant: Grant,
    fake: FakeDisplay | None = None,
    registry: ConnectionRegistry | None = None,
    **options: object,
) -> Rig:
    """Start a proxy between an in-memory viewer and ``fake`` and handshake."""
    fake = fake or FakeDisplay()
    registry = registry if registry is not None else ConnectionRegistry()
    client_end, gateway_end = memory_pair()
    opts = ProxyOptions(connect=fake.connect, registry=registry, **options)  # type: ignore[arg-type]
    task = asyncio.create_task(proxy(gateway_end, NOWHERE, grant, opts))
    viewer = Viewer(client_end)
    await viewer.handshake()
    await viewer.set_encodings(0)
    return Rig(viewer, task, registry, fake)


def grant(
    permission: Permission = Permission.CONTROL,
    clipboard: Direction = Direction.BOTH,
    record: bool = False,
) -> Grant:
    """A grant on env-1 for alice."""
    return Grant("env-1", "alice", permission, clipboard, record, "jti-1")


async def send_input(viewer: Viewer) -> None:
    """Keys, pointer, cut text and a desktop resize."""
    await viewer.key(0x61, True)
    await viewer.key(0x61, False)
    await viewer.pointer(5, 5, 1)
    await viewer.cut_text(b"secret")
    screen = struct.pack("!IHHHHI", 0, 0, 0, 640, 480, 0)
    await viewer.stream.write(struct.pack("!BxHHBx", 251, 640, 480, 1) + screen)


def test_view_grant_drops_all_input() -> None:
    """With view permission no key, pointer, cut text or resize reaches the display."""

    async def go() -> None:
        rig = await start(grant(Permission.VIEW))
        await rig.viewer.set_encodings(0, -308)
        await send_input(rig.viewer)
        await rig.sync()
        for kind in (KeyEvent, PointerEvent, ClientCutText, SetDesktopSize):
            assert rig.fake.count(kind) == 0
        dropped = rig.registry.snapshot()[0].dropped
        assert dropped == {
            "KeyEvent": 2,
            "PointerEvent": 1,
            "ClientCutText": 1,
            "SetDesktopSize": 1,
        }
        assert (await rig.finish()).side == "client"

    run(go())


def test_control_grant_forwards_input_re_encoded() -> None:
    """With control permission input reaches the display exactly as parsed."""

    async def go() -> None:
        rig = await start(grant(Permission.CONTROL, Direction.TO_ENV))
        await rig.viewer.set_encodings(0, -308)
        await send_input(rig.viewer)
        await rig.sync()
        keys = [m for m in rig.fake.received if isinstance(m, KeyEvent)]
        assert keys == [KeyEvent(True, 0x61), KeyEvent(False, 0x61)]
        assert [m for m in rig.fake.received if isinstance(m, ClientCutText)] == [
            ClientCutText(b"secret")
        ]
        assert (rig.fake.count(PointerEvent), rig.fake.count(SetDesktopSize)) == (1, 1)
        assert rig.fake.errors == []
        await rig.finish()

    run(go())


@pytest.mark.parametrize(
    ("clipboard", "reaches_env", "reaches_viewer"),
    [
        (Direction.NONE, False, False),
        (Direction.TO_ENV, True, False),
        (Direction.FROM_ENV, False, True),
        (Direction.BOTH, True, True),
    ],
)
def test_clipboard_direction(clipboard: Direction, reaches_env: bool, reaches_viewer: bool) -> None:
    """Cut text crosses only in the directions the spec allows."""

    async def go() -> None:
        rig = await start(grant(Permission.CONTROL, clipboard))
        await rig.viewer.cut_text(b"to env")
        await rig.sync()
        assert rig.fake.count(ClientCutText) == int(reaches_env)
        await rig.fake.broadcast(wire.cut_text(b"from env") + b"\x02")
        expected = [ServerCutText(b"from env"), Bell()] if reaches_viewer else [Bell()]
        got = [await rig.viewer.next_message() for _ in expected]
        assert got == expected
        await rig.finish()

    run(go())


def test_set_encodings_is_filtered_and_levels_injected() -> None:
    """Unparseable encodings are stripped; the controller's levels replace the client's."""

    async def go() -> None:
        rig = await start(grant())
        await rig.viewer.set_encodings(5, 7, -312, -313, -1063131698, -239, -20 - 12, -247 - 4)
        await rig.sync()
        sent = [m for m in rig.fake.received if isinstance(m, SetEncodings)]
        assert sent[-1] == SetEncodings((7, -239, -32 + 6, -256 + 4))
        await rig.finish()

    run(go())


def test_incremental_requests_are_paced_one_outstanding() -> None:
    """While one incremental request is unanswered, the next is held, then forwarded."""

    async def go() -> None:
        fake = FakeDisplay(answer_incremental=False)
        rig = await start(grant(), fake)
        await rig.viewer.request(incremental=True)
        await async_wait_until(lambda: fake.count(UpdateRequest) == 1, what="first request")
        await rig.viewer.request(incremental=True)
        await rig.viewer.request(incremental=True)
        await rig.sync()  # a full refresh is never held back
        assert fake.count(UpdateRequest) == 2
        # The full refresh's update ended the outstanding one; the held pair goes as one.
        await async_wait_until(lambda: fake.count(UpdateRequest) == 3, what="held request")
        assert [m.incremental for m in fake.received if isinstance(m, UpdateRequest)] == [
            True,
            False,
            True,
        ]
        await rig.finish()

    run(go())


def test_recording_writes_framed_stream(tmp_path: Path) -> None:
    """A recorded session's frames replay the exact bytes the viewer got."""

    async def go() -> None:
        rig = await start(grant(record=True), recordings=tmp_path)
        await rig.sync()
        await rig.finish()

    run(go())
    [path] = list((tmp_path / "env-1").glob("*.rfbrec"))
    frames = list(read_recording(path))
    data = b"".join(d for _, d in frames)
    assert data.startswith(b"RFB 003.008\n\x01\x01\x00\x00\x00\x00")
    assert data.endswith(FakeDisplay().update(UpdateRequest(False, 0, 0, 64, 48)))
    stamps = [t for t, _ in frames]
    assert stamps == sorted(stamps)


def test_registry_lists_live_connections_only() -> None:
    """A connection is in the registry while it streams and gone after."""

    async def go() -> None:
        registry = ConnectionRegistry()
        rig = await start(grant(Permission.VIEW), registry=registry)
        await rig.sync()
        [stats] = registry.snapshot("env-1")
        assert (stats.user_id, stats.permission, stats.updates) == ("alice", "view", 1)
        assert stats.bytes_to_client > 64 * 48 * 4
        assert registry.snapshot("env-2") == []
        await rig.finish()
        assert registry.count() == 0

    run(go())


def test_bad_client_version_never_reaches_the_environment() -> None:
    """A viewer answering RFB 3.3 is closed before the display is even connected."""

    async def go() -> None:
        fake = FakeDisplay()
        client_end, gateway_end = memory_pair()
        task = asyncio.create_task(
            proxy(gateway_end, NOWHERE, grant(), ProxyOptions(connect=fake.connect))
        )
        assert await client_end.read_exact(12) == b"RFB 003.008\n"
        await client_end.write(b"RFB 003.003\n")
        closed = await task
        assert (closed.side, closed.error) == ("client", True)
        assert "version" in closed.reason
        assert fake.received == []
        assert fake.clients == []

    run(go())


def test_security_type_not_offered_is_refused() -> None:
    """A viewer choosing VNC authentication (2) is told it failed and closed."""

    async def go() -> None:
        client_end, gateway_end = memory_pair()
        task = asyncio.create_task(
            proxy(gateway_end, NOWHERE, grant(), ProxyOptions(connect=FakeDisplay().connect))
        )
        await client_end.read_exact(12)
        await client_end.write(b"RFB 003.008\n")
        assert await client_end.read_exact(2) == b"\x01\x01"
        await client_end.write(b"\x02")
        assert await client_end.read_exact(4) == b"\x00\x00\x00\x01"
        closed = await task
        assert closed.reason == "security type 2 was not offered"

    run(go())


def test_environment_without_security_none_is_refused() -> None:
    """A display offering only VNC auth is refused; the viewer gets an RFB reason."""

    async def env(_target: Path) -> object:
        gw, display = memory_pair()
        await display.write(b"RFB 003.008\n\x01\x02")
        return gw

    async def go() -> None:
        client_end, gateway_end = memory_pair()
        task = asyncio.create_task(proxy(gateway_end, NOWHERE, grant(), ProxyOptions(connect=env)))  # type: ignore[arg-type]
        await client_end.read_exact(12)
        await client_end.write(b"RFB 003.008\n")
        assert await client_end.read_exact(1) == b"\x00"
        (length,) = struct.unpack("!I", await client_end.read_exact(4))
        assert await client_end.read_exact(length) == b"the environment's display is not available"
        closed = await task
        assert (closed.side, closed.reason) == (
            "environment",
            "offers no supported security type [2]",
        )

    run(go())


def test_unreachable_display_is_reported() -> None:
    """A missing display socket ends the connection on the environment's side."""

    async def go() -> Closed:
        client_end, gateway_end = memory_pair()
        task = asyncio.create_task(proxy(gateway_end, NOWHERE, grant()))
        await client_end.read_exact(12)
        await client_end.write(b"RFB 003.008\n")
        return await task

    assert run(go()) == Closed("environment", "disconnected", error=False)


def test_malformed_client_is_closed_and_neighbour_unaffected() -> None:
    """Garbage from one viewer closes it; another on the same display keeps streaming."""

    async def go() -> None:
        fake = FakeDisplay()
        good = await start(grant(), fake)
        bad = await start(grant(), fake)
        await bad.viewer.stream.write(b"\x63garbage")
        closed = await bad.task
        assert (closed.side, closed.reason) == ("client", "unknown message type 99")
        assert bad.viewer.stream.peer is not None
        assert bad.viewer.stream.peer.close_reason == "client: unknown message type 99"
        await good.sync()
        await good.sync()
        assert fake.errors == []
        await good.finish()

    run(go())


def test_websocket_adapter_carries_the_session() -> None:
    """A WebSocket-like object (binary messages) proxies and closes with code 1008."""

    class FakeWebSocket:
        def __init__(self) -> None:
            self.inbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()
            self.sent: asyncio.Queue[bytes] = asyncio.Queue()
            self.closed: tuple[int, str | None] | None = None

        async def receive(self) -> dict[str, object]:
            return await self.inbox.get()

        async def send_bytes(self, data: bytes) -> None:
            await self.sent.put(data)

        async def close(self, code: int = 1000, reason: str | None = None) -> None:
            self.closed = (code, reason)

    async def go() -> None:
        ws = FakeWebSocket()
        task = asyncio.create_task(
            proxy(
                websocket_stream(ws), NOWHERE, grant(), ProxyOptions(connect=FakeDisplay().connect)
            )
        )
        assert await ws.sent.get() == b"RFB 003.008\n"
        ws.inbox.put_nowait({"type": "websocket.receive", "bytes": b"RFB 003.008\n"})
        assert await ws.sent.get() == b"\x01\x01"
        ws.inbox.put_nowait({"type": "websocket.receive", "bytes": b"\x01\x01"})
        assert await ws.sent.get() == b"\x00\x00\x00\x00"
        init = await ws.sent.get()
        assert init[:4] == struct.pack("!HH", 64, 48)
        ws.inbox.put_nowait({"type": "websocket.receive", "text": "hello"})
        closed = await task
        assert closed.reason == "text message on a binary stream"
        assert ws.closed == (1008, "client: text message on a binary stream")

    run(go())


def test_controller_change_is_sent_to_the_environment() -> None:
    """When the link looks fast, a new SetEncodings with higher quality goes to the display."""

    async def go() -> None:
        tuning = Tuning(adjust_every=0.0, min_samples=1, rtt_low=60.0, rtt_high=120.0)
        rig = await start(grant(), tuning=tuning)
        await rig.viewer.set_encodings(7, 0, -26)
        for _ in range(3):
            await rig.viewer.request(incremental=True)
            while not isinstance(await rig.viewer.next_message(), UpdateRelayed):
                pass
        await rig.sync()
        sent = [m.encodings for m in rig.fake.received if isinstance(m, SetEncodings)]
        assert sent[1:4] == [(7, 0, -26, -252), (7, 0, -25, -253), (7, 0, -24, -254)]
        [stats] = rig.registry.snapshot()
        assert (stats.link.quality, stats.link.compression) == (8, 1)  # level 9, the top rung
        await rig.finish()

    run(go())
