"""A fake display server, shipped beside the real gateway for tests of its users.

:class:`FakeDisplay` speaks the server side of RFB 3.8 (security None), reads
every client message with the gateway's own strict parser (so a test sees if
anything malformed was forwarded), and answers update requests with Raw
rectangles of one colour. Use :meth:`FakeDisplay.connect` as
``ProxyOptions.connect`` (in memory) or :meth:`FakeDisplay.serve_unix` for a
real socket, e.g. in API tests without Xvnc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from pathlib import Path

from genos.errors import ProtocolError, StreamClosedError
from genos.gateway.client_messages import (
    ClientMessage,
    SetPixelFormat,
    UpdateRequest,
    read_client_message,
)
from genos.gateway.handshake import ServerInit
from genos.gateway.rfb import SECURITY_NONE, VERSION_3_8, Framebuffer, PixelFormat, ServerMsg
from genos.gateway.streams import AsyncioStream, ByteStream, memory_pair

RGB888 = PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0)


class FakeDisplay:
    """An in-process RFB server that records what reaches it.

    Args:
        width: framebuffer width.
        height: framebuffer height.
        colour: the 4-byte pixel every update is filled with (32 bpp).
        answer_incremental: answer incremental requests at once (a real server
            waits for a change; set False to mimic that).
    """

    def __init__(
        self,
        width: int = 64,
        height: int = 48,
        colour: bytes = b"\x20\x40\x80\x00",
        *,
        answer_incremental: bool = True,
    ) -> None:
        self.init = ServerInit(width, height, RGB888, b"fake display")
        self.colour = colour
        self.answer_incremental = answer_incremental
        self.received: list[ClientMessage] = []
        self.errors: list[ProtocolError] = []
        self.clients: list[ByteStream] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self, _target: Path) -> ByteStream:
        """Open an in-memory connection (fits ``ProxyOptions.connect``)."""
        gateway_end, display_end = memory_pair()
        task = asyncio.create_task(self.serve(display_end))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return gateway_end

    async def serve_unix(self, path: Path) -> asyncio.Server:
        """Listen on a unix socket, like an environment's display."""
        return await asyncio.start_unix_server(self.handle, os.fspath(path))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one socket connection (an ``asyncio.start_*_server`` handler)."""
        await self.serve(AsyncioStream(reader, writer))

    async def serve(self, stream: ByteStream) -> None:
        """Run one connection until the client leaves or breaks the protocol."""
        self.clients.append(stream)
        try:
            await self._handshake(stream)
            fb = Framebuffer(self.init.width, self.init.height)
            bpp = self.init.format.bytes_per_pixel
            while True:
                msg = await read_client_message(stream, fb)
                self.received.append(msg)
                if isinstance(msg, SetPixelFormat):
                    bpp = msg.format.bytes_per_pixel
                if isinstance(msg, UpdateRequest) and (
                    self.answer_incremental or not msg.incremental
                ):
                    await stream.write(self.update(msg, bpp))
        except ProtocolError as exc:
            self.errors.append(exc)
        except StreamClosedError:
            pass
        finally:
            self.clients.remove(stream)
            await stream.close()

    async def _handshake(self, stream: ByteStream) -> None:
        await stream.write(VERSION_3_8)
        if await stream.read_exact(12) != VERSION_3_8:
            raise ProtocolError("client", "bad version")
        await stream.write(bytes([1, SECURITY_NONE]))
        if (await stream.read_exact(1))[0] != SECURITY_NONE:
            raise ProtocolError("client", "bad security type")
        await stream.write(b"\x00\x00\x00\x00")
        await stream.read_exact(1)
        await stream.write(self.init.pack())

    def update(self, req: UpdateRequest, bpp: int = 4) -> bytes:
        """A FramebufferUpdate with one Raw rectangle covering ``req``."""
        pixel = (self.colour * bpp)[:bpp]
        head = struct.pack("!BxH", ServerMsg.FRAMEBUFFER_UPDATE, 1)
        rect = struct.pack("!HHHHi", req.x, req.y, req.width, req.height, 0)
        return head + rect + pixel * (req.width * req.height)

    async def broadcast(self, data: bytes) -> None:
        """Send raw server-message bytes to every connected client."""
        for stream in list(self.clients):
            with contextlib.suppress(StreamClosedError):
                await stream.write(data)

    def count(self, kind: type[ClientMessage]) -> int:
        """How many messages of one type reached the display."""
        return sum(isinstance(m, kind) for m in self.received)
