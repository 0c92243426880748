"""Video mode: an environment's H.264 frames, checked and bounded, and the
per-viewer controller of their bitrate and frame rate.

The environment encodes (``genos-video`` on ``video.sock``, one x264 encoder
per viewer, asked for ``"<fps> <kbit/s>"``); the gateway parses nothing of
the codec but the framing: each frame (an access unit, Annex B) comes as one
multipart part (boundary ``genos``) with its ``Content-Length``, so it passes
on the moment it is whole. Headers are bounded (:data:`MAX_LINE`,
:data:`MAX_HEADERS`) and so is a frame (:data:`MAX_FRAME`); anything else
closes the channel. The only look inside a frame is for the NAL type of its
first slice, to tell the viewer which frames a decoder may start on.

:class:`VideoController` sets the encoder's levels from the viewer's acks
(the viewer acks each frame once decoded). A frame's ack delay less the least
delay of the last :attr:`VideoTuning.base_window` seconds is the time it
queued on the way: above :attr:`VideoTuning.queue_high` the link is full and
the level steps down (and that level is not tried again for a while); below
:attr:`VideoTuning.queue_low` for :attr:`VideoTuning.climb_after` seconds,
while the encoder uses most of its bitrate (:attr:`VideoTuning.use_to_climb`
of it reaches the viewer: a still or simple screen gains nothing from more),
it steps up, and a link that cannot carry the new level says so by queueing.
Frames unacked for :attr:`VideoTuning.backlog_limit` seconds mean the viewer
is far behind: the encoder is restarted two levels down, which
also drops what is queued inside the environment. It is pure: time comes
from an injected clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from genos.errors import ProtocolError

Clock = Callable[[], float]
SIDE = "environment"
BOUNDARY = b"--genos\r\n"
MAX_LINE = 128
MAX_HEADERS = 8
MAX_FRAME = 4 << 20  # bytes: a 4K key frame at a high bitrate fits
KEY = 1  # flags: the frame holds an IDR (a decoder may start here)
NEW_STREAM = 2  # flags: the first frame of a restarted encoder (reset the decoder)
HEADER_SIZE = 8

# level -> (kbit/s, frames a second)
LADDER: tuple[tuple[int, int], ...] = (
    (150, 10),
    (250, 12),
    (400, 15),
    (600, 20),
    (900, 24),
    (1300, 24),
    (1800, 30),
    (2500, 30),
    (4000, 30),
    (6000, 30),
)
FPS_RANGE = (1, 60)
KBPS_RANGE = (50, 20000)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """Read one frame: a multipart part of ``genos-video``.

    Args:
        reader: the environment's video socket.

    Returns:
        The access unit's bytes.

    Raises:
        ProtocolError: not the expected framing, or a part too large.
        asyncio.IncompleteReadError: the stream ended.
    """
    if await reader.readexactly(len(BOUNDARY)) != BOUNDARY:
        raise ProtocolError(SIDE, "the video channel is not genos-video's framing")
    length = None
    for _ in range(MAX_HEADERS):
        line = await _line(reader)
        if not line:
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            text = value.strip()
            if not text.isdigit() or len(text) > 9:
                raise ProtocolError(SIDE, "a video frame's length is not a number")
            length = int(text)
    else:
        raise ProtocolError(SIDE, "a video frame has too many headers")
    if length is None or not 0 < length <= MAX_FRAME:
        raise ProtocolError(SIDE, f"a video frame's length is missing or over {MAX_FRAME}")
    frame = await reader.readexactly(length)
    if await reader.readexactly(2) != b"\r\n":
        raise ProtocolError(SIDE, "a video frame does not end where its length says")
    return frame


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError(SIDE, "a video frame's header line is too long") from exc
    if len(line) > MAX_LINE:
        raise ProtocolError(SIDE, "a video frame's header line is too long")
    return line[:-2]


def is_key(frame: bytes) -> bool:
    """Whether the first slice of ``frame`` (Annex B) is an IDR slice (NAL type 5)."""
    at = frame.find(b"\x00\x00\x01")
    while 0 <= at < len(frame) - 3:
        kind = frame[at + 3] & 0x1F
        if kind in (1, 5):
            return kind == 5
        at = frame.find(b"\x00\x00\x01", at + 3)
    return False


def header(flags: int, seq: int) -> bytes:
    """The 8 bytes before a frame in its WebSocket message: 1, flags, seq (u32 BE), 0, 0."""
    return bytes((1, flags)) + (seq & 0xFFFFFFFF).to_bytes(4, "big") + b"\x00\x00"


@dataclass(frozen=True)
class VideoTuning:
    """Thresholds of the controller (seconds, kbit/s)."""

    start_level: int = 5
    adjust_every: float = 1.0
    queue_high: float = 0.15
    queue_low: float = 0.04
    climb_after: float = 3.0
    hold_after_drop: float = 10.0
    backlog_limit: float = 1.0
    base_window: float = 10.0
    rate_window: float = 3.0
    use_to_climb: float = 0.8
    smoothing: float = 0.3


class Change(Enum):
    """What the gateway should do after :meth:`VideoController.tick`."""

    NONE = "none"
    LEVEL = "level"  # restart the encoder at the new level
    FLUSH = "flush"  # the viewer is far behind: restart lower, dropping what queued


@dataclass(frozen=True)
class VideoStats:
    """Figures for the viewer's overlay."""

    level: int
    fps: int
    kbps: int
    adaptive: bool
    delivered_fps: float
    delivered_kbps: float
    rtt_ms: float | None


