"""A small RFB viewer for tests: handshake, requests, and reading whole messages."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from pathlib import Path

from genos.gateway.handshake import ServerInit
from genos.gateway.rfb import VERSION_3_8, Framebuffer, PixelFormat
from genos.gateway.server_messages import EnvState, ServerMessage, read_server_message
from genos.gateway.streams import AsyncioStream, ByteStream

RAW, CURSOR, DESKTOP_SIZE, LAST_RECT = 0, -239, -223, -224


@dataclass
class Viewer:
    """One test viewer on a stream, after :meth:`handshake`."""

    stream: ByteStream
    init: ServerInit | None = None
    state: EnvState | None = None
    updates: list[bytes] = field(default_factory=list)

    @classmethod
    async def tcp(cls, port: int) -> Viewer:
        """Connect to the gateway's loopback port."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(AsyncioStream(reader, writer))

    @classmethod
    async def unix(cls, path: Path) -> Viewer:
        """Connect straight to a display socket."""
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(AsyncioStream(reader, writer))

    async def handshake(self) -> ServerInit:
        """RFB 3.8, security None, shared; returns the ServerInit."""
        version = await self.stream.read_exact(12)
        assert version.startswith(b"RFB 003.")
        await self.stream.write(VERSION_3_8)
        count = (await self.stream.read_exact(1))[0]
        types = await self.stream.read_exact(count)
        assert 1 in types
        await self.stream.write(b"\x01")
        assert await self.stream.read_exact(4) == b"\x00\x00\x00\x00"
        await self.stream.write(b"\x01")
        w, h = struct.unpack("!HH", await self.stream.read_exact(4))
        pf = PixelFormat.parse(await self.stream.read_exact(16), "environment")
        (n,) = struct.unpack("!I", await self.stream.read_exact(4))
        name = await self.stream.read_exact(n)
        self.init = ServerInit(w, h, pf, name)
        self.state = EnvState(Framebuffer(w, h), pf)
        return self.init

    async def set_encodings(self, *encodings: int) -> None:
        """Send SetEncodings (and let the local parser accept them)."""
        assert self.state is not None
        self.state.enabled.update(encodings)
        body = b"".join(struct.pack("!i", e) for e in encodings)
        await self.stream.write(struct.pack("!BxH", 2, len(encodings)) + body)

    async def request(self, incremental: bool = False) -> None:
        """Ask for the whole framebuffer."""
        assert self.init is not None
        await self.stream.write(
            struct.pack("!BBHHHH", 3, int(incremental), 0, 0, self.init.width, self.init.height)
        )

    async def key(self, keysym: int, down: bool) -> None:
        """Send a KeyEvent."""
        await self.stream.write(struct.pack("!BB2xI", 4, int(down), keysym))

    async def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        """Send a PointerEvent."""
        await self.stream.write(struct.pack("!BBHH", 5, buttons, x, y))

    async def cut_text(self, text: bytes) -> None:
        """Send ClientCutText."""
        await self.stream.write(struct.pack("!B3xI", 6, len(text)) + text)

    async def next_message(self) -> ServerMessage:
        """Read one whole server message; update bytes are kept in ``updates``."""
        assert self.state is not None
        chunks: list[bytes] = []

        async def keep(data: bytes) -> None:
            chunks.append(data)

        msg = await read_server_message(self.stream, self.state, keep)
        if chunks:
            self.updates.append(b"".join(chunks))
        return msg

    async def close(self) -> None:
        """Close the connection."""
        await self.stream.close()
