"""The two RFB handshakes the gateway performs itself (RFC 6143 7.1-7.3).

Toward the viewer the gateway is the server: it offers version 3.8 and
security type None (the viewer was authorised by its token already) and
accepts nothing else. Toward the environment it is the client: it accepts
3.8 or later (and answers 3.8), picks None only if offered, and always asks
for a shared session so several viewers can watch one display.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from genos.errors import ProtocolError
from genos.gateway.rfb import (
    DEFAULT_LIMITS,
    SECURITY_NONE,
    VERSION_3_8,
    Limits,
    PixelFormat,
    check_dimension,
)
from genos.gateway.streams import ByteStream

_VERSION = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
_OK, _FAILED = 0, 1


@dataclass(frozen=True)
class ServerInit:
    """RFC 6143 7.3.2: the environment's framebuffer, pixel format and desktop name."""

    width: int
    height: int
    format: PixelFormat
    name: bytes

    def pack(self) -> bytes:
        """The canonical wire form."""
        head = struct.pack("!HH", self.width, self.height) + self.format.pack()
        return head + struct.pack("!I", len(self.name)) + self.name


async def client_version(client: ByteStream) -> None:
    """Send our version to the viewer and accept only the same back.

    Args:
        client: the viewer's stream.

    Raises:
        ProtocolError: any other version string.
    """
    await client.write(VERSION_3_8)
    answer = await client.read_exact(12)
    if answer != VERSION_3_8:
        raise ProtocolError("client", f"protocol version {answer[:12]!r} was not offered")


async def client_refuse(client: ByteStream, reason: str) -> None:
    """Tell the viewer, in RFB terms, that the connection cannot go on (RFC 6143 7.1.2).

    Args:
        client: the viewer's stream, after :func:`client_version`.
        reason: a short reason the viewer may show.
    """
    text = reason.encode("utf-8", "replace")[:200]
    await client.write(b"\x00" + struct.pack("!I", len(text)) + text)


async def client_security(client: ByteStream) -> None:
    """Offer security type None, accept only it, then read ClientInit.

    Args:
        client: the viewer's stream, after :func:`client_version`.

    Raises:
        ProtocolError: the viewer chose a type that was not offered.
    """
    await client.write(bytes([1, SECURITY_NONE]))
    choice = (await client.read_exact(1))[0]
    if choice != SECURITY_NONE:
        text = b"security type not offered"
        await client.write(struct.pack("!II", _FAILED, len(text)) + text)
        raise ProtocolError("client", f"security type {choice} was not offered")
    await client.write(struct.pack("!I", _OK))
    await client.read_exact(1)  # ClientInit's shared-flag: every gateway session is shared


async def environment_handshake(env: ByteStream, limits: Limits = DEFAULT_LIMITS) -> ServerInit:
    """Handshake with the environment's display server as a client.

    Args:
        env: the stream to the environment's display socket.
        limits: bounds on names, reasons and sizes.

    Returns:
        The environment's ServerInit, checked.

    Raises:
        ProtocolError: a version, security type or ServerInit the gateway refuses.
        StreamClosedError: the environment went away.
    """
    match = _VERSION.fullmatch(await env.read_exact(12))
    if match is None or (int(match[1]), int(match[2])) < (3, 8):
        raise ProtocolError("environment", "does not speak RFB 3.8")
    await env.write(VERSION_3_8)
    count = (await env.read_exact(1))[0]
    if count == 0:
        raise ProtocolError("environment", f"refused: {await _reason(env, limits)}")
    offered = await env.read_exact(count)
    if SECURITY_NONE not in offered:
        raise ProtocolError("environment", f"offers no supported security type {list(offered)}")
    await env.write(bytes([SECURITY_NONE]))
    (result,) = struct.unpack("!I", await env.read_exact(4))
    if result != _OK:
        raise ProtocolError("environment", f"security failed: {await _reason(env, limits)}")
    await env.write(b"\x01")  # ClientInit: shared
    return await _server_init(env, limits)


async def _reason(env: ByteStream, limits: Limits) -> str:
    (length,) = struct.unpack("!I", await env.read_exact(4))
    if length > limits.max_reason:
        raise ProtocolError("environment", f"reason of {length} bytes is too long")
    return (await env.read_exact(length)).decode("latin-1")


async def _server_init(env: ByteStream, limits: Limits) -> ServerInit:
    width, height = struct.unpack("!HH", await env.read_exact(4))
    check_dimension("environment", "width", width, limits)
    check_dimension("environment", "height", height, limits)
    if width == 0 or height == 0:
        raise ProtocolError("environment", "framebuffer of no size")
    pixel_format = PixelFormat.parse(await env.read_exact(16), "environment")
    (length,) = struct.unpack("!I", await env.read_exact(4))
    if length > limits.max_name:
        raise ProtocolError("environment", f"desktop name of {length} bytes is too long")
    return ServerInit(width, height, pixel_format, await env.read_exact(length))