class VideoController:
    """Per-viewer controller of the encoder's bitrate and frame rate.

    Args:
        clock: monotonic seconds.
        tuning: thresholds.
        fixed: (fps, kbit/s) to hold without adapting; None to adapt.
    """

    def __init__(
        self,
        clock: Clock = time.monotonic,
        tuning: VideoTuning | None = None,
        fixed: tuple[int, int] | None = None,
    ) -> None:
        self._clock = clock
        self.tuning = tuning or VideoTuning()
        self.fixed = fixed
        self.level = self.tuning.start_level
        self.queue: float | None = None  # smoothed ack delay over the least one
        self.rtt: float | None = None
        self._sent: dict[int, tuple[float, int]] = {}
        self._delays: deque[tuple[float, float]] = deque()
        self._acked: deque[tuple[float, int]] = deque()
        self._clear_since: float | None = None
        self._ceiling: tuple[int, float] | None = None  # (level, until)
        self._last_adjust = clock()
        self.last_ack = clock()
        self.unacked = 0  # frames sent since the last ack

    @property
    def adaptive(self) -> bool:
        return self.fixed is None

    def levels(self) -> tuple[int, int]:
        """(fps, kbit/s) the encoder should run at."""
        if self.fixed is not None:
            return self.fixed
        kbps, fps = LADDER[self.level]
        return fps, kbps

    def sent(self, seq: int, nbytes: int) -> None:
        """Frame ``seq`` of ``nbytes`` went to the viewer's transport."""
        self._sent[seq] = (self._clock(), nbytes)
        self.unacked += 1

    def acked(self, seq: int) -> bool:
        """The viewer decoded frame ``seq``; False if no such frame is outstanding."""
        sent = self._sent.pop(seq, None)
        if sent is None:
            return False
        now = self._clock()
        self.last_ack, self.unacked = now, 0
        at, nbytes = sent
        delay = now - at
        # Acks come in order: anything older than seq is lost to a restart or dropped.
        for old in [s for s in self._sent if s < seq]:
            del self._sent[old]
        self._delays.append((now, delay))
        while self._delays[0][0] < now - self.tuning.base_window:
            self._delays.popleft()
        base = min(d for _, d in self._delays)
        alpha = self.tuning.smoothing
        queued = delay - base
        self.queue = queued if self.queue is None else (1 - alpha) * self.queue + alpha * queued
        self.rtt = base
        self._acked.append((now, nbytes))
        self._trim(now)
        return True

    def silent(self) -> float:
        """Seconds since the last ack while frames went out since (0 when none did)."""
        return self._clock() - self.last_ack if self.unacked else 0.0

    def backlog(self) -> float:
        """Seconds the oldest unacked frame has waited."""
        if not self._sent:
            return 0.0
        return self._clock() - min(at for at, _ in self._sent.values())

    def restarted(self) -> None:
        """The encoder was restarted: frames of the old one are no longer waited for."""
        self._sent.clear()
        self.queue = None
        self._clear_since = None

    def tick(self) -> Change:
        """Look at the link; maybe move the level.

        Returns:
            What the gateway should do.
        """
        if self.fixed is not None:
            return Change.NONE
        t, now = self.tuning, self._clock()
        if self.backlog() > t.backlog_limit:
            self._drop(now, 2)
            return Change.FLUSH
        if now - self._last_adjust < t.adjust_every or self.queue is None:
            return Change.NONE
        self._last_adjust = now
        old = self.level
        if self.queue > t.queue_high:
            self._drop(now, 1)
        elif self.queue < t.queue_low:
            self._clear_since = self._clear_since if self._clear_since is not None else now
            if now - self._clear_since >= t.climb_after and self._may_climb(now):
                self.level += 1
                self._clear_since = now
        else:
            self._clear_since = None
        return Change.LEVEL if self.level != old else Change.NONE

    def _drop(self, now: float, steps: int) -> None:
        self._ceiling = (self.level, now + self.tuning.hold_after_drop)
        self.level = max(0, self.level - steps)
        self._clear_since = None

    def _may_climb(self, now: float) -> bool:
        nxt = self.level + 1
        if nxt >= len(LADDER):
            return False
        if self._ceiling is not None and nxt >= self._ceiling[0] and now < self._ceiling[1]:
            return False
        return self._delivered_kbps(now) >= self.tuning.use_to_climb * self.levels()[1]

    def _delivered_kbps(self, now: float) -> float:
        self._trim(now)
        return sum(n for _, n in self._acked) * 8 / 1000 / self.tuning.rate_window

    def _trim(self, now: float) -> None:
        while self._acked and self._acked[0][0] < now - self.tuning.rate_window:
            self._acked.popleft()

    def stats(self) -> VideoStats:
        """A snapshot of the chosen and measured figures."""
        now = self._clock()
        self._trim(now)
        span = self.tuning.rate_window
        fps, kbps = self.levels()
        return VideoStats(
            level=self.level,
            fps=fps,
            kbps=kbps,
            adaptive=self.adaptive,
            delivered_fps=round(len(self._acked) / span, 1),
            delivered_kbps=round(self._delivered_kbps(now), 1),
            rtt_ms=None if self.rtt is None else round(self.rtt * 1000, 1),
        )
