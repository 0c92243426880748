"""Builders of server-to-client RFB bytes for tests."""

from __future__ import annotations

import struct


def update(*rects: bytes, count: int | None = None) -> bytes:
    """A FramebufferUpdate header plus rectangles."""
    return struct.pack("!BxH", 0, len(rects) if count is None else count) + b"".join(rects)


def rect(x: int, y: int, w: int, h: int, enc: int, payload: bytes = b"") -> bytes:  # noqa: PLR0917 - the header's own field order
    """One rectangle: header and payload."""
    return struct.pack("!HHHHi", x, y, w, h, enc) + payload


def compact(n: int) -> bytes:
    """Tight's compact length (1-3 bytes)."""
    out = bytearray([n & 0x7F])
    if n > 0x7F:
        out[0] |= 0x80
        out.append((n >> 7) & 0x7F)
        if n > 0x3FFF:
            out[1] |= 0x80
            out.append(n >> 14)
    return bytes(out)


def tight_fill(pixel: bytes = b"\x10\x20\x30") -> bytes:
    """A Tight fill payload."""
    return b"\x80" + pixel


def tight_jpeg(data: bytes) -> bytes:
    """A Tight JPEG payload."""
    return b"\x90" + compact(len(data)) + data


def cut_text(text: bytes) -> bytes:
    """A ServerCutText message."""
    return struct.pack("!B3xI", 3, len(text)) + text


def server_init(w: int, h: int, pixel_format: bytes, name: bytes) -> bytes:
    """A ServerInit message."""
    return struct.pack("!HH", w, h) + pixel_format + struct.pack("!I", len(name)) + name
