"""``WS /v1/environments/{id}/video?token=...[&fps=F&kbps=K]``: video mode, the
environment's screen as H.264 frames.

The display token admits it (control or view: video carries no input; input
still goes by RFB on the display channel, through the gateway's policy).
Each viewer gets its own encoder in the environment (``genos-video``). What
goes to the viewer:

* binary, one message per frame: an 8-byte header (1, flags, seq as u32
  big-endian, 0, 0; flags bit 0: the frame holds an IDR, bit 1: the first
  frame of a restarted encoder) and the access unit, Annex B;
* text, ``{"type": "levels", ...}`` first and whenever the levels change
  (the encoder is restarted, so the next frame is a new stream's key frame),
  and ``{"type": "stats", ...}`` every two seconds.

The viewer acks each frame once decoded: a binary message of its 4-byte
big-endian seq. Anything else ends the channel (1003). With ``fps`` and
``kbps`` the levels are fixed; otherwise :class:`~genos.gateway.video.VideoController`
sets them from the acks. A viewer that acks nothing for :data:`SILENT_LIMIT`
seconds while frames go out is hung up on (1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from genos.api.display import _admit, _open_server
from genos.errors import GenOSError
from genos.gateway.video import (
    FPS_RANGE,
    KBPS_RANGE,
    KEY,
    NEW_STREAM,
    Change,
    VideoController,
    header,
    is_key,
    read_frame,
)
from genos.runtime.driver import DisplayTarget

log = logging.getLogger("genos.api.video")
router = APIRouter()
TICK = 0.25  # seconds between looks at the link
STATS_EVERY = 2.0
SILENT_LIMIT = 10.0


class _ClosedError(Exception):
    """The channel ends with this WebSocket close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _fixed(fps: str | None, kbps: str | None) -> tuple[int, int] | None:
    """Both or neither, in range; raises _ClosedError otherwise."""
    if fps is None and kbps is None:
        return None
    good = (
        fps is not None
        and kbps is not None
        and fps.isdigit()
        and kbps.isdigit()
        and len(fps) <= 2
        and len(kbps) <= 5
        and FPS_RANGE[0] <= int(fps) <= FPS_RANGE[1]
        and KBPS_RANGE[0] <= int(kbps) <= KBPS_RANGE[1]
    )
    if not good:
        raise _ClosedError(1008, "fps (1-60) and kbps (50-20000) go together")
    return int(fps or 0), int(kbps or 0)


class VideoChannel:
    """One viewer's video: the encoder's frames out, the viewer's acks in.

    Args:
        websocket: the accepted viewer.
        target: the environment's ``video`` endpoint.
        controller: the levels.
    """

    def __init__(
        self, websocket: WebSocket, target: DisplayTarget, controller: VideoController
    ) -> None:
        self.websocket, self.target, self.controller = websocket, target, controller
        self.seq = 0
        self.frames = 0
        self.bytes = 0
        self.restarts = 0
        self._encoder: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._restart = False

    async def run(self) -> None:
        """Carry the channel until either side ends it."""
        tasks = [asyncio.create_task(c) for c in (self._inward(), self._outward(), self._ticker())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            exc = next((t.exception() for t in done if t.exception() is not None), None)
            if isinstance(exc, _ClosedError):
                raise exc
            if exc is not None and not isinstance(exc, WebSocketDisconnect | OSError):
                raise exc
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._close_encoder()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            reader, writer = await _open_server(self.target)
        except OSError as exc:
            why = f"the video encoder is not there: {exc.strerror or exc}"
            raise _ClosedError(1011, why) from exc
        fps, kbps = self.controller.levels()
        writer.write(f"{fps} {kbps}\n".encode())
        await writer.drain()
        self._encoder = (reader, writer)
        await self._send_levels()
        return reader, writer

    def _close_encoder(self) -> None:
        if self._encoder is not None:
            self._encoder[1].close()
            self._encoder = None

    async def _send_levels(self) -> None:
        fps, kbps = self.controller.levels()
        message = {
            "type": "levels",
            "level": self.controller.level,
            "fps": fps,
            "kbps": kbps,
            "adaptive": self.controller.adaptive,
        }
        await self.websocket.send_text(json.dumps(message))

    async def _outward(self) -> None:
        reader, _ = await self._open()
        new = True
        while True:
            try:
                frame = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                if not self._restart:
                    raise _ClosedError(1011, "the video encoder ended") from exc
                self._restart = False
                self.restarts += 1
                self.controller.restarted()
                reader, _ = await self._open()
                new = True
                continue
            except GenOSError as exc:
                raise _ClosedError(1011, str(exc)[:120]) from exc
            flags = (KEY if is_key(frame) else 0) | (NEW_STREAM if new else 0)
            if new and not flags & KEY:
                continue  # a restarted encoder's stream is of no use before its key frame
            new = False
            await self.websocket.send_bytes(header(flags, self.seq) + frame)
            self.controller.sent(self.seq, len(frame))
            self.seq += 1
            self.frames += 1
            self.bytes += len(frame)

    async def _inward(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None or len(data) != 4:
                raise _ClosedError(1003, "acks only: a frame's seq, 4 bytes big-endian")
            self.controller.acked(int.from_bytes(data, "big"))

    async def _ticker(self) -> None:
        stats_at = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(TICK)
            now = asyncio.get_running_loop().time()
            change = self.controller.tick()
            if change is not Change.NONE and self._encoder is not None:
                self._restart = True
                self._encoder[1].close()
            if self.controller.silent() > SILENT_LIMIT:
                raise _ClosedError(1008, f"no frame acked for {SILENT_LIMIT:.0f} s")
            if now - stats_at >= STATS_EVERY:
                stats_at = now
                stats = {"type": "stats", **asdict(self.controller.stats())}
                await self.websocket.send_text(json.dumps(stats))


@router.websocket("/v1/environments/{env_id}/video")
async def video(
    websocket: WebSocket,
    env_id: str,
    token: str = "",
    fps: str | None = None,
    kbps: str | None = None,
) -> None:
    """Carry the environment's screen as H.264 frames to a viewer, at levels the link allows."""
    try:
        fixed = _fixed(fps, kbps)
    except _ClosedError as exc:
        await websocket.close(code=exc.code, reason=exc.reason)
        return
    admitted = await _admit(websocket, env_id, token, "video")
    if admitted is None:
        return
    _svc, _grant, target = admitted
    channel = VideoChannel(websocket, target, VideoController(fixed=fixed))
    code, reason = 1000, ""
    try:
        await channel.run()
    except _ClosedError as exc:
        code, reason = exc.code, exc.reason
    finally:
        log.info(
            "%s: video channel closed after %d frames, %d bytes, %d restarts%s",
            env_id, channel.frames, channel.bytes, channel.restarts,
            f": {reason}" if reason else "",
        )  # fmt: skip
        with contextlib.suppress(Exception):
            await websocket.close(code=code, reason=reason[:120])
