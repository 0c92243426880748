"""A whole frame of a real display, as an image, and pointer clicks, over its RFB socket."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from PIL import Image

from genos.gateway.server_messages import UpdateRelayed
from tests.gateway.rfbclient import Viewer

RAW = 0


def paint(image: Image.Image, update: bytes) -> None:
    """Draw a Raw-only FramebufferUpdate (32 bpp, little-endian BGRX) onto ``image``."""
    (count,) = struct.unpack("!2xH", update[:4])
    at = 4
    for _ in range(count):
        x, y, w, h, encoding = struct.unpack("!HHHHi", update[at : at + 12])
        at += 12
        assert encoding == RAW, f"encoding {encoding} in a Raw-only update"
        size = w * h * 4
        rect = Image.frombytes("RGB", (w, h), update[at : at + size], "raw", "BGRX")
        image.paste(rect, (x, y))
        at += size


async def _grab(socket: Path, clicks: list[tuple[int, int, int]]) -> Image.Image:
    viewer = await Viewer.unix(socket)
    try:
        init = await viewer.handshake()
        await viewer.set_encodings(RAW)
        for x, y, mask in clicks:
            await viewer.pointer(x, y, 0)
            await viewer.pointer(x, y, mask)
            await viewer.pointer(x, y, 0)
        image = Image.new("RGB", (init.width, init.height))
        await viewer.request(incremental=False)
        while not isinstance(await viewer.next_message(), UpdateRelayed):
            pass
        paint(image, viewer.updates[-1])
        return image
    finally:
        await viewer.close()


def screenshot(socket: Path, clicks: list[tuple[int, int, int]] | None = None) -> Image.Image:
    """Click (x, y, button mask) in order, then return one whole frame of the display."""
    return asyncio.run(asyncio.wait_for(_grab(socket, clicks or []), 30))
