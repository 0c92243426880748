"""A minimal timing RFB viewer for ``bench/stream.py``, over a socket or a WebSocket.

Independent of the gateway's own parsers on purpose: it delimits every message
itself (Raw, CopyRect, Tight, ZRLE, Cursor, DesktopSize, LastRect,
ExtendedDesktopSize) and stamps each update with ``time.perf_counter()`` when
its first and last byte arrive. It counts RFB bytes and, on a WebSocket, the
bytes of the frame headers around them (what the wire carries above TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection

RAW, COPY_RECT, TIGHT, ZRLE = 0, 1, 7, 16
CURSOR, DESKTOP_SIZE, LAST_RECT, EXT_DESKTOP_SIZE = -239, -223, -224, -308
# 32 bpp, depth 24, little endian, true colour, 8 bits a channel: TPIXEL is 3 bytes.
PIXEL_FORMAT = struct.pack("!BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
BPP, TPIXEL = 4, 3


def quality(level: int) -> int:
    """The JPEG QualityLevel pseudo-encoding."""
    return -32 + level


def compress(level: int) -> int:
    """The CompressLevel pseudo-encoding."""
    return -256 + level


class Link(Protocol):
    """Bytes to and from the RFB server, with counters."""

    rx: int
    wire_rx: int

    async def read_exact(self, n: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class SocketLink:
    """A unix or TCP socket straight to an RFB server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.rx = self.wire_rx = 0

    @classmethod
    async def unix(cls, path: str) -> SocketLink:
        return cls(*await asyncio.open_unix_connection(path, limit=1 << 22))

    async def read_exact(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self.rx += n
        self.wire_rx += n
        return data

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def _ws_header(n: int) -> int:
    """RFC 6455 5.2: bytes of an unmasked server frame header for ``n`` payload bytes."""
    return 2 if n < 126 else 4 if n < 1 << 16 else 10


class WsLink:
    """A WebSocket (``binary`` subprotocol) to websockify or the gateway route."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buffer = bytearray()
        self.rx = self.wire_rx = self.messages = 0

    @classmethod
    async def connect(cls, url: str, sock: socket.socket | None = None) -> WsLink:
        """Open ``url``; over ``sock`` if given (one made in another namespace)."""
        ws = await websockets.connect(
            url,
            subprotocols=[websockets.Subprotocol("binary")],
            max_size=None,
            compression=None,
            sock=sock,
        )
        return cls(ws)

    async def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            message = await self.ws.recv()
            data = message.encode() if isinstance(message, str) else message
            self.buffer += data
            self.messages += 1
            self.wire_rx += len(data) + _ws_header(len(data))
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        self.rx += n
        return out

    async def write(self, data: bytes) -> None:
        await self.ws.send(data)

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Update:
    """One FramebufferUpdate as received."""

    first: float
    done: float
    nbytes: int
    rects: list[tuple[int, int, int, int, int]] = field(default_factory=list)

    def touches(self, x: int, y: int, w: int, h: int) -> bool:
        """Whether a frame rectangle of this update overlaps the given one."""
        return any(
            enc >= 0 and rx < x + w and x < rx + rw and ry < y + h and y < ry + rh
            for rx, ry, rw, rh, enc in self.rects
        )


class Viewer:
    """An RFB 3.8 viewer, security None, shared, 32-bit true colour."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.width = self.height = 0

    async def handshake(self, encodings: list[int]) -> None:
        read, write = self.link.read_exact, self.link.write
        if not (await read(12)).startswith(b"RFB 003."):
            raise RuntimeError("not an RFB server")
        await write(b"RFB 003.008\n")
        types = await read((await read(1))[0])
        if 1 not in types:
            raise RuntimeError(f"security None not offered: {list(types)}")
        await write(b"\x01")
        if await read(4) != b"\0\0\0\0":
            raise RuntimeError("security result: failed")
        await write(b"\x01")  # shared
        self.width, self.height = struct.unpack("!HH", await read(4))
        await read(16)
        (name_len,) = struct.unpack("!I", await read(4))
        await read(name_len)
        await write(b"\x00\0\0\0" + PIXEL_FORMAT)
        body = b"".join(struct.pack("!i", e) for e in encodings)
        await write(struct.pack("!BxH", 2, len(encodings)) + body)

    async def request(
        self, incremental: bool, rect: tuple[int, int, int, int] | None = None
    ) -> None:
        x, y, w, h = rect or (0, 0, self.width, self.height)
        await self.link.write(struct.pack("!BBHHHH", 3, int(incremental), x, y, w, h))

    async def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        await self.link.write(struct.pack("!BBHH", 5, buttons, x, y))

    async def next_update(self) -> Update:
        """Read messages until a whole FramebufferUpdate has arrived."""
        read = self.link.read_exact
        while True:
            kind = (await read(1))[0]
            first = time.perf_counter()
            if kind == 0:
                return await self._update(first)
            if kind == 1:  # SetColourMapEntries
                count = struct.unpack("!xHH", await read(5))[1]
                await read(6 * count)
            elif kind == 3:  # ServerCutText
                await read(struct.unpack("!3xI", await read(7))[0])
            elif kind != 2:  # 2 is Bell: no body
                raise RuntimeError(f"unknown server message {kind}")

    async def _update(self, first: float) -> Update:
        read = self.link.read_exact
        before = self.link.rx - 1
        (count,) = struct.unpack("!xH", await read(3))
        update = Update(first, 0.0, 0)
        for _ in range(count):
            x, y, w, h, enc = struct.unpack("!HHHHi", await read(12))
            if enc == LAST_RECT:
                break
            update.rects.append((x, y, w, h, enc))
            await self._payload(enc, w, h)
        update.done = time.perf_counter()
        update.nbytes = self.link.rx - before
        return update

    async def _payload(self, enc: int, w: int, h: int) -> None:
        read = self.link.read_exact
        if enc == RAW:
            await read(w * h * BPP)
        elif enc == COPY_RECT:
            await read(4)
        elif enc == TIGHT:
            await _tight(read, w, h)
        elif enc == ZRLE:
            await read(struct.unpack("!I", await read(4))[0])
        elif enc == CURSOR:
            await read(w * h * BPP + (w + 7) // 8 * h)
        elif enc == EXT_DESKTOP_SIZE:
            await read(16 * (await read(4))[0])
        elif enc != DESKTOP_SIZE:
            raise RuntimeError(f"rectangle in unexpected encoding {enc}")
        if enc in (DESKTOP_SIZE, EXT_DESKTOP_SIZE):
            self.width, self.height = w, h

    async def close(self) -> None:
        await self.link.close()


async def _tight(read: ReadExact, w: int, h: int) -> None:
    """Skip one Tight rectangle (rfbproto 7.7.4)."""
    kind = (await read(1))[0] >> 4
    if kind == 0x8:  # fill
        await read(TPIXEL)
        return
    if kind == 0x9:  # JPEG
        await read(await _compact(read))
        return
    flt = (await read(1))[0] if kind & 0x4 else 0
    size = w * h * TPIXEL
    if flt == 1:  # palette
        colours = (await read(1))[0] + 1
        await read(colours * TPIXEL)
        size = ((w + 7) // 8 if colours == 2 else w) * h
    await read(size if size < 12 else await _compact(read))


class ReadExact(Protocol):
    async def __call__(self, n: int) -> bytes: ...


async def _compact(read: ReadExact) -> int:
    b = (await read(1))[0]
    length = b & 0x7F
    if b & 0x80:
        b = (await read(1))[0]
        length |= (b & 0x7F) << 7
        if b & 0x80:
            length |= (await read(1))[0] << 14
    return length
