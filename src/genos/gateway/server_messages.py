"""Server-to-client RFB messages: the environment's side, the less trusted one.

A FramebufferUpdate is relayed as it is read, rectangle by rectangle: each
header is checked (inside the framebuffer, an encoding the client asked for,
sane sizes) before it is passed on, and each payload's length is worked out
from the encoding before a byte of it is copied. Big payloads stream through
in chunks, so memory stays bounded whatever the environment claims. The
smaller messages (Bell, SetColourMapEntries, ServerCutText) are returned for
the caller to pass on or drop by policy.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from genos.errors import ProtocolError
from genos.gateway.rfb import (
    DEFAULT_LIMITS,
    Encoding,
    Framebuffer,
    Limits,
    PixelFormat,
    ServerMsg,
    check_dimension,
)
from genos.gateway.streams import ByteStream
from genos.gateway.tight import relay_tight

SIDE = "environment"
Emit = Callable[[bytes], Awaitable[None]]


@dataclass
class EnvState:
    """What the parser of the environment's stream must know.

    ``enabled`` holds every encoding the client has asked for on this
    connection (an update in flight may still use one it just dropped).
    ``reset_tight``: the next Tight rectangle tells the viewer to reset its
    zlib streams (set when the environment's stream was replaced).
    """

    fb: Framebuffer
    format: PixelFormat
    limits: Limits = DEFAULT_LIMITS
    enabled: set[int] = field(default_factory=lambda: {int(Encoding.RAW)})
    reset_tight: bool = False


@dataclass(frozen=True)
class UpdateRelayed:
    """A FramebufferUpdate that has been passed on whole."""

    rects: int
    nbytes: int


@dataclass(frozen=True)
class Bell:
    """RFC 6143 7.6.3."""

    def pack(self) -> bytes:
        """The wire form."""
        return bytes([ServerMsg.BELL])


@dataclass(frozen=True)
class ColourMap:
    """RFC 6143 7.6.2 SetColourMapEntries; ``colours`` is 6 bytes per entry."""

    first: int
    colours: bytes

    def pack(self) -> bytes:
        """The canonical wire form."""
        head = struct.pack(
            "!BxHH", ServerMsg.SET_COLOUR_MAP_ENTRIES, self.first, len(self.colours) // 6
        )
        return head + self.colours


@dataclass(frozen=True)
class ServerCutText:
    """RFC 6143 7.6.4 (Latin-1 text)."""

    text: bytes

    def pack(self) -> bytes:
        """The canonical wire form."""
        return struct.pack("!B3xI", ServerMsg.SERVER_CUT_TEXT, len(self.text)) + self.text


ServerMessage = UpdateRelayed | Bell | ColourMap | ServerCutText


class Rect(NamedTuple):
    """A rectangle header's position and size."""

    x: int
    y: int
    w: int
    h: int

    def __str__(self) -> str:
        return f"{self.w}x{self.h}+{self.x}+{self.y}"


class _Relay:
    """Collects checked bytes and passes them on in chunks."""

    def __init__(self, stream: ByteStream, emit: Emit, chunk: int) -> None:
        self.stream = stream
        self.emit = emit
        self.chunk = chunk
        self.buffer = bytearray()
        self.total = 0

    async def read(self, n: int) -> bytes:
        return await self.stream.read_exact(n)

    async def put(self, data: bytes) -> None:
        self.buffer += data
        self.total += len(data)
        if len(self.buffer) >= self.chunk:
            await self.flush()

    async def copy(self, n: int) -> None:
        while n > 0:
            part = await self.stream.read_exact(min(n, self.chunk))
            n -= len(part)
            if self.buffer or len(part) < self.chunk:
                await self.put(part)
            else:  # a whole chunk and nothing pending: pass it on without copying it again
                self.total += len(part)
                await self.emit(part)

    async def flush(self) -> None:
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            await self.emit(data)


async def read_server_message(
    stream: ByteStream,
    state: EnvState,
    emit: Emit,
    on_update: Callable[[], None] | None = None,
) -> ServerMessage:
    """Read one message from the environment; relay it if it is an update.

    Args:
        stream: the environment's stream, at a message boundary.
        state: framebuffer, pixel format and enabled encodings.
        emit: where checked update bytes go.
        on_update: called when an update's first byte has been read.

    Returns:
        What was read.

    Raises:
        ProtocolError: unknown, malformed or oversized.
        StreamClosedError: the environment went away.
    """
    kind = (await stream.read_exact(1))[0]
    if kind == ServerMsg.FRAMEBUFFER_UPDATE:
        if on_update is not None:
            on_update()
        return await _relay_update(_Relay(stream, emit, state.limits.chunk), state)
    if kind == ServerMsg.BELL:
        return Bell()
    if kind == ServerMsg.SET_COLOUR_MAP_ENTRIES:
        return await _colour_map(stream, state)
    if kind == ServerMsg.SERVER_CUT_TEXT:
        return await _cut_text(stream, state)
    raise ProtocolError(SIDE, f"unknown message type {kind}")


async def _colour_map(stream: ByteStream, state: EnvState) -> ColourMap:
    first, count = struct.unpack("!xHH", await stream.read_exact(5))
    if first + count > 1 << min(state.format.bits_per_pixel, 16):
        raise ProtocolError(SIDE, f"colour map entries {first}+{count} past the palette")
    return ColourMap(first, await stream.read_exact(6 * count))


async def _cut_text(stream: ByteStream, state: EnvState) -> ServerCutText:
    (length,) = struct.unpack("!3xi", await stream.read_exact(7))
    if length < 0:
        raise ProtocolError(SIDE, "extended clipboard was not negotiated")
    if length > state.limits.max_cut_text:
        raise ProtocolError(SIDE, f"cut text of {length} bytes is too long")
    return ServerCutText(await stream.read_exact(length))


async def _relay_update(relay: _Relay, state: EnvState) -> UpdateRelayed:
    (count,) = struct.unpack("!xH", await relay.read(3))
    await relay.put(struct.pack("!BxH", ServerMsg.FRAMEBUFFER_UPDATE, count))
    done = 0
    while done < count:
        x, y, w, h, enc = struct.unpack("!HHHHi", await relay.read(12))
        done += 1
        if enc == Encoding.LAST_RECT:
            await relay.put(struct.pack("!HHHHi", 0, 0, 0, 0, enc))
            break
        rect = Rect(x, y, w, h)
        _check_rect(state, rect, enc)
        await relay.put(struct.pack("!HHHHi", x, y, w, h, enc))
        await _PAYLOADS[enc](relay, state, rect)
    await relay.flush()
    return UpdateRelayed(done, relay.total)


def _check_rect(state: EnvState, rect: Rect, enc: int) -> None:
    if enc not in _PAYLOADS:
        raise ProtocolError(SIDE, f"rectangle in unsupported encoding {enc}")
    if enc not in state.enabled:
        raise ProtocolError(SIDE, f"rectangle in encoding {enc} the client did not ask for")
    if enc in _FRAME and not state.fb.contains(*rect):
        raise ProtocolError(SIDE, f"rectangle {rect} outside the framebuffer")


async def _raw(relay: _Relay, state: EnvState, rect: Rect) -> None:
    await relay.copy(rect.w * rect.h * state.format.bytes_per_pixel)


async def _copy_rect(relay: _Relay, state: EnvState, rect: Rect) -> None:
    data = await relay.read(4)
    sx, sy = struct.unpack("!HH", data)
    if not state.fb.contains(sx, sy, rect.w, rect.h):
        raise ProtocolError(SIDE, "CopyRect source outside the framebuffer")
    await relay.put(data)


async def _zrle(relay: _Relay, state: EnvState, rect: Rect) -> None:
    data = await relay.read(4)
    (length,) = struct.unpack("!I", data)
    # RFC 6143 7.7.6: zlib data of tiles; worst case is every tile raw, plus zlib's overhead.
    bound = rect.w * rect.h * (state.format.bytes_per_pixel + 1) * 11 // 10 + (64 << 10)
    if length > bound:
        raise ProtocolError(SIDE, f"ZRLE data of {length} bytes for a {rect} rectangle")
    await relay.put(data)
    await relay.copy(length)


async def _cursor(relay: _Relay, state: EnvState, rect: Rect) -> None:
    x, y, w, h = rect
    limit = state.limits.max_cursor
    if w > limit or h > limit:
        raise ProtocolError(SIDE, f"cursor of {w}x{h} is larger than {limit}x{limit}")
    if (w and x >= w) or (h and y >= h):
        raise ProtocolError(SIDE, "cursor hotspot outside the cursor")
    # rfbproto 7.8.1: pixels, then a 1-bit mask with rows padded to a byte.
    await relay.copy(w * h * state.format.bytes_per_pixel + (w + 7) // 8 * h)


async def _desktop_size(_relay: _Relay, state: EnvState, rect: Rect) -> None:
    _resize(state, rect.w, rect.h)


async def _extended_desktop_size(relay: _Relay, state: EnvState, rect: Rect) -> None:
    data = await relay.read(4)
    count = data[0]
    if not 1 <= count <= state.limits.max_screens:
        raise ProtocolError(SIDE, f"{count} screens, not 1..{state.limits.max_screens}")
    await relay.put(bytes([count, 0, 0, 0]))
    await relay.put(await relay.read(16 * count))
    _resize(state, rect.w, rect.h)


def _resize(state: EnvState, w: int, h: int) -> None:
    check_dimension(SIDE, "width", w, state.limits)
    check_dimension(SIDE, "height", h, state.limits)
    if w == 0 or h == 0:
        raise ProtocolError(SIDE, "framebuffer resized to nothing")
    state.fb.resize(w, h)


Payload = Callable[[_Relay, EnvState, Rect], Awaitable[None]]


async def _tight(relay: _Relay, state: EnvState, rect: Rect) -> None:
    reset, state.reset_tight = state.reset_tight, False
    await relay_tight(relay, state.format.tight_pixel, rect.w, rect.h, reset=reset)


_PAYLOADS: dict[int, Payload] = {
    Encoding.RAW: _raw,
    Encoding.COPY_RECT: _copy_rect,
    Encoding.TIGHT: _tight,
    Encoding.ZRLE: _zrle,
    Encoding.CURSOR: _cursor,
    Encoding.DESKTOP_SIZE: _desktop_size,
    Encoding.EXTENDED_DESKTOP_SIZE: _extended_desktop_size,
}
_FRAME = frozenset({Encoding.RAW, Encoding.COPY_RECT, Encoding.TIGHT, Encoding.ZRLE})
