"""Client-to-server RFB messages: read with strict bounds, re-encoded canonically.

Every message the gateway forwards is rebuilt from its parsed fields by
``pack()``, so padding and anything the parser did not look at never reach
the environment. An unknown type, a bad field or a size past the limits
raises :class:`ProtocolError` and the connection closes.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from genos.errors import ProtocolError
from genos.gateway.rfb import (
    COMPRESS_LEVELS,
    DEFAULT_LIMITS,
    FRAME_ENCODINGS,
    PSEUDO_ENCODINGS,
    QUALITY_LEVELS,
    ClientMsg,
    Framebuffer,
    Limits,
    PixelFormat,
    check_dimension,
)
from genos.gateway.streams import ByteStream

SIDE = "client"


@dataclass(frozen=True)
class SetPixelFormat:
    """RFC 6143 7.5.1."""

    format: PixelFormat

    def pack(self) -> bytes:
        """The canonical wire form."""
        return struct.pack("!B3x", ClientMsg.SET_PIXEL_FORMAT) + self.format.pack()


@dataclass(frozen=True)
class SetEncodings:
    """RFC 6143 7.5.2; ``encodings`` is what the client asked for, in its order."""

    encodings: tuple[int, ...]

    def pack(self) -> bytes:
        """The canonical wire form."""
        head = struct.pack("!BxH", ClientMsg.SET_ENCODINGS, len(self.encodings))
        return head + b"".join(struct.pack("!i", e) for e in self.encodings)


@dataclass(frozen=True)
class UpdateRequest:
    """RFC 6143 7.5.3 FramebufferUpdateRequest."""

    incremental: bool
    x: int
    y: int
    width: int
    height: int

    def pack(self) -> bytes:
        """The canonical wire form."""
        return struct.pack(
            "!BBHHHH",
            ClientMsg.FRAMEBUFFER_UPDATE_REQUEST,
            int(self.incremental),
            self.x,
            self.y,
            self.width,
            self.height,
        )

    def merge(self, other: UpdateRequest) -> UpdateRequest:
        """One request covering both (bounding box; incremental only if both are)."""
        x0, y0 = min(self.x, other.x), min(self.y, other.y)
        x1 = max(self.x + self.width, other.x + other.width)
        y1 = max(self.y + self.height, other.y + other.height)
        return UpdateRequest(self.incremental and other.incremental, x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True)
class KeyEvent:
    """RFC 6143 7.5.4."""

    down: bool
    key: int

    def pack(self) -> bytes:
        """The canonical wire form."""
        return struct.pack("!BB2xI", ClientMsg.KEY_EVENT, int(self.down), self.key)


@dataclass(frozen=True)
class PointerEvent:
    """RFC 6143 7.5.5."""

    buttons: int
    x: int
    y: int

    def pack(self) -> bytes:
        """The canonical wire form."""
        return struct.pack("!BBHH", ClientMsg.POINTER_EVENT, self.buttons, self.x, self.y)


@dataclass(frozen=True)
class ClientCutText:
    """RFC 6143 7.5.6 (Latin-1 text, never the extended clipboard form)."""

    text: bytes

    def pack(self) -> bytes:
        """The canonical wire form."""
        return struct.pack("!B3xI", ClientMsg.CLIENT_CUT_TEXT, len(self.text)) + self.text


@dataclass(frozen=True)
class SetDesktopSize:
    """rfbproto 7.5.9 (ExtendedDesktopSize): ``screens`` are 16-byte SCREEN records."""

    width: int
    height: int
    screens: tuple[bytes, ...]

    def pack(self) -> bytes:
        """The canonical wire form."""
        head = struct.pack(
            "!BxHHBx", ClientMsg.SET_DESKTOP_SIZE, self.width, self.height, len(self.screens)
        )
        return head + b"".join(self.screens)


ClientMessage = (
    SetPixelFormat
    | SetEncodings
    | UpdateRequest
    | KeyEvent
    | PointerEvent
    | ClientCutText
    | SetDesktopSize
)


async def read_client_message(
    stream: ByteStream, fb: Framebuffer, limits: Limits = DEFAULT_LIMITS
) -> ClientMessage:
    """Read and check one client message.

    Args:
        stream: the client's stream, positioned at a message boundary.
        fb: the framebuffer, for bounds.
        limits: size bounds.

    Returns:
        The parsed message.

    Raises:
        ProtocolError: unknown type, malformed or oversized.
        StreamClosedError: the client went away.
    """
    kind = (await stream.read_exact(1))[0]
    reader = _READERS.get(kind)
    if reader is None:
        raise ProtocolError(SIDE, f"unknown message type {kind}")
    return await reader(stream, fb, limits)


async def _pixel_format(stream: ByteStream, _fb: Framebuffer, _limits: Limits) -> ClientMessage:
    data = await stream.read_exact(19)
    return SetPixelFormat(PixelFormat.parse(data[3:], SIDE))


async def _request(stream: ByteStream, fb: Framebuffer, _limits: Limits) -> ClientMessage:
    return _update_request(await stream.read_exact(9), fb)


async def _key(stream: ByteStream, _fb: Framebuffer, _limits: Limits) -> ClientMessage:
    down, key = struct.unpack("!B2xI", await stream.read_exact(7))
    return KeyEvent(_flag(down, "key down-flag"), key)


async def _pointer(stream: ByteStream, fb: Framebuffer, _limits: Limits) -> ClientMessage:
    buttons, x, y = struct.unpack("!BHH", await stream.read_exact(5))
    # Pointer positions race resizes; clamp instead of refusing.
    return PointerEvent(buttons, min(x, max(fb.width - 1, 0)), min(y, max(fb.height - 1, 0)))


async def _cut(stream: ByteStream, _fb: Framebuffer, limits: Limits) -> ClientMessage:
    return ClientCutText(await _cut_text(stream, limits))


def _flag(value: int, what: str) -> bool:
    if value > 1:
        raise ProtocolError(SIDE, f"{what} is {value}, not 0 or 1")
    return bool(value)


async def _set_encodings(stream: ByteStream, _fb: Framebuffer, limits: Limits) -> ClientMessage:
    (count,) = struct.unpack("!xH", await stream.read_exact(3))
    if count > limits.max_encodings:
        raise ProtocolError(SIDE, f"{count} encodings, more than {limits.max_encodings}")
    data = await stream.read_exact(4 * count)
    return SetEncodings(struct.unpack(f"!{count}i", data))


def _update_request(data: bytes, fb: Framebuffer) -> UpdateRequest:
    incremental, x, y, w, h = struct.unpack("!BHHHH", data)
    if x + w > fb.largest_width or y + h > fb.largest_height:
        raise ProtocolError(SIDE, f"update request {w}x{h}+{x}+{y} outside the framebuffer")
    # After a resize the client may still ask for the old size: clip to today's.
    cw, ch = min(x + w, fb.width) - x, min(y + h, fb.height) - y
    if cw <= 0 or ch <= 0:
        return UpdateRequest(_flag(incremental, "incremental"), 0, 0, fb.width, fb.height)
    return UpdateRequest(_flag(incremental, "incremental"), x, y, cw, ch)


async def _cut_text(stream: ByteStream, limits: Limits) -> bytes:
    (length,) = struct.unpack("!3xi", await stream.read_exact(7))
    if length < 0:
        raise ProtocolError(SIDE, "extended clipboard was not negotiated")
    if length > limits.max_cut_text:
        raise ProtocolError(SIDE, f"cut text of {length} bytes, more than {limits.max_cut_text}")
    return await stream.read_exact(length)


async def _set_desktop_size(stream: ByteStream, _fb: Framebuffer, limits: Limits) -> ClientMessage:
    w, h, count = struct.unpack("!xHHBx", await stream.read_exact(7))
    check_dimension(SIDE, "width", w, limits)
    check_dimension(SIDE, "height", h, limits)
    if not 1 <= count <= limits.max_screens:
        raise ProtocolError(SIDE, f"{count} screens, not 1..{limits.max_screens}")
    data = await stream.read_exact(16 * count)
    return SetDesktopSize(w, h, tuple(data[i : i + 16] for i in range(0, len(data), 16)))


_Reader = Callable[[ByteStream, Framebuffer, Limits], Awaitable[ClientMessage]]
_READERS: dict[int, _Reader] = {
    ClientMsg.SET_PIXEL_FORMAT: _pixel_format,
    ClientMsg.SET_ENCODINGS: _set_encodings,
    ClientMsg.FRAMEBUFFER_UPDATE_REQUEST: _request,
    ClientMsg.KEY_EVENT: _key,
    ClientMsg.POINTER_EVENT: _pointer,
    ClientMsg.CLIENT_CUT_TEXT: _cut,
    ClientMsg.SET_DESKTOP_SIZE: _set_desktop_size,
}


@dataclass(frozen=True)
class EncodingChoice:
    """What the gateway keeps of a client's SetEncodings.

    ``encodings`` are the frame and pseudo-encodings it may forward, in the
    client's order; ``wants_quality`` says the client accepts lossy (JPEG)
    rectangles; ``quality``/``compression`` are the levels it asked for, if any.
    """

    encodings: tuple[int, ...]
    wants_quality: bool
    quality: int | None
    compression: int | None


def choose_encodings(message: SetEncodings) -> EncodingChoice:
    """Keep only the encodings the gateway can delimit; note the client's levels.

    Args:
        message: the client's SetEncodings.

    Returns:
        The filtered choice (without levels: the adaptive controller adds those).
    """
    kept: list[int] = []
    quality: int | None = None
    compression: int | None = None
    for enc in message.encodings:
        if enc in QUALITY_LEVELS:
            quality = quality if quality is not None else enc - QUALITY_LEVELS.start
        elif enc in COMPRESS_LEVELS:
            compression = compression if compression is not None else enc - COMPRESS_LEVELS.start
        elif (enc in FRAME_ENCODINGS or enc in PSEUDO_ENCODINGS) and enc not in kept:
            kept.append(enc)
    return EncodingChoice(tuple(kept), quality is not None, quality, compression)
