"""The environment-side parser: every message type and encoding, bounds and relaying."""

from __future__ import annotations

import struct

import pytest

from genos.errors import ProtocolError, StreamClosedError
from genos.gateway.fake import RGB888
from genos.gateway.rfb import Framebuffer, Limits, PixelFormat
from genos.gateway.server_messages import (
    Bell,
    ColourMap,
    EnvState,
    ServerCutText,
    ServerMessage,
    UpdateRelayed,
    read_server_message,
)
from genos.gateway.streams import memory_pair
from tests.gateway import wire
from tests.gateway.helpers import run

ALL = {0, 1, 7, 16, -239, -223, -224, -308}
RGB565 = PixelFormat(16, 16, False, True, 31, 63, 31, 11, 5, 0)


def state(pf: PixelFormat = RGB888, enabled: set[int] | None = None) -> EnvState:
    """A 640x480 state with every supported encoding enabled."""
    return EnvState(
        Framebuffer(640, 480), pf, Limits(chunk=1024), set(ALL if enabled is None else enabled)
    )


def relay(data: bytes, st: EnvState | None = None) -> tuple[ServerMessage, bytes]:
    """Parse one message from ``data``; return it and the bytes relayed."""
    st = st or state()
    out = bytearray()

    async def emit(chunk: bytes) -> None:
        out.extend(chunk)

    async def go() -> ServerMessage:
        a, b = memory_pair()
        await a.write(data)
        await a.close()
        return await read_server_message(b, st, emit)

    return run(go(), timeout=5), bytes(out)


def test_raw_rectangle_is_relayed_whole() -> None:
    """A Raw rectangle of w*h*4 bytes passes through byte for byte, in chunks."""
    data = wire.update(wire.rect(0, 0, 64, 48, 0, bytes(range(256)) * 48))
    msg, out = relay(data)
    assert msg == UpdateRelayed(1, len(data))
    assert out == data


def test_raw_uses_the_current_pixel_format() -> None:
    """Raw lengths follow the pixel format (2 bytes per pixel at 16 bpp)."""
    data = wire.update(
        wire.rect(0, 0, 10, 10, 0, b"\x01\x02" * 100), wire.rect(0, 0, 1, 1, 0, b"zz")
    )
    msg, out = relay(data, state(RGB565))
    assert msg == UpdateRelayed(2, len(data))
    assert out == data


def test_rectangle_outside_framebuffer_closes() -> None:
    """A rectangle reaching past the framebuffer closes; its header is not relayed."""
    data = wire.update(wire.rect(600, 0, 64, 1, 0, b"\x00" * 256))
    with pytest.raises(ProtocolError, match="outside the framebuffer"):
        relay(data)


def test_encoding_the_client_did_not_ask_for_closes() -> None:
    """Tight from the environment when the client only enabled Raw closes."""
    with pytest.raises(ProtocolError, match="did not ask for"):
        relay(wire.update(wire.rect(0, 0, 1, 1, 7, wire.tight_fill())), state(enabled={0}))


def test_unsupported_encoding_closes() -> None:
    """Hextile (never allowed through SetEncodings) from the environment closes."""
    with pytest.raises(ProtocolError, match="unsupported encoding 5"):
        relay(wire.update(wire.rect(0, 0, 16, 16, 5, b"\x00")))


def test_copy_rect() -> None:
    """CopyRect carries a source inside the framebuffer."""
    data = wire.update(wire.rect(10, 10, 20, 20, 1, struct.pack("!HH", 100, 100)))
    assert relay(data) == (UpdateRelayed(1, len(data)), data)


def test_copy_rect_source_outside_closes() -> None:
    """A CopyRect source past the framebuffer closes."""
    with pytest.raises(ProtocolError, match="CopyRect source"):
        relay(wire.update(wire.rect(0, 0, 20, 20, 1, struct.pack("!HH", 630, 0))))


MONO = b"\x01" + b"\x00\x00\x00\xff\xff\xff"  # palette filter: 2 colours
PALETTE = b"\x02" + b"\x00" * 9  # palette filter: 3 colours


