"""The viewer-side parser: every client message type, its bounds and its re-encoding."""

from __future__ import annotations

import struct

import pytest

from genos.errors import ProtocolError, StreamClosedError
from genos.gateway.client_messages import (
    ClientCutText,
    ClientMessage,
    KeyEvent,
    PointerEvent,
    SetDesktopSize,
    SetEncodings,
    SetPixelFormat,
    UpdateRequest,
    choose_encodings,
    read_client_message,
)
from genos.gateway.fake import RGB888
from genos.gateway.rfb import Framebuffer, Limits
from genos.gateway.streams import memory_pair
from tests.gateway.helpers import run

FB = Framebuffer(640, 480)


def parse(
    data: bytes, fb: Framebuffer | None = None, limits: Limits | None = None
) -> ClientMessage:
    """Parse one message from ``data`` (fed through an in-memory stream)."""

    async def go() -> ClientMessage:
        a, b = memory_pair()
        await a.write(data)
        await a.close()
        return await read_client_message(b, fb or Framebuffer(640, 480), limits or Limits())

    return run(go(), timeout=5)


def test_set_pixel_format_round_trips() -> None:
    """SetPixelFormat parses to its fields and re-encodes with zeroed padding."""
    wire = b"\x00\xaa\xbb\xcc" + RGB888.pack()
    msg = parse(wire)
    assert msg == SetPixelFormat(RGB888)
    assert msg.pack() == b"\x00\x00\x00\x00" + RGB888.pack()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [(0, 24, "bits-per-pixel 24"), (1, 33, "depth 33"), (3, 2, "flags"), (2, 7, "flags")],
)
def test_set_pixel_format_refuses_bad_layouts(field: int, value: int, reason: str) -> None:
    """A pixel format with odd bpp, depth or flags closes the connection."""
    pf = bytearray(RGB888.pack())
    pf[field] = value
    with pytest.raises(ProtocolError, match=reason):
        parse(b"\x00\x00\x00\x00" + bytes(pf))


def test_set_encodings_parses_signed_list() -> None:
    """SetEncodings keeps the client's order and signed values."""
    encs = (7, 0, -239, -26)
    wire = struct.pack("!BxH", 2, 4) + struct.pack("!4i", *encs)
    msg = parse(wire)
    assert msg == SetEncodings(encs)
    assert msg.pack() == wire


def test_set_encodings_count_is_bounded() -> None:
    """More than 64 encodings closes the connection before reading them."""
    with pytest.raises(ProtocolError, match="65 encodings"):
        parse(struct.pack("!BxH", 2, 65))


def test_choose_encodings_keeps_only_parseable_ones() -> None:
    """Hextile, Fence, extended clipboard and QEMU keys are stripped; levels are noted."""
    encs = (5, 7, 16, 0, 1, -239, -312, -313, -258, -1063131698, -26, -30, -247, -223, 7)
    choice = choose_encodings(SetEncodings(encs))
    assert choice.encodings == (7, 16, 0, 1, -239, -223)
    assert (choice.wants_quality, choice.quality, choice.compression) == (True, 6, 9)


def test_choose_encodings_without_levels() -> None:
    """A client that sends no quality level does not get lossy rectangles."""
    choice = choose_encodings(SetEncodings((0, -224)))
    assert choice == choice.__class__((0, -224), False, None, None)


def test_update_request_inside_framebuffer() -> None:
    """A FramebufferUpdateRequest inside the framebuffer passes unchanged."""
    wire = struct.pack("!BBHHHH", 3, 1, 10, 20, 100, 50)
    msg = parse(wire)
    assert msg == UpdateRequest(True, 10, 20, 100, 50)
    assert msg.pack() == wire


def test_update_request_outside_framebuffer_is_refused() -> None:
    """A request reaching past the framebuffer closes the connection."""
    with pytest.raises(ProtocolError, match="outside the framebuffer"):
        parse(struct.pack("!BBHHHH", 3, 0, 600, 0, 100, 10))


