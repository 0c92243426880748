"""Draw the GenOS app icons (icon-192.png, icon-512.png) with the standard library only.

A terminal prompt on a monitor, on a full-bleed background so the same image
works as a maskable icon (the drawing stays inside the central safe zone).
Run: python3 web/icons/make_icons.py
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

TOP, BOTTOM = (0x1D, 0x3B, 0x58), (0x0E, 0x15, 0x1D)
LIGHT, ACCENT = (0xE8, 0xF1, 0xF8), (0x3D, 0xDC, 0x97)
SAMPLES = 3  # per axis, for anti-aliasing


def rounded_rect(x: float, y: float, x0: float, y0: float, x1: float, y1: float, r: float) -> float:
    """Signed distance to a rounded rectangle (negative inside)."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = (x1 - x0) / 2 - r, (y1 - y0) / 2 - r
    qx, qy = abs(x - cx) - hx, abs(y - cy) - hy
    outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
    return outside + min(max(qx, qy), 0.0) - r


def segment(x: float, y: float, ax: float, ay: float, bx: float, by: float) -> float:
    """Distance to the segment a-b."""
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(x - ax - t * dx, y - ay - t * dy)


def colour_at(x: float, y: float) -> tuple[int, int, int]:
    """The colour of the point (x, y) in the unit square."""
    screen = rounded_rect(x, y, 0.2, 0.26, 0.8, 0.68, 0.05)
    if abs(screen) < 0.024:
        return LIGHT
    if rounded_rect(x, y, 0.45, 0.68, 0.55, 0.75, 0.0) < 0 or rounded_rect(x, y, 0.34, 0.745, 0.66, 0.785, 0.018) < 0:
        return LIGHT
    chevron = min(segment(x, y, 0.30, 0.38, 0.385, 0.47), segment(x, y, 0.385, 0.47, 0.30, 0.56))
    if chevron < 0.022 or rounded_rect(x, y, 0.43, 0.535, 0.57, 0.575, 0.008) < 0:
        return ACCENT
    return tuple(round(a + (b - a) * y) for a, b in zip(TOP, BOTTOM, strict=True))  # type: ignore[return-value]


def render(size: int) -> bytes:
    """RGB rows of the icon at `size` pixels, each prefixed by PNG filter type 0."""
    rows = bytearray()
    step = 1 / (size * SAMPLES)
    for py in range(size):
        rows.append(0)
        for px in range(size):
            acc = [0, 0, 0]
            for sy in range(SAMPLES):
                for sx in range(SAMPLES):
                    c = colour_at((px * SAMPLES + sx + 0.5) * step, (py * SAMPLES + sy + 0.5) * step)
                    acc[0] += c[0]
                    acc[1] += c[1]
                    acc[2] += c[2]
            rows.extend(round(v / SAMPLES**2) for v in acc)
    return bytes(rows)


def png(size: int, raw: bytes) -> bytes:
    """A PNG file (RGB, 8 bit) from filtered rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main() -> None:
    here = Path(__file__).resolve().parent
    for size in (192, 512):
        (here / f"icon-{size}.png").write_bytes(png(size, render(size)))


if __name__ == "__main__":
    main()