@pytest.mark.parametrize(
    ("w", "h", "payload"),
    [
        (32, 16, wire.tight_fill()),
        (32, 16, wire.tight_jpeg(b"\xff\xd8" + b"j" * 300 + b"\xff\xd9")),
        (320, 200, wire.tight_jpeg(b"J" * 20000)),
        (2, 1, b"\x00" + b"p" * 6),
        (32, 16, b"\x20" + wire.compact(200) + b"z" * 200),
        (32, 16, b"\x40\x01" + MONO + wire.compact(30) + b"z" * 30),
        (32, 16, b"\x40\x01" + PALETTE + wire.compact(100) + b"x" * 100),
        (32, 16, b"\x40\x02" + wire.compact(50) + b"g" * 50),
    ],
    ids=[
        "fill",
        "jpeg",
        "jpeg-3-byte-length",
        "basic-raw",
        "basic-zlib",
        "mono",
        "palette",
        "gradient",
    ],
)
def test_tight_sub_encodings_are_delimited(w: int, h: int, payload: bytes) -> None:
    """Each Tight form is delimited exactly: the next rectangle still parses."""
    data = wire.update(wire.rect(0, 0, w, h, 7, payload), wire.rect(0, 0, 1, 1, 0, b"RGBX"))
    assert relay(data) == (UpdateRelayed(2, len(data)), data)


def test_tight_small_palette_data_is_raw() -> None:
    """Mono palette data of a 8x4 rectangle (4 bytes) is sent without a length."""
    payload = b"\x40\x01\x01" + b"\x00" * 6 + b"\xaa\x55\xaa\x55"
    data = wire.update(wire.rect(0, 0, 8, 4, 7, payload))
    assert relay(data) == (UpdateRelayed(1, len(data)), data)


def test_tight_uses_pixel_size_when_not_rgb888() -> None:
    """At 16 bpp a Tight fill carries 2 bytes, not 3."""
    data = wire.update(wire.rect(0, 0, 4, 4, 7, b"\x80\x12\x34"), wire.rect(0, 0, 1, 1, 0, b"ab"))
    assert relay(data, state(RGB565)) == (UpdateRelayed(2, len(data)), data)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xa0", "compression type 0xa"),
        (b"\xf0", "compression type 0xf"),
        (b"\x40\x03", "filter 3"),
        (b"\x40\x01\x00", "palette of one colour"),
        (b"\x00" + wire.compact(100000), "Tight data of 100000 bytes"),
    ],
)
def test_tight_malformed(payload: bytes, reason: str) -> None:
    """PNG/unknown types, unknown filters, tiny palettes and huge lengths close."""
    with pytest.raises(ProtocolError, match=reason):
        relay(wire.update(wire.rect(0, 0, 16, 16, 7, payload + b"\x00" * 64)))


def test_compact_length_three_bytes() -> None:
    """Tight's compact length decodes 7+7+8 bits."""
    assert wire.compact(4194303) == b"\xff\xff\xff"
    assert wire.compact(200) == b"\xc8\x01"


def test_zrle_length_prefixed() -> None:
    """ZRLE data is a 4-byte length then that many bytes."""
    data = wire.update(wire.rect(0, 0, 64, 64, 16, struct.pack("!I", 10) + b"0123456789"))
    assert relay(data) == (UpdateRelayed(1, len(data)), data)


def test_zrle_absurd_length_closes() -> None:
    """A ZRLE length far beyond what the rectangle could need closes."""
    with pytest.raises(ProtocolError, match="ZRLE data"):
        relay(wire.update(wire.rect(0, 0, 2, 2, 16, struct.pack("!I", 1 << 30))))


def test_cursor_pixels_and_mask() -> None:
    """A Cursor carries w*h*bpp pixel bytes and a row-padded bitmask."""
    w, h = 10, 3
    payload = b"c" * (w * h * 4) + b"m" * (2 * h)
    data = wire.update(wire.rect(2, 1, w, h, -239, payload), wire.rect(0, 0, 1, 1, 0, b"RGBX"))
    assert relay(data) == (UpdateRelayed(2, len(data)), data)


def test_cursor_too_big_or_bad_hotspot_closes() -> None:
    """A 1000x1000 cursor or a hotspot outside the cursor closes."""
    with pytest.raises(ProtocolError, match="cursor of 1000x1000"):
        relay(wire.update(wire.rect(0, 0, 1000, 1000, -239)))
    with pytest.raises(ProtocolError, match="hotspot"):
        relay(wire.update(wire.rect(20, 0, 16, 16, -239)))


def test_desktop_size_resizes_the_framebuffer() -> None:
    """DesktopSize changes the framebuffer the next rectangles are checked against."""
    st = state()
    data = wire.update(wire.rect(0, 0, 800, 600, -223), wire.rect(700, 500, 1, 1, 0, b"RGBX"))
    assert relay(data, st) == (UpdateRelayed(2, len(data)), data)
    assert (st.fb.width, st.fb.height) == (800, 600)


