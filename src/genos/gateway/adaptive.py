"""Adaptive streaming: measure each viewer's link, choose quality and frame rate.

The gateway sees three moments per frame: it forwards a FramebufferUpdateRequest
to the environment, it relays the update to the viewer, and the viewer asks
for the next frame. A viewer asks again only after it has received and drawn
the previous update, so

* round-trip time = from the end of an update to the viewer's next request
  (link latency both ways plus the viewer's drawing time), and
* throughput = bytes of an update / time from its start to the next request
  (counted only for updates big enough to fill the link).

:class:`AdaptiveController` turns those samples into one ``level`` (0..9) on a
ladder: the JPEG quality, the compression level and the frame-rate cap all
follow it. A slow or distant link walks the ladder down (lower quality, more
compression, fewer frames, so latency stays low); a fast, near one walks it up.
It is pure: time comes from an injected clock, nothing else is touched.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

# level -> (JPEG quality, compression level, frame-rate cap)
LADDER: tuple[tuple[int, int, float], ...] = (
    (0, 9, 4.0),
    (1, 9, 6.0),
    (2, 8, 8.0),
    (3, 7, 10.0),
    (4, 6, 12.0),
    (5, 5, 15.0),
    (6, 4, 20.0),
    (7, 3, 24.0),
    (8, 2, 30.0),
    # Quality 9 is near-lossless: several times the bytes of 8 for little to see.
    (8, 1, 30.0),
)


@dataclass(frozen=True)
class Tuning:
    """Thresholds of the controller (seconds, bits per second)."""

    start_level: int = 6
    rtt_high: float = 0.25
    rtt_low: float = 0.08
    throughput_low: float = 2e6
    throughput_high: float = 20e6
    big_update: int = 32 << 10
    adjust_every: float = 1.0
    min_samples: int = 2
    smoothing: float = 0.3
    window: float = 2.0
    stale_after: float = 5.0
    max_fps: float = 30.0


@dataclass(frozen=True)
class Levels:
    """What the environment should encode with and how often to ask it for frames."""

    quality: int
    compression: int
    max_fps: float


@dataclass(frozen=True)
class LinkStats:
    """The figures for the viewer's overlay and for ``/metrics``."""

    rtt_ms: float | None
    env_latency_ms: float | None
    fps: float
    kbps: float
    quality: int
    compression: int
    max_fps: float
    level: int


class AdaptiveController:
    """Per-viewer controller; feed it the frame moments, read its levels.

    Args:
        clock: monotonic seconds; inject a fake one in tests.
        tuning: thresholds.
    """

    def __init__(self, clock: Clock = time.monotonic, tuning: Tuning | None = None) -> None:
        self._clock = clock
        self.tuning = tuning or Tuning()
        self.level = self.tuning.start_level
        self.rtt: float | None = None
        self.throughput: float | None = None
        self._throughput_at = 0.0
        self.env_latency: float | None = None
        self._request_at: float | None = None
        self._update_start: float | None = None
        self._update_end: float | None = None
        self._update_bytes = 0
        self._samples = 0
        self._last_adjust = clock()
        self._delivered: deque[tuple[float, int]] = deque()

    def request_forwarded(self) -> None:
        """The gateway sent a FramebufferUpdateRequest to the environment."""
        self._request_at = self._clock()

    def update_started(self) -> None:
        """The first byte of a FramebufferUpdate came from the environment."""
        now = self._clock()
        if self._request_at is not None:
            self.env_latency = self._smooth(self.env_latency, now - self._request_at)
            self._request_at = None
        self._update_start = now
        self._update_end = None

    def update_finished(self, nbytes: int) -> None:
        """The whole update has been handed to the viewer's transport.

        Args:
            nbytes: bytes of the update.
        """
        now = self._clock()
        self._update_end = now
        self._update_bytes = nbytes
        self._delivered.append((now, nbytes))
        self._trim(now)

    def client_requested(self) -> bool:
        """The viewer asked for a frame; take samples and maybe move the level.

        Returns:
            Whether the levels changed (the gateway then tells the environment).
        """
        now = self._clock()
        if self._update_end is not None and self._update_start is not None:
            self.rtt = self._smooth(self.rtt, now - self._update_end)
            if self._update_bytes >= self.tuning.big_update:
                rate = self._update_bytes * 8 / max(now - self._update_start, 1e-6)
                self.throughput = self._smooth(self.throughput, rate)
                self._throughput_at = now
            self._samples += 1
            self._update_end = None
        return self._adjust(now)

    def levels(self) -> Levels:
        """The current quality, compression and frame-rate cap."""
        quality, compression, fps = LADDER[self.level]
        return Levels(quality, compression, min(fps, self.tuning.max_fps))

    def min_interval(self) -> float:
        """Seconds to leave between two requests forwarded to the environment."""
        return 1.0 / self.levels().max_fps

    def stats(self) -> LinkStats:
        """A snapshot of the measured and chosen figures."""
        now = self._clock()
        self._trim(now)
        span = self.tuning.window
        total = sum(n for _, n in self._delivered)
        lv = self.levels()
        return LinkStats(
            rtt_ms=None if self.rtt is None else self.rtt * 1000,
            env_latency_ms=None if self.env_latency is None else self.env_latency * 1000,
            fps=len(self._delivered) / span,
            kbps=total * 8 / span / 1000,
            quality=lv.quality,
            compression=lv.compression,
            max_fps=lv.max_fps,
            level=self.level,
        )

    def _smooth(self, old: float | None, sample: float) -> float:
        alpha = self.tuning.smoothing
        return sample if old is None else (1 - alpha) * old + alpha * sample

    def _trim(self, now: float) -> None:
        while self._delivered and self._delivered[0][0] < now - self.tuning.window:
            self._delivered.popleft()

    def _adjust(self, now: float) -> bool:
        t = self.tuning
        if now - self._last_adjust < t.adjust_every or self._samples < t.min_samples:
            return False
        self._last_adjust, self._samples = now, 0
        if now - self._throughput_at > t.stale_after:
            self.throughput = None  # an idle screen says nothing about the link
        old = self.level
        if self._congested():
            step = 2 if self.rtt is not None and self.rtt > 2 * t.rtt_high else 1
            self.level = max(0, self.level - step)
        elif self._clear():
            self.level = min(len(LADDER) - 1, self.level + 1)
        if self.level == old:
            return False
        # Judge the new level on its own samples: the smoothed ones still
        # describe the old level and would push the next step too far.
        self.rtt = self.throughput = None
        return True

    def _congested(self) -> bool:
        t = self.tuning
        slow = self.throughput is not None and self.throughput < t.throughput_low
        return (self.rtt is not None and self.rtt > t.rtt_high) or slow

    def _clear(self) -> bool:
        t = self.tuning
        fast = self.throughput is None or self.throughput > t.throughput_high
        return self.rtt is not None and self.rtt < t.rtt_low and fast
