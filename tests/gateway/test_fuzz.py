"""Fuzzing both directions through the whole proxy: bounded or closed, never passed on broken.

Each example runs a real :func:`proxy` between in-memory endpoints. Whatever
the untrusted side sends (valid messages, mutated ones, noise), the proxy
must end in a :class:`Closed` (never raise), and every byte that reached the
other side must parse cleanly with the gateway's own strict parser.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genos.errors import ProtocolError, StreamClosedError
from genos.gateway import ConnectionRegistry, Grant, Permission, ProxyOptions, proxy
from genos.gateway.client_messages import (
    ClientCutText,
    KeyEvent,
    PointerEvent,
    SetDesktopSize,
    SetEncodings,
    read_client_message,
)
from genos.gateway.fake import RGB888, FakeDisplay
from genos.gateway.handshake import ServerInit
from genos.gateway.rfb import FRAME_ENCODINGS, PSEUDO_ENCODINGS, Framebuffer, Limits
from genos.gateway.server_messages import EnvState, read_server_message
from genos.gateway.streams import MemoryStream, memory_pair
from genos.spec import Direction
from tests.gateway import wire
from tests.gateway.helpers import run
from tests.gateway.rfbclient import Viewer

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL = (7, 16, 0, 1, -239, -223, -224, -308)
W, H = 64, 48
u16 = st.integers(0, 0xFFFF)
small = st.integers(0, 12)

# --- client-to-gateway messages --------------------------------------------------------

client_message = st.one_of(
    st.builds(lambda pf: b"\x00\x00\x00\x00" + pf, st.sampled_from([RGB888.pack()])),
    st.lists(
        st.sampled_from([*ALL, 5, 2, -312, -313, -258, -26, -250, -1063131698]), max_size=70
    ).map(
        lambda encs: (
            struct.pack("!BxH", 2, len(encs)) + b"".join(struct.pack("!i", e) for e in encs)
        )
    ),
    st.builds(
        lambda i, x, y, w, h: struct.pack("!BBHHHH", 3, i, x, y, w, h),
        st.integers(0, 2),
        small,
        small,
        st.integers(0, W),
        st.integers(0, H),
    ),
    st.builds(
        lambda d, k: struct.pack("!BBHI", 4, d, 0, k), st.integers(0, 2), st.integers(0, 2**32 - 1)
    ),
    st.builds(lambda b, x, y: struct.pack("!BBHH", 5, b, x, y), st.integers(0, 255), u16, u16),
    st.binary(max_size=40).map(lambda t: struct.pack("!B3xI", 6, len(t)) + t),
    st.builds(
        lambda w, h, n: struct.pack("!BxHHBx", 251, w, h, n) + b"\x00" * 16 * n,
        st.integers(0, 9000),
        st.integers(0, 100),
        st.integers(0, 3),
    ),
)


def mutate(data: st.DataObject, blob: bytes) -> bytes:
    """Flip, cut or splice a few bytes, or leave the bytes alone."""
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(0, 3))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(out) - 1, 0)))
        if action == "flip" and out:
            out[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del out[at : at + data.draw(st.integers(1, 8))]
        else:
            out[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


async def client_session(blob: bytes, grant: Grant) -> FakeDisplay:
    """Proxy ``blob`` from a viewer to a fake display; return the display."""
    fake = FakeDisplay(W, H)
    client_end, gateway_end = memory_pair()
    options = ProxyOptions(connect=fake.connect, registry=ConnectionRegistry(), quiesce_timeout=2)
    task = asyncio.create_task(proxy(gateway_end, Path("/x"), grant, options))
    viewer = Viewer(client_end)
    await viewer.handshake()
    drain = asyncio.create_task(_drain(client_end))
    await client_end.write(blob)
    client_end.shutdown_write()
    closed = await task  # must return, whatever the bytes were
    assert closed.side in {"client", "environment", "gateway"}
    drain.cancel()
    return fake


async def _drain(stream: MemoryStream) -> None:
    while True:
        await stream.read_exact(1)


def check_display(fake: FakeDisplay, grant: Grant) -> None:
    """Everything that reached the display was well-formed and allowed."""
    assert fake.errors == []
    if not grant.input_allowed:
        for kind in (KeyEvent, PointerEvent, SetDesktopSize, ClientCutText):
            assert fake.count(kind) == 0
    if not grant.clipboard_to_env:
        assert fake.count(ClientCutText) == 0
    allowed = (
        set(FRAME_ENCODINGS) | set(PSEUDO_ENCODINGS) | set(range(-32, -22)) | set(range(-256, -246))
    )
    for msg in fake.received:
        if isinstance(msg, SetEncodings):
            assert set(msg.encodings) <= allowed


grants = st.builds(
    lambda p, c: Grant("env-1", "alice", p, c),
    st.sampled_from(list(Permission)),
    st.sampled_from(list(Direction)),
)


@FUZZ
@given(data=st.data(), messages=st.lists(client_message, max_size=12), grant=grants)
def test_client_stream_fuzz(data: st.DataObject, messages: list[bytes], grant: Grant) -> None:
    """Mutated viewer messages: the display only ever sees well-formed, permitted ones."""
    blob = mutate(data, b"".join(messages))
    check_display(run(client_session(blob, grant), timeout=20), grant)


@FUZZ
@given(blob=st.binary(max_size=400), grant=grants)
def test_client_noise_fuzz(blob: bytes, grant: Grant) -> None:
    """Random bytes from a viewer never reach the display malformed."""
    check_display(run(client_session(blob, grant), timeout=20), grant)


# --- environment-to-gateway messages -----------------------------------------------------


def _payload(draw: st.DrawFn, kind: str, w: int, h: int) -> tuple[int, bytes]:
    """Encoding and a valid payload of one rectangle kind."""
    size = w * h * 3
    basic = (
        draw(st.binary(min_size=size, max_size=size)) if size < 12 else wire.compact(40) + b"z" * 40
    )
    zrle = draw(st.binary(max_size=64))
    options = {
        "raw": (0, draw(st.binary(min_size=w * h * 4, max_size=w * h * 4))),
        "copy": (1, struct.pack("!HH", draw(st.integers(0, W - w)), draw(st.integers(0, H - h)))),
        "fill": (7, wire.tight_fill(draw(st.binary(min_size=3, max_size=3)))),
        "jpeg": (7, wire.tight_jpeg(draw(st.binary(max_size=300)))),
        "basic": (7, b"\x00" + basic),
        "zrle": (16, struct.pack("!I", len(zrle)) + zrle),
    }
    return options[kind]


def _rect(draw: st.DrawFn) -> bytes:
    w, h = draw(st.integers(0, 8)), draw(st.integers(0, 8))
    x, y = draw(st.integers(0, W - w)), draw(st.integers(0, H - h))
    kinds = ["raw", "copy", "fill", "jpeg", "basic", "zrle", "cursor", "size", "last"]
    kind = draw(st.sampled_from(kinds))
    if kind == "cursor":
        return wire.rect(0, 0, w, h, -239, b"c" * (w * h * 4) + b"m" * ((w + 7) // 8 * h))
    if kind == "size":
        return wire.rect(0, 0, W, H, -223)
    if kind == "last":
        return wire.rect(0, 0, 0, 0, -224)
    enc, payload = _payload(draw, kind, w, h)
    return wire.rect(x, y, w, h, enc, payload)


@st.composite
def server_message(draw: st.DrawFn) -> bytes:
    """One valid server message."""
    kind = draw(st.sampled_from(["update", "bell", "cut", "colours"]))
    if kind == "update":
        rects = [_rect(draw) for _ in range(draw(st.integers(0, 4)))]
        return wire.update(*rects)
    if kind == "bell":
        return b"\x02"
    if kind == "cut":
        return wire.cut_text(draw(st.binary(max_size=30)))
    return struct.pack("!BxHH", 1, 0, 2) + b"\x00" * 12


async def env_session(blob: bytes, clipboard: Direction) -> bytes:
    """Proxy ``blob`` from a scripted display to a viewer; return what the viewer got."""
    init = ServerInit(W, H, RGB888, b"fuzz")

    async def connect(_target: Path) -> MemoryStream:
        gw, display = memory_pair()
        asyncio.get_running_loop().create_task(_script(display, init, blob))
        return gw

    client_end, gateway_end = memory_pair()
    grant = Grant("env-1", "alice", Permission.CONTROL, clipboard)
    options = ProxyOptions(connect=connect, registry=ConnectionRegistry())  # type: ignore[arg-type]
    task = asyncio.create_task(proxy(gateway_end, Path("/x"), grant, options))
    viewer = Viewer(client_end)
    await viewer.handshake()
    await viewer.set_encodings(*ALL)
    received = bytearray()
    try:
        while True:
            received += await client_end.read_exact(1)
    except StreamClosedError:
        pass
    await task
    return bytes(received)


async def _script(display: MemoryStream, init: ServerInit, blob: bytes) -> None:
    await display.write(b"RFB 003.008\n\x01\x01")
    await display.read_exact(13)
    await display.write(b"\x00\x00\x00\x00")
    await display.read_exact(1)
    await display.write(init.pack())
    fb = Framebuffer(W, H)
    while not isinstance(await read_client_message(display, fb), SetEncodings):
        pass
    await display.write(blob)
    display.shutdown_write()


def check_viewer(received: bytes) -> None:
    """What the viewer got parses cleanly (a cut-off last message is allowed)."""

    async def go() -> None:
        a, b = memory_pair()
        await a.write(received)
        await a.close()
        state = EnvState(Framebuffer(W, H), RGB888, Limits(), set(ALL))

        async def sink(_chunk: bytes) -> None:
            return None

        try:
            while True:
                await read_server_message(b, state, sink)
        except StreamClosedError:
            return
        except ProtocolError as exc:
            raise AssertionError(f"the viewer got malformed bytes: {exc}") from exc

    run(go(), timeout=10)


@FUZZ
@given(
    data=st.data(),
    messages=st.lists(server_message(), max_size=6),
    clip=st.sampled_from(list(Direction)),
)
def test_environment_stream_fuzz(
    data: st.DataObject, messages: list[bytes], clip: Direction
) -> None:
    """Mutated display messages: the viewer only ever gets well-formed ones."""
    blob = mutate(data, b"".join(messages))
    check_viewer(run(env_session(blob, clip), timeout=20))


@FUZZ
@given(blob=st.binary(max_size=400))
def test_environment_noise_fuzz(blob: bytes) -> None:
    """Random bytes from a display never reach the viewer malformed."""
    check_viewer(run(env_session(blob, Direction.BOTH), timeout=20))