def test_desktop_size_bounds() -> None:
    """A 9000-wide or empty desktop closes."""
    with pytest.raises(ProtocolError, match="width 9000"):
        relay(wire.update(wire.rect(0, 0, 9000, 600, -223)))
    with pytest.raises(ProtocolError, match="to nothing"):
        relay(wire.update(wire.rect(0, 0, 0, 600, -223)))


def test_extended_desktop_size() -> None:
    """ExtendedDesktopSize carries its screens and resizes."""
    st = state()
    screens = b"\x01\x00\x00\x00" + struct.pack("!IHHHHI", 7, 0, 0, 1024, 768, 0)
    data = wire.update(wire.rect(0, 0, 1024, 768, -308, screens))
    assert relay(data, st) == (UpdateRelayed(1, len(data)), data)
    assert (st.fb.width, st.fb.height) == (1024, 768)


def test_extended_desktop_size_screen_count_bounded() -> None:
    """Zero or 200 screens close."""
    for count in (0, 200):
        with pytest.raises(ProtocolError, match="screens"):
            relay(wire.update(wire.rect(0, 0, 100, 100, -308, bytes([count, 0, 0, 0]))))


def test_last_rect_ends_the_update() -> None:
    """LastRect ends an update announced with 0xFFFF rectangles."""
    data = wire.update(wire.rect(0, 0, 1, 1, 0, b"RGBX"), wire.rect(0, 0, 0, 0, -224), count=0xFFFF)
    assert relay(data) == (UpdateRelayed(2, len(data)), data)


def test_update_cut_short_relays_only_whole_rectangles() -> None:
    """A malformed second rectangle closes; the first one's bytes are all that left."""
    good = wire.rect(0, 0, 1, 1, 0, b"RGBX")
    st = state()
    st.limits = Limits(chunk=1)
    out = bytearray()

    async def emit(chunk: bytes) -> None:
        out.extend(chunk)

    async def go() -> None:
        a, b = memory_pair()
        await a.write(wire.update(good, wire.rect(0, 0, 5000, 1, 0)))
        await a.close()
        await read_server_message(b, st, emit)

    with pytest.raises(ProtocolError):
        run(go(), timeout=5)
    assert bytes(out) == wire.update(good, wire.rect(0, 0, 5000, 1, 0))[: 4 + len(good)]


def test_bell() -> None:
    """Bell is one byte."""
    assert relay(b"\x02") == (Bell(), b"")
    assert Bell().pack() == b"\x02"


def test_colour_map_entries() -> None:
    """SetColourMapEntries carries 6 bytes per colour and re-encodes."""
    data = struct.pack("!BxHH", 1, 3, 2) + b"abcdef" * 2
    msg, _ = relay(data, state(PixelFormat(8, 8, False, False, 0, 0, 0, 0, 0, 0)))
    assert msg == ColourMap(3, b"abcdef" * 2)
    assert msg.pack() == data


def test_colour_map_past_palette_closes() -> None:
    """An 8-bit colour map past entry 255 closes."""
    pf8 = PixelFormat(8, 8, False, False, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ProtocolError, match="past the palette"):
        relay(struct.pack("!BxHH", 1, 250, 10), state(pf8))


def test_server_cut_text() -> None:
    """ServerCutText carries its text and re-encodes."""
    msg, out = relay(wire.cut_text(b"from env"))
    assert (msg, out) == (ServerCutText(b"from env"), b"")
    assert msg.pack() == wire.cut_text(b"from env")


def test_server_cut_text_bounds() -> None:
    """Oversized or extended-clipboard (negative) cut text closes."""
    with pytest.raises(ProtocolError, match="too long"):
        relay(struct.pack("!B3xI", 3, 2 << 20))
    with pytest.raises(ProtocolError, match="extended clipboard"):
        relay(struct.pack("!B3xi", 3, -4))


@pytest.mark.parametrize("kind", [4, 150, 248, 250, 255])
def test_unknown_server_messages_close(kind: int) -> None:
    """Types never negotiated (EndOfContinuousUpdates, Fence, XVP, ...) close."""
    with pytest.raises(ProtocolError, match=f"unknown message type {kind}"):
        relay(bytes([kind]) + b"\x00" * 16)


def test_truncated_update_is_end_of_stream() -> None:
    """An update cut off by the environment is a closed stream."""
    with pytest.raises(StreamClosedError):
        relay(wire.update(wire.rect(0, 0, 10, 10, 0, b"\x00" * 7)))
