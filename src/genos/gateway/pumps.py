"""The three tasks of a proxied connection once both handshakes are done.

* :meth:`Pumps.client_pump` reads every viewer message with strict bounds,
  applies the grant (view drops input; clipboard direction) and forwards what
  may pass, re-encoded;
* :meth:`Pumps.env_pump` relays updates rectangle by rectangle, checked, and
  passes on Bell, colour maps and (by policy) cut text;
* :meth:`Pumps.pacer` forwards the viewer's incremental update requests no
  faster than the adaptive controller's frame-rate cap, at most one outstanding.

Following a move: when the environment's stream ends between two messages
(nothing of an update half sent) and the session can find the display again
(:attr:`Pumps.follow`, e.g. the environment was live-migrated to another
node), the viewer keeps its connection: writes toward the environment wait,
the new display gets the viewer's pixel format and encodings (without ZRLE,
whose one zlib stream cannot be restarted), the next Tight rectangle resets
the viewer's zlib streams, and a full refresh repaints the screen. The viewer
sees a pause, not a new session.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Awaitable, Callable

from genos.errors import ProtocolError, StreamClosedError
from genos.gateway.client_messages import (
    ClientCutText,
    ClientMessage,
    EncodingChoice,
    KeyEvent,
    PointerEvent,
    SetDesktopSize,
    SetEncodings,
    SetPixelFormat,
    UpdateRequest,
    choose_encodings,
    read_client_message,
)
from genos.gateway.handshake import ServerInit
from genos.gateway.lease import InputLease
from genos.gateway.metrics import Connection
from genos.gateway.rfb import Encoding, ServerMsg, compress_encoding, quality_encoding
from genos.gateway.server_messages import (
    EnvState,
    ServerCutText,
    UpdateRelayed,
    read_server_message,
)
from genos.gateway.streams import ByteStream

Follow = Callable[[], Awaitable[tuple[ByteStream, ServerInit] | None]]
"""The environment's display again, handshaken, once its stream ended (None: it is gone)."""
RESIZES = frozenset({Encoding.DESKTOP_SIZE, Encoding.EXTENDED_DESKTOP_SIZE})


