"""The gateway as an RFB client of its own: what software agents see and send.

A :class:`Desktop` is one shared RFB connection to an environment's display
socket, made with the gateway's client handshake
(:func:`~genos.gateway.handshake.environment_handshake`). It asks for 32-bit
BGRX pixels in Raw and CopyRect only (the socket is local: decoding costs more
than the bytes) and keeps its own copy of the framebuffer. A reader task
applies each update, checked like everything else the environment sends
(rectangles inside the screen, sizes within the limits); callers wait on it:

* :meth:`Desktop.refresh` asks for the whole screen and returns once it came;
* :meth:`Desktop.wait_change` returns once pixels changed (or the timeout);
* :meth:`Desktop.settle` returns once no pixel changed for a quiet period.

While an agent is active (for :data:`ACTIVE` seconds after its last call) the
reader keeps one incremental request outstanding, so the copy trails the
screen by one update at most: a change an action causes is then told from
the changes before it. An idle connection asks for nothing and costs nothing.

Input goes out as canonical KeyEvents and PointerEvents
(:mod:`genos.gateway.client_messages`); coordinates are checked against the
current screen first, so nothing off screen reaches the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from genos.errors import InputError, ProtocolError, StreamClosedError
from genos.gateway.client_messages import (
    KeyEvent,
    PointerEvent,
    SetEncodings,
    SetPixelFormat,
    UpdateRequest,
)
from genos.gateway.handshake import ServerInit, environment_handshake
from genos.gateway.rfb import DEFAULT_LIMITS, Encoding, Limits, PixelFormat, ServerMsg
from genos.gateway.streams import ByteStream, open_target
from genos.runtime.driver import DisplayTarget

log = logging.getLogger("genos.gateway.desktop")
SIDE = "environment"
# Little-endian 32-bit true colour, red at bit 16: bytes B, G, R, X in memory.
BGRX = PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0)
ENCODINGS = (Encoding.RAW, Encoding.COPY_RECT, Encoding.DESKTOP_SIZE, Encoding.LAST_RECT)
BUTTONS = {"left": 1, "middle": 2, "right": 3}
SCROLL_BUTTONS = {"up": 4, "down": 5, "left": 6, "right": 7}
MAX_READ = 1 << 20
READ_BUFFER = 4 << 20
ACTIVE = 30.0  # seconds after an agent's last call that the copy is kept current


class Desktop:
    """One agent connection to an environment's display (see the module docstring).

    Use :meth:`open`; close with :meth:`aclose`.
    """

    def __init__(self, stream: ByteStream, init: ServerInit, limits: Limits) -> None:
        self._stream = stream
        self._limits = limits
        self.name = init.name.decode("utf-8", "replace")
        self.width, self.height = init.width, init.height
        self.pixels = bytearray(init.width * init.height * 4)
        self.updates = 0  # FramebufferUpdates applied
        self.changes = 0  # updates that changed at least one pixel
        self.seen = 0  # ``changes`` when the caller last looked or acted (see wait_change)
        self.pointer = (0, 0)
        self.buttons = 0
        self.held: list[int] = []  # keysyms pressed by hold() and not released
        self._covered = 0  # screen area a full refresh has delivered
        self._updated = asyncio.Event()
        self._write = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self.error: str | None = None
        self._active_until = 0.0
        self._following = False  # an incremental request of the follow loop is outstanding

    @classmethod
    async def open(
        cls,
        target: DisplayTarget,
        *,
        connect: Callable[[DisplayTarget], Awaitable[ByteStream]] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        timeout: float = 10.0,
    ) -> Desktop:
        """Connect and handshake, then start reading updates.

        Raises:
            StreamClosedError: the display is not there.
            ProtocolError: it does not speak RFB the way the gateway accepts.
            TimeoutError: the handshake took longer than ``timeout``.
        """
        # A whole screen in Raw is megabytes: a larger reader buffer means fewer wake-ups.
        stream = await (connect or partial(open_target, limit=READ_BUFFER))(target)
        try:
            async with asyncio.timeout(timeout):
                init = await environment_handshake(stream, limits)
                desktop = cls(stream, init, limits)
                await desktop._send(SetPixelFormat(BGRX).pack())
                await desktop._send(SetEncodings(tuple(int(e) for e in ENCODINGS)).pack())
        except BaseException:
            with contextlib.suppress(StreamClosedError, OSError):
                await stream.close()
            raise
        desktop._reader = asyncio.create_task(desktop._read_loop(), name="desktop-reader")
        return desktop

    @property
    def alive(self) -> bool:
        """Whether the connection still reads updates."""
        return self._reader is not None and not self._reader.done()

    async def aclose(self) -> None:
        """Stop reading and close the connection."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        with contextlib.suppress(StreamClosedError, OSError):
            await self._stream.close()

    # --- the screen ----------------------------------------------------------

    async def refresh(self, timeout: float = 10.0) -> None:
        """Ask for the whole screen and wait until all of it has arrived.

        Raises:
            StreamClosedError: the connection ended.
            TimeoutError: it did not come within ``timeout``.
        """
        await self.follow()
        self._covered = 0
        full = UpdateRequest(False, 0, 0, self.width, self.height)
        await self._send(full.pack())
        async with asyncio.timeout(timeout):
            while self._covered < self.width * self.height:
                await self._next_update()
        self.seen = self.changes

    async def wait_change(self, timeout: float, *, since: int | None = None) -> bool:
        """Wait until some pixel changed since ``since`` (a value of :attr:`changes`; default
        :attr:`seen`, the last refresh or input, so a change that came between an action
        and this call counts); False when ``timeout`` passes first."""
        start = self.seen if since is None else since
        await self.follow()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.changes == start:
            await self._request_incremental()
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self._next_update()
            except TimeoutError:
                return False
        return True

    async def settle(self, quiet: float, timeout: float) -> bool:
        """Wait until no pixel changed for ``quiet`` seconds; False if ``timeout`` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining < quiet:
                await self.wait_change(max(0.0, remaining), since=self.changes)
                return False
            if not await self.wait_change(quiet, since=self.changes):
                return True

    def snapshot(self) -> tuple[int, int, bytes]:
        """Width, height and a copy of the BGRX pixels."""
        return self.width, self.height, bytes(self.pixels)

    # --- input ---------------------------------------------------------------

    def check_point(self, x: int, y: int) -> None:
        """Refuse a point off the current screen.

        Raises:
            InputError: outside ``0 <= x < width``, ``0 <= y < height``.
        """
        if not (0 <= x < self.width and 0 <= y < self.height):
            raise InputError(f"({x}, {y}) is off the {self.width}x{self.height} screen")

    async def move(self, x: int, y: int) -> None:
        """Move the pointer (buttons as they are)."""
        self.check_point(x, y)
        await self._pointer(self.buttons, x, y)

    async def click(self, x: int, y: int, button: str = "left", count: int = 1) -> None:
        """Move to ``(x, y)`` and press and release ``button`` ``count`` times."""
        self.check_point(x, y)
        mask = 1 << (_button(button) - 1)
        events = [PointerEvent(self.buttons, x, y)]
        for _ in range(count):
            events += [PointerEvent(self.buttons | mask, x, y), PointerEvent(self.buttons, x, y)]
        await self._pointers(events)

    async def drag(self, path: Sequence[tuple[int, int]], button: str = "left") -> None:
        """Press ``button`` at the first point, move through the rest, release at the last."""
        for x, y in path:
            self.check_point(x, y)
        mask = 1 << (_button(button) - 1)
        (x0, y0), (xn, yn) = path[0], path[-1]
        events = [PointerEvent(self.buttons, x0, y0), PointerEvent(self.buttons | mask, x0, y0)]
        events += [PointerEvent(self.buttons | mask, x, y) for x, y in path[1:]]
        events.append(PointerEvent(self.buttons, xn, yn))
        await self._pointers(events)

    async def scroll(self, x: int, y: int, dx: int, dy: int) -> None:
        """Scroll at ``(x, y)``: ``dy`` clicks down (negative: up), ``dx`` right (negative: left)"""
        self.check_point(x, y)
        events = [PointerEvent(self.buttons, x, y)]
        for amount, names in ((dy, ("up", "down")), (dx, ("left", "right"))):
            mask = 1 << (SCROLL_BUTTONS[names[amount > 0]] - 1)
            down, up = PointerEvent(self.buttons | mask, x, y), PointerEvent(self.buttons, x, y)
            events += [down, up] * abs(amount)
        await self._pointers(events)

    async def press(self, button: str, *, down: bool) -> None:
        """Hold or release a mouse button where the pointer is."""
        mask = 1 << (_button(button) - 1)
        buttons = self.buttons | mask if down else self.buttons & ~mask
        await self._pointer(buttons, *self.pointer)

    async def keys(self, keysyms: Sequence[int]) -> None:
        """Press the keys in order, then release them in reverse (one combination)."""
        events = [KeyEvent(True, k) for k in keysyms]
        events += [KeyEvent(False, k) for k in reversed(keysyms)]
        await self._input(b"".join(e.pack() for e in events))

    async def type(self, keysyms: Sequence[int]) -> None:
        """Press and release each key in turn (text, one keysym per character)."""
        await self._input(
            b"".join(KeyEvent(True, k).pack() + KeyEvent(False, k).pack() for k in keysyms)
        )

    async def hold(self, keysyms: Sequence[int]) -> None:
        """Press keys and keep them down until :meth:`release`."""
        await self._input(b"".join(KeyEvent(True, k).pack() for k in keysyms))
        self.held += [k for k in keysyms if k not in self.held]

    async def release(self, keysyms: Sequence[int] | None = None) -> None:
        """Release held keys (all of them by default) and any held mouse buttons."""
        keys = list(reversed(self.held)) if keysyms is None else list(keysyms)
        await self._input(b"".join(KeyEvent(False, k).pack() for k in keys))
        self.held = [k for k in self.held if k not in keys]
        if keysyms is None and self.buttons:
            await self._pointer(0, *self.pointer)

    # --- the wire ------------------------------------------------------------

    async def _pointer(self, buttons: int, x: int, y: int) -> None:
        await self._pointers([PointerEvent(buttons, x, y)])

    async def _pointers(self, events: Sequence[PointerEvent]) -> None:
        await self._input(b"".join(e.pack() for e in events))
        last = events[-1]
        self.pointer, self.buttons = (last.x, last.y), last.buttons

    async def _input(self, data: bytes) -> None:
        await self.follow()
        self.seen = self.changes
        await self._send(data)

    async def follow(self) -> None:
        """Keep the copy current for the next :data:`ACTIVE` seconds (see the module doc)."""
        self._active_until = asyncio.get_running_loop().time() + ACTIVE
        if not self._following:
            self._following = True
            await self._request_incremental()

    async def _send(self, data: bytes) -> None:
        if self._reader is not None and self._reader.done():
            raise StreamClosedError(f"the display connection ended: {self.error or 'closed'}")
        async with self._write:
            await self._stream.write(data)

    async def _request_incremental(self) -> None:
        await self._send(UpdateRequest(True, 0, 0, self.width, self.height).pack())

    async def _next_update(self) -> None:
        if self._reader is None or self._reader.done():
            raise StreamClosedError(f"the display connection ended: {self.error or 'closed'}")
        event = self._updated
        reader = self._reader
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not event.is_set():
            raise StreamClosedError(f"the display connection ended: {self.error or 'closed'}")

    async def _read_loop(self) -> None:
        try:
            while True:
                kind = (await self._stream.read_exact(1))[0]
                await self._message(kind)
        except (ProtocolError, StreamClosedError) as exc:
            self.error = str(exc)
            log.info("display connection ended: %s", exc)

    async def _message(self, kind: int) -> None:
        read = self._stream.read_exact
        if kind == ServerMsg.FRAMEBUFFER_UPDATE:
            await self._update()
        elif kind == ServerMsg.SET_COLOUR_MAP_ENTRIES:
            _first, count = struct.unpack("!xHH", await read(5))
            await read(count * 6)
        elif kind == ServerMsg.BELL:
            pass
        elif kind == ServerMsg.SERVER_CUT_TEXT:
            (length,) = struct.unpack("!3xI", await read(7))
            if length > self._limits.max_cut_text:
                raise ProtocolError(SIDE, f"cut text of {length} bytes")
            await read(length)
        else:
            raise ProtocolError(SIDE, f"unknown message type {kind}")

    async def _update(self) -> None:
        (count,) = struct.unpack("!xH", await self._stream.read_exact(3))
        changed = False
        for _ in range(count):
            x, y, w, h, encoding = struct.unpack("!HHHHi", await self._stream.read_exact(12))
            if encoding == Encoding.LAST_RECT:
                break
            if encoding == Encoding.DESKTOP_SIZE:
                self._resize(w, h)
                changed = True
                continue
            if x + w > self.width or y + h > self.height:
                raise ProtocolError(SIDE, f"rectangle {w}x{h}+{x}+{y} outside the screen")
            if encoding == Encoding.RAW:
                changed |= await self._raw(x, y, w, h)
            elif encoding == Encoding.COPY_RECT:
                sx, sy = struct.unpack("!HH", await self._stream.read_exact(4))
                changed |= self._copy((sx, sy), x, y, w, h)
            else:
                raise ProtocolError(SIDE, f"encoding {encoding} was not asked for")
            self._covered += w * h
        self.updates += 1
        self.changes += int(changed)
        self._updated.set()
        self._updated = asyncio.Event()
        if self._following and asyncio.get_running_loop().time() < self._active_until:
            await self._request_incremental()
        else:
            self._following = False

    def _resize(self, width: int, height: int) -> None:
        for value in (width, height):
            if not 0 < value <= self._limits.max_dimension:
                raise ProtocolError(SIDE, f"screen size {width}x{height}")
        self.width, self.height = width, height
        self.pixels = bytearray(width * height * 4)
        self._covered = 0

    async def _raw(self, x: int, y: int, w: int, h: int) -> bool:
        stride, row = self.width * 4, w * 4
        rows_per_read = max(1, MAX_READ // max(row, 1))
        changed = False
        done = 0
        while done < h:
            n = min(rows_per_read, h - done)
            data = await self._stream.read_exact(n * row)
            at = (y + done) * stride + x * 4
            if w == self.width:  # whole lines: one contiguous block
                changed = changed or self.pixels[at : at + n * row] != data
                self.pixels[at : at + n * row] = data
            else:
                for i in range(n):
                    line = data[i * row : (i + 1) * row]
                    start = at + i * stride
                    changed = changed or self.pixels[start : start + row] != line
                    self.pixels[start : start + row] = line
            done += n
        return changed

    def _copy(self, source: tuple[int, int], x: int, y: int, w: int, h: int) -> bool:
        sx, sy = source
        if sx + w > self.width or sy + h > self.height:
            raise ProtocolError(SIDE, f"CopyRect source {w}x{h}+{sx}+{sy} outside the screen")
        stride, row = self.width * 4, w * 4
        starts = [(sy + i) * stride + sx * 4 for i in range(h)]
        rows = [self.pixels[at : at + row] for at in starts]  # copies: the areas may overlap
        changed = False
        for i, line in enumerate(rows):
            at = (y + i) * stride + x * 4
            changed |= self.pixels[at : at + row] != line
            self.pixels[at : at + row] = line
        return changed


def _button(name: str) -> int:
    try:
        return BUTTONS[name]
    except KeyError:
        raise InputError(f"unknown button {name[:16]!r} (left, middle or right)") from None
