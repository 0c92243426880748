"""Ogg pages (RFC 3533) from an environment's sound channel, checked and bounded.

The environment encodes its sound to Opus in Ogg itself (``genos-audio``);
the gateway parses nothing of the codec, only the container's framing: each
page starts with ``OggS`` version 0, its segment table says its size (at most
255 * 255 bytes of body), and the stream's pages pass to the viewer one
WebSocket message each. Anything else closes the channel.
"""

from __future__ import annotations

import struct

from genos.errors import ProtocolError
from genos.gateway.streams import ByteStream

CAPTURE = b"OggS"
HEADER = struct.Struct("<4sBBqIIIB")  # RFC 3533 section 6: 27 bytes
SIDE = "environment"


async def read_page(stream: ByteStream) -> bytes:
    """Read one whole Ogg page.

    Args:
        stream: the environment's sound socket.

    Returns:
        The page's bytes (header, segment table and body).

    Raises:
        ProtocolError: not an Ogg page of version 0.
        StreamClosedError: the stream ended.
    """
    head = await stream.read_exact(HEADER.size)
    capture, version, _flags, _granule, _serial, _seq, _crc, segments = HEADER.unpack(head)
    if capture != CAPTURE or version != 0:
        raise ProtocolError(SIDE, "the sound channel is not an Ogg stream")
    table = await stream.read_exact(segments) if segments else b""
    body = await stream.read_exact(sum(table)) if sum(table) else b""
    return head + table + body