class Pumps:
    """State shared by the three tasks of one connection.

    Args:
        client: the viewer's stream (after the handshake).
        env: the environment's stream (after the handshake).
        state: framebuffer, pixel format and enabled encodings.
        conn: the connection's counters, grant and controller.
        quiesce_timeout: seconds a pixel-format change may wait for an update.
        lease: the environment's input lease, which the viewer's input takes (None: no lease).
        viewer: the viewer's name in the lease (default: the grant's user id).
        follow: finds the display again when its stream ends (None: the session ends).
    """

    def __init__(
        self,
        client: ByteStream,
        env: ByteStream,
        state: EnvState,
        conn: Connection,
        quiesce_timeout: float,
        *,
        lease: InputLease | None = None,
        viewer: str = "",
        follow: Follow | None = None,
    ) -> None:
        self.client = client
        self.env = env
        self.state = state
        self.conn = conn
        self.grant = conn.grant
        self.quiesce_timeout = quiesce_timeout
        self.lease = lease
        self.viewer = viewer or conn.grant.user_id
        self.choice: EncodingChoice | None = None
        self.pending: UpdateRequest | None = None
        self.outstanding = False
        self.last_forward = -math.inf
        self.wake = asyncio.Event()
        self.quiet = asyncio.Event()
        self.quiet.set()
        self.env_lock = asyncio.Lock()
        self.follow = follow
        self.env_ready = asyncio.Event()  # clear while the display is being found again
        self.env_ready.set()
        self.half_sent = False  # bytes of the update being read have reached the viewer
        self.followed = 0  # how many times the display was found again

    # --- toward the viewer ---------------------------------------------------

    async def _update_bytes(self, data: bytes) -> None:
        self.half_sent = True
        await self.client.write(data)

    async def env_pump(self) -> None:
        """Relay the environment's messages until it or the viewer goes away."""
        while True:
            self.half_sent = False
            try:
                msg = await read_server_message(
                    self.env, self.state, self._update_bytes, self.conn.controller.update_started
                )
            except StreamClosedError:
                if self.half_sent or not await self._follow():
                    raise
                continue
            if isinstance(msg, UpdateRelayed):
                self.conn.updates += 1
                self.conn.controller.update_finished(msg.nbytes)
                self.outstanding = False
                self._settle()
            elif isinstance(msg, ServerCutText) and not self.grant.clipboard_from_env:
                self.conn.dropped["ServerCutText"] += 1
            else:
                await self.client.write(msg.pack())

    # --- toward the environment ----------------------------------------------

    async def _to_env(self, data: bytes, name: str) -> None:
        while True:
            await self.env_ready.wait()
            async with self.env_lock:
                env = self.env
                try:
                    await env.write(data)
                    break
                except StreamClosedError:
                    if self.follow is None:
                        raise
                    if self.env is env:  # the env pump sees the same end and follows (or ends)
                        self.env_ready.clear()
        self.conn.bytes_to_env += len(data)
        self.conn.forwarded[name] += 1

    async def _follow(self) -> bool:
        """Find the display again and bring it to the viewer's state; False: it is gone.

        Raises:
            ProtocolError: it came back at a size this viewer cannot be told of.
        """
        if self.follow is None:
            return False
        self.env_ready.clear()
        async with self.env_lock:
            found = await self.follow()
            if found is None:
                return False
            env, init = found
            fb = self.state.fb
            if (init.width, init.height) != (fb.width, fb.height):
                if not RESIZES & self.state.enabled:
                    await env.close()
                    raise ProtocolError("environment", "came back at a size the viewer cannot take")
                fb.resize(init.width, init.height)
                await self.client.write(self._new_size(init.width, init.height))
            self.env = env
            if self.state.format != init.format:
                await env.write(SetPixelFormat(self.state.format).pack())
            self.state.reset_tight = True
            self.followed += 1
            encodings = self._encodings()
            if encodings is not None:
                await env.write(encodings.pack())
            self.outstanding = True
            self.quiet.clear()
            self.conn.controller.request_forwarded()
            await env.write(UpdateRequest(False, 0, 0, fb.width, fb.height).pack())
        self.env_ready.set()
        return True

    async def client_pump(self) -> None:
        """Read, check and forward (or drop) the viewer's messages until it goes away."""
        while True:
            msg = await read_client_message(self.client, self.state.fb, self.state.limits)
            await self._on_client(msg)

    async def _on_client(self, msg: ClientMessage) -> None:
        name = type(msg).__name__
        if isinstance(msg, UpdateRequest):
            await self._on_request(msg)
        elif isinstance(msg, SetEncodings):
            await self._on_encodings(msg)
        elif isinstance(msg, SetPixelFormat):
            await self._on_pixel_format(msg)
        elif self._allowed(msg):
            await self._to_env(msg.pack(), name)
        else:
            self.conn.dropped[name] += 1

    def _allowed(self, msg: ClientMessage) -> bool:
        if isinstance(msg, ClientCutText):
            return self.grant.clipboard_to_env
        if isinstance(msg, SetDesktopSize):
            if Encoding.EXTENDED_DESKTOP_SIZE not in self.state.enabled:
                raise ProtocolError("client", "SetDesktopSize without ExtendedDesktopSize")
            return self.grant.resize_allowed(msg.width, msg.height)
        if not isinstance(msg, KeyEvent | PointerEvent) or not self.grant.input_allowed:
            return False
        return self._leased(msg)

    def _leased(self, msg: KeyEvent | PointerEvent) -> bool:
        """A person's key or button takes the input lease; bare motion passes only
        while no agent holds it."""
        if self.lease is None:
            return True
        touch = isinstance(msg, KeyEvent) or msg.buttons != 0
        if not self.lease.person_input(self.grant.user_id, self.viewer, touch=touch):
            return False
        if isinstance(msg, PointerEvent):
            self.lease.pointer = (msg.x, msg.y)
        return True

    async def _on_encodings(self, msg: SetEncodings) -> None:
        self.choice = choose_encodings(msg)
        self.state.enabled.update(self.choice.encodings)
        await self.send_encodings()

    def _new_size(self, width: int, height: int) -> bytes:
        """A FramebufferUpdate telling the viewer the new size (rfbproto 7.8.2, 7.8.4)."""
        head = struct.pack("!BxH", ServerMsg.FRAMEBUFFER_UPDATE, 1)
        if Encoding.DESKTOP_SIZE in self.state.enabled:
            return head + struct.pack("!HHHHi", 0, 0, width, height, Encoding.DESKTOP_SIZE)
        # x 0: a change on the server's side; one screen covering it all.
        rect = struct.pack("!HHHHi", 0, 0, width, height, Encoding.EXTENDED_DESKTOP_SIZE)
        screen = struct.pack("!IHHHHI", 0, 0, 0, width, height, 0)
        return head + rect + struct.pack("!B3x", 1) + screen

    async def send_encodings(self) -> None:
        """Tell the environment the viewer's encodings plus the controller's levels."""
        message = self._encodings()
        if message is not None:
            await self._to_env(message.pack(), "SetEncodings")

    def _encodings(self) -> SetEncodings | None:
        if self.choice is None:
            return None
        levels = self.conn.controller.levels()
        # After a move the viewer's ZRLE stream holds the old server's history.
        encodings = [e for e in self.choice.encodings if not (self.followed and e == Encoding.ZRLE)]
        if self.choice.wants_quality:
            encodings.append(quality_encoding(levels.quality))
        encodings.append(compress_encoding(levels.compression))
        return SetEncodings(tuple(encodings))

    async def _on_pixel_format(self, msg: SetPixelFormat) -> None:
        # Updates already requested would arrive in the old format: wait for them.
        try:
            async with asyncio.timeout(self.quiesce_timeout):
                await self.quiet.wait()
        except TimeoutError:
            raise ProtocolError("client", "pixel format change raced a pending update") from None
        await self._to_env(msg.pack(), "SetPixelFormat")
        self.state.format = msg.format

    async def _on_request(self, msg: UpdateRequest) -> None:
        if self.conn.controller.client_requested():
            await self.send_encodings()
        if not msg.incremental:
            # A full refresh is never held back: the viewer is waiting on it.
            await self._forward_request(msg)
            return
        self.pending = msg if self.pending is None else self.pending.merge(msg)
        self.quiet.clear()
        self.wake.set()

    async def _forward_request(self, msg: UpdateRequest) -> None:
        self.outstanding = True
        self.quiet.clear()
        self.last_forward = asyncio.get_running_loop().time()
        self.conn.controller.request_forwarded()
        await self._to_env(msg.pack(), "FramebufferUpdateRequest")

    async def pacer(self) -> None:
        """Forward held incremental requests within the frame-rate cap, one at a time."""
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending is not None and not self.outstanding:
                delay = self.last_forward + self.conn.controller.min_interval() - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # the frame-rate cap
                    continue
                request, self.pending = self.pending, None
                await self._forward_request(request)

    def _settle(self) -> None:
        if self.pending is None and not self.outstanding:
            self.quiet.set()
        self.wake.set()
