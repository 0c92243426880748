"""Byte streams the gateway reads and writes, whatever carries them.

The proxy only needs ``read_exact``, ``write`` and ``close``. Three
implementations ship here: :class:`AsyncioStream` (TCP, unix sockets, TLS),
:class:`MessageStream` (any binary message transport such as a WebSocket: each
``write`` is one message, reads are reassembled from messages) and
:func:`memory_pair` (two connected in-memory ends, for tests and fakes).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from genos.errors import ProtocolError, StreamClosedError
from genos.runtime.driver import DisplayTarget

log = logging.getLogger("genos.gateway")


class ByteStream(Protocol):
    """One end of a reliable, ordered byte stream."""

    async def read_exact(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; raise :class:`StreamClosedError` on EOF."""
        ...

    async def write(self, data: bytes) -> None:
        """Write ``data`` and wait until the transport has taken it."""
        ...

    async def close(self, reason: str = "") -> None:
        """Close the stream; ``reason`` goes to the peer where the transport allows."""
        ...


class AsyncioStream:
    """A :class:`ByteStream` over an asyncio ``StreamReader``/``StreamWriter`` pair.

    Args:
        reader: the reading half.
        writer: the writing half.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False

    async def read_exact(self, n: int) -> bytes:
        """Read exactly ``n`` bytes.

        Args:
            n: how many bytes.

        Returns:
            The bytes.

        Raises:
            StreamClosedError: the peer closed or reset before ``n`` bytes came.
        """
        try:
            return await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            raise StreamClosedError(f"end of stream after {len(exc.partial)} of {n}") from exc
        except OSError as exc:
            raise StreamClosedError(f"read failed: {exc}") from exc

    async def write(self, data: bytes) -> None:
        """Write ``data`` and wait for the transport's buffer to drain.

        Args:
            data: the bytes.

        Raises:
            StreamClosedError: the stream is closed or the peer went away.
        """
        if self._closed or self._writer.is_closing():
            raise StreamClosedError("write on a closed stream")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise StreamClosedError(f"write failed: {exc}") from exc

    async def close(self, reason: str = "") -> None:
        """Close the connection (a byte stream has no place for ``reason``)."""
        del reason
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError as exc:  # already reset by the peer: nothing left to release
            log.debug("close after reset: %s", exc)


async def open_unix(path: str | os.PathLike[str], *, limit: int = 1 << 16) -> AsyncioStream:
    """Connect to a unix socket.

    Args:
        path: the socket's path.
        limit: the reader's buffer bound (asyncio's default; more for bulk reads).

    Returns:
        The connected stream.

    Raises:
        StreamClosedError: nothing listens there.
    """
    try:
        reader, writer = await asyncio.open_unix_connection(os.fspath(path), limit=limit)
    except OSError as exc:
        raise StreamClosedError(f"cannot connect to {path}: {exc}") from exc
    return AsyncioStream(reader, writer)


async def open_target(target: DisplayTarget, *, limit: int = 1 << 16) -> AsyncioStream:
    """Connect to a display: a local unix socket, or a remote one through its relay.

    Args:
        target: the display.
        limit: a local socket's reader buffer bound (see :func:`open_unix`).

    Raises:
        StreamClosedError: nothing answers there.
    """
    if isinstance(target, str | os.PathLike):
        return await open_unix(target, limit=limit)
    try:
        reader, writer = await target.open()
    except OSError as exc:
        raise StreamClosedError(f"cannot reach the display: {exc}") from exc
    return AsyncioStream(reader, writer)


Receive = Callable[[], Awaitable[bytes | None]]
Send = Callable[[bytes], Awaitable[None]]
Close = Callable[[str], Awaitable[None]]


class MessageStream:
    """A :class:`ByteStream` over a message transport (a WebSocket's binary messages).

    Args:
        receive: returns the next message's bytes, or ``None`` once the peer closed.
        send: sends one binary message.
        close: closes the transport with a reason.
        max_buffer: most bytes kept from messages not yet read (a bound, not a hint).
    """

    def __init__(
        self, receive: Receive, send: Send, close: Close, *, max_buffer: int = 4 << 20
    ) -> None:
        self._receive = receive
        self._send = send
        self._close = close
        self._buffer = bytearray()
        self._max_buffer = max_buffer
        self._eof = False
        self._closed = False

    async def read_exact(self, n: int) -> bytes:
        """Read exactly ``n`` bytes, across message boundaries.

        Args:
            n: how many bytes.

        Returns:
            The bytes.

        Raises:
            StreamClosedError: the peer closed first.
            ProtocolError: the peer sent more unread data than ``max_buffer``.
        """
        while len(self._buffer) < n:
            if self._eof or self._closed:
                raise StreamClosedError(f"end of stream after {len(self._buffer)} of {n}")
            message = await self._receive()
            if message is None:
                self._eof = True
                continue
            self._buffer += message
            if len(self._buffer) > max(self._max_buffer, n):
                raise ProtocolError("client", "too much data in flight")
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def write(self, data: bytes) -> None:
        """Send ``data`` as one binary message.

        Args:
            data: the bytes.

        Raises:
            StreamClosedError: the stream is closed.
        """
        if self._closed:
            raise StreamClosedError("write on a closed stream")
        await self._send(data)

    async def close(self, reason: str = "") -> None:
        """Close the transport once, passing ``reason`` on."""
        if not self._closed:
            self._closed = True
            await self._close(reason)


class WebSocketLike(Protocol):
    """The part of a Starlette/FastAPI ``WebSocket`` that :func:`websocket_stream` uses."""

    async def receive(self) -> Mapping[str, Any]: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


# RFC 6455 7.4.1: 1000 normal closure, 1008 policy violation.
_WS_NORMAL = 1000
_WS_POLICY = 1008


def websocket_stream(ws: WebSocketLike, *, max_buffer: int = 4 << 20) -> MessageStream:
    """Adapt an accepted Starlette/FastAPI WebSocket to a :class:`ByteStream`.

    Binary messages carry the RFB bytes (noVNC's ``binary`` subprotocol); a
    text message is a protocol error. A close with a reason uses code 1008.

    Args:
        ws: the accepted WebSocket.
        max_buffer: most unread bytes kept.

    Returns:
        The stream.
    """

    async def receive() -> bytes | None:
        message = await ws.receive()
        if message.get("type") == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if not isinstance(data, bytes):
            raise ProtocolError("client", "text message on a binary stream")
        return data

    async def close(reason: str) -> None:
        code = _WS_POLICY if reason else _WS_NORMAL
        try:
            # RFC 6455 5.5: a close reason fits in 123 bytes of UTF-8.
            text = reason.encode("utf-8")[:120].decode("utf-8", "ignore")
            await ws.close(code=code, reason=text or None)
        except Exception as exc:  # noqa: BLE001 - the peer is gone (RuntimeError, WebSocketDisconnect, ...)
            log.debug("websocket close after disconnect: %s", exc)

    return MessageStream(receive, ws.send_bytes, close, max_buffer=max_buffer)


class MemoryStream:
    """One end of an in-memory stream pair made by :func:`memory_pair`."""

    def __init__(self, inbox: asyncio.Queue[bytes | None], peer: MemoryStream | None) -> None:
        self._inbox = inbox
        self.peer = peer
        self._buffer = bytearray()
        self._eof = False
        self.closed = False
        self.close_reason = ""
        self.written = bytearray()

    async def read_exact(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; raise :class:`StreamClosedError` at EOF."""
        while len(self._buffer) < n:
            if self._eof:
                raise StreamClosedError(f"end of stream after {len(self._buffer)} of {n}")
            chunk = await self._inbox.get()
            if chunk is None:
                self._eof = True
            else:
                self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def write(self, data: bytes) -> None:
        """Deliver ``data`` to the peer (and keep a copy in ``written``)."""
        if self.closed or self.peer is None or self.peer.closed:
            raise StreamClosedError("write on a closed stream")
        self.written += data
        self.peer._inbox.put_nowait(bytes(data))

    def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF after what was sent; this end can still read."""
        if self.peer is not None:
            self.peer._inbox.put_nowait(None)

    async def close(self, reason: str = "") -> None:
        """Close both directions; the peer reads EOF after what was sent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._inbox.put_nowait(None)
        if self.peer is not None:
            self.peer._inbox.put_nowait(None)


def memory_pair() -> tuple[MemoryStream, MemoryStream]:
    """Two connected in-memory :class:`ByteStream` ends (what one writes, the other reads).

    Returns:
        The two ends.
    """
    a = MemoryStream(asyncio.Queue(), None)
    b = MemoryStream(asyncio.Queue(), a)
    a.peer = b
    return a, b
