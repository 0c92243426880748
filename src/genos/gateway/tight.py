"""Delimiting Tight-encoded rectangles (rfbproto 7.7.4) without decoding them.

The gateway never inflates or decodes: it works out how many bytes belong to
the rectangle from the compression-control byte, the filter, the palette and
Tight's compact lengths, checks each against the rectangle's size, and copies
exactly that many bytes on.
"""

from __future__ import annotations

from typing import Protocol

from genos.errors import ProtocolError

SIDE = "environment"

FILL = 0x8
JPEG = 0x9
EXPLICIT_FILTER = 0x4
COPY_FILTER, PALETTE_FILTER, GRADIENT_FILTER = 0, 1, 2
# Data shorter than this is sent as is, without zlib or a length (rfbproto 7.7.4).
MIN_COMPRESSED = 12
RESET_STREAMS = 0x0F  # the control byte's low bits: reset zlib streams 0-3 before this rectangle


class Relay(Protocol):
    """Reads from the environment and passes checked bytes on."""

    async def read(self, n: int) -> bytes: ...

    async def put(self, data: bytes) -> None: ...

    async def copy(self, n: int) -> None: ...


async def relay_tight(
    relay: Relay, tpixel: int, width: int, height: int, *, reset: bool = False
) -> None:
    """Relay one Tight rectangle's payload.

    Args:
        relay: the reader/forwarder.
        tpixel: bytes of one TPIXEL (3 for 32-bit depth-24 true colour).
        width: the rectangle's width.
        height: the rectangle's height.
        reset: tell the viewer to reset all four zlib streams first (the
            environment's stream was replaced by a new server's, whose
            compressors start afresh).

    Raises:
        ProtocolError: an unknown compression type or filter, or bad sizes.
        StreamClosedError: the environment went away.
    """
    ctl = (await relay.read(1))[0]
    await relay.put(bytes([ctl | RESET_STREAMS if reset else ctl]))
    kind = ctl >> 4
    if kind == FILL:
        await relay.put(await relay.read(tpixel))
    elif kind == JPEG:
        await relay.copy(await _compact_length(relay))
    elif kind & FILL == 0:
        size = await _basic_size(relay, kind, tpixel, width, height)
        await _data(relay, size)
    else:
        raise ProtocolError(SIDE, f"Tight compression type {kind:#x} is not supported")


async def _basic_size(relay: Relay, kind: int, tpixel: int, width: int, height: int) -> int:
    """Uncompressed size of a basic-compression rectangle, after relaying filter and palette."""
    flt = COPY_FILTER
    if kind & EXPLICIT_FILTER:
        flt = (await relay.read(1))[0]
        await relay.put(bytes([flt]))
    if flt in (COPY_FILTER, GRADIENT_FILTER):
        return width * height * tpixel
    if flt != PALETTE_FILTER:
        raise ProtocolError(SIDE, f"Tight filter {flt} is not supported")
    colours = (await relay.read(1))[0] + 1
    if colours < 2:
        raise ProtocolError(SIDE, "Tight palette of one colour")
    await relay.put(bytes([colours - 1]))
    await relay.put(await relay.read(colours * tpixel))
    bits = 1 if colours == 2 else 8
    return (width * bits + 7) // 8 * height


async def _data(relay: Relay, size: int) -> None:
    if size < MIN_COMPRESSED:
        await relay.copy(size)
        return
    length = await _compact_length(relay)
    # zlib may not grow data by more than a little (RFC 1950/1951 stored blocks).
    if length > size + size // 100 + 1024:
        raise ProtocolError(SIDE, f"Tight data of {length} bytes for {size} bytes of pixels")
    await relay.copy(length)


async def _compact_length(relay: Relay) -> int:
    """Read, check and relay a compact length (1 to 3 bytes, 7+7+8 bits)."""
    raw = bytearray(await relay.read(1))
    length = raw[0] & 0x7F
    if raw[0] & 0x80:
        raw += await relay.read(1)
        length |= (raw[1] & 0x7F) << 7
        if raw[1] & 0x80:
            raw += await relay.read(1)
            length |= raw[2] << 14
    await relay.put(bytes(raw))
    return length