def test_update_request_is_clipped_after_a_shrink() -> None:
    """After the display shrank, an old-size request is clipped to the new size."""
    fb = Framebuffer(640, 480)
    fb.resize(320, 240)
    assert parse(struct.pack("!BBHHHH", 3, 1, 0, 0, 640, 480), fb) == UpdateRequest(
        True, 0, 0, 320, 240
    )


def test_update_request_incremental_flag_is_strict() -> None:
    """An incremental flag other than 0 or 1 is malformed."""
    with pytest.raises(ProtocolError, match="incremental is 2"):
        parse(struct.pack("!BBHHHH", 3, 2, 0, 0, 1, 1))


def test_key_event() -> None:
    """KeyEvent parses its flag and keysym and re-encodes with zero padding."""
    msg = parse(struct.pack("!BBHI", 4, 1, 0xFFFF, 0x61))
    assert msg == KeyEvent(True, 0x61)
    assert msg.pack() == struct.pack("!BBHI", 4, 1, 0, 0x61)


def test_key_event_down_flag_is_strict() -> None:
    """A key down-flag of 7 is malformed."""
    with pytest.raises(ProtocolError, match="down-flag is 7"):
        parse(struct.pack("!BBHI", 4, 7, 0, 0x61))


def test_pointer_event_is_clamped_to_the_framebuffer() -> None:
    """A pointer past the edge is clamped to the last pixel."""
    assert parse(struct.pack("!BBHH", 5, 1, 5000, 100)) == PointerEvent(1, 639, 100)


def test_client_cut_text() -> None:
    """ClientCutText carries its Latin-1 bytes."""
    msg = parse(struct.pack("!B3xI", 6, 5) + b"hello")
    assert msg == ClientCutText(b"hello")
    assert msg.pack() == struct.pack("!B3xI", 6, 5) + b"hello"


def test_client_cut_text_is_bounded() -> None:
    """Cut text over the limit closes the connection before the text is read."""
    with pytest.raises(ProtocolError, match="cut text of 2000 bytes"):
        parse(struct.pack("!B3xI", 6, 2000), limits=Limits(max_cut_text=1000))


def test_extended_clipboard_is_refused() -> None:
    """A negative cut-text length (extended clipboard) was never negotiated."""
    with pytest.raises(ProtocolError, match="extended clipboard"):
        parse(struct.pack("!B3xi", 6, -8) + b"\x00" * 8)


def test_set_desktop_size() -> None:
    """SetDesktopSize parses its screens, each 16 bytes."""
    screen = struct.pack("!IHHHHI", 1, 0, 0, 800, 600, 0)
    msg = parse(struct.pack("!BxHHBx", 251, 800, 600, 1) + screen)
    assert msg == SetDesktopSize(800, 600, (screen,))
    assert msg.pack() == struct.pack("!BxHHBx", 251, 800, 600, 1) + screen


def test_set_desktop_size_bounds() -> None:
    """A desktop of 10000 pixels or 0 screens is refused."""
    with pytest.raises(ProtocolError, match="width 10000"):
        parse(struct.pack("!BxHHBx", 251, 10000, 600, 1))
    with pytest.raises(ProtocolError, match="0 screens"):
        parse(struct.pack("!BxHHBx", 251, 800, 600, 0))


@pytest.mark.parametrize("kind", [1, 7, 150, 248, 250, 255])
def test_unknown_message_types_close(kind: int) -> None:
    """Types the gateway never negotiated (Fence, ContinuousUpdates, QEMU, ...) close."""
    with pytest.raises(ProtocolError, match=f"unknown message type {kind}"):
        parse(bytes([kind]) + b"\x00" * 32)


def test_truncated_message_is_end_of_stream() -> None:
    """A message cut short by the peer is a closed stream, not a parse."""
    with pytest.raises(StreamClosedError):
        parse(struct.pack("!BB", 4, 1))
