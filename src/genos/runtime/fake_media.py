"""The fake driver's video and recording sockets: what the environment's
``genos-video`` and ``genos-record`` answer, without an encoder.

``video.sock`` reads the viewer's ``"<fps> <kbit/s>"`` line (the same bounds as
``genos-video``) and then writes, at that frame rate, Annex B access units of
the size the bitrate allows, one multipart part each as ``genos-video`` frames
them: an access unit delimiter, then one slice NAL (an IDR first, then
non-IDR), its body bytes that never hold a start code. The
gateway's framing and adaptation are tested on it; decoding is tested on the
real encoder.

``record.sock`` reads ``"<seconds>\\n"`` (1-600) and answers ``OK\\n`` and
``FAKE_MP4`` (without waiting the seconds), or ``ERR <why>\\n``.

The fake driver serves both with ``genos.runtime.fake.serve_tracked``, which
closes each connection when its handler returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
AUD = b"\x00\x00\x00\x01\x09\xf0"
IDR = b"\x00\x00\x00\x01\x65"
SLICE = b"\x00\x00\x00\x01\x41"
FAKE_MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"genos-fake-recording"


@dataclass
class MediaLog:
    """What reached the fake sockets (for tests)."""

    video_asks: list[str] = field(default_factory=list)  # each viewer's first line
    videos: int = 0  # video connections still open
    recordings: list[str] = field(default_factory=list)  # each request's first line


def fake_frame(n: int, size: int) -> bytes:
    """Access unit ``n`` (0: the key frame) with ``size`` body bytes."""
    body = bytes([0x11 + n % 0x40]) * max(1, size)
    return AUD + (IDR if n == 0 else SLICE) + body


def part(frame: bytes) -> bytes:
    """``frame`` as ``genos-video``'s multipartmux writes it."""
    head = b"--genos\r\nContent-Type: video/x-h264\r\nContent-Length: %d\r\n\r\n" % len(frame)
    return head + frame + b"\r\n"


def _params(line: str) -> tuple[int, int] | None:
    parts = line.split()
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 5 for p in parts):
        return None
    fps, kbps = int(parts[0]), int(parts[1])
    return (fps, kbps) if 1 <= fps <= 60 and 50 <= kbps <= 20000 else None


def video_server(log: MediaLog) -> Handler:
    """The ``video.sock`` handler."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log.videos += 1
        try:
            line = (await reader.readline())[:64].decode(errors="replace").strip()
            log.video_asks.append(line)
            params = _params(line)
            if params is None:
                return
            fps, kbps = params
            size = kbps * 1000 // 8 // fps
            n = 0
            while True:
                writer.write(part(fake_frame(n, size)))
                await writer.drain()
                n += 1
                await asyncio.sleep(1 / fps)
        except (ConnectionError, OSError):
            pass
        finally:
            log.videos -= 1

    return serve


def record_server(log: MediaLog) -> Handler:
    """The ``record.sock`` handler."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline())[:64].decode(errors="replace").strip()
            log.recordings.append(line)
            if not (line.isdigit() and len(line) <= 3 and 1 <= int(line) <= 600):
                writer.write(b"ERR the length is 1 to 600 seconds\n")
            else:
                writer.write(b"OK\n" + FAKE_MP4)
            await writer.drain()
        except (ConnectionError, OSError):
            pass

    return serve
