"""The clip of ``bench/video.py``: a 1280x720 moving picture drawn into an environment's X
server at 24 frames a second, each frame numbered, reacting to the pointer.

Frame ``i`` (counted modulo :data:`CYCLE`) is a window of a larger photo-like
picture panned 8 pixels a frame (every pixel changes every frame, as in a
video), with ``i`` written in a strip
of black and white squares at the top (:func:`code`; a checksum tells a torn or
smeared read from a good one) and, just below and right of the pointer, a magenta square: the
clip is also an app that answers input, so input-to-frame latency can be read
off any viewer's picture. Each frame goes into a pixmap and then to the root
window in one CopyArea, so the X server never shows half a frame.

    python bench/_video_clip.py X_SOCKET FPS SECONDS

The same module gives the bench the reference frames (:func:`frame`) and the
readers of the strip and the square.
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable

from PIL import Image

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _stream_draw import X11 as _X11
from _stream_draw import picture as _small_picture

WIDTH, HEIGHT = 1280, 720
SQUARE = 40  # the number strip's squares
BITS = 16
MARK = 32  # the pointer's square
OFFSET = 24  # drawn this far right of and below the pointer, clear of the cursor RFB draws
MAGENTA = (255, 0, 255)
CYCLE = 480  # the clip repeats every 20 s (a run sees it whole), its pan every 160 frames
STRIP_ROWS = 48  # rows per PutImage: 1280 * 4 * 48 bytes stays under the core request limit
Pixel = Callable[[int, int], tuple[int, int, int]]


def picture() -> Image.Image:
    """The panned picture: twice the clip's width."""
    return _small_picture().resize((WIDTH * 2, HEIGHT))


def code(i: int) -> int:
    """Frame ``i``'s 16 bits: 10 of the number, 6 of check (the low 6 inverted)."""
    return (i & 0x3FF) << 6 | (~i & 0x3F)


def pixels(image: Image.Image) -> Pixel:
    """``image``'s RGB at (x, y)."""
    data = image.load()
    assert data is not None

    def at(x: int, y: int) -> tuple[int, int, int]:
        r, g, b = data[x, y][:3]  # type: ignore[index]
        return r, g, b

    return at


def read_code(pixel: Pixel) -> int | None:
    """The frame number in a picture (``pixel(x, y)`` -> RGB), or None if it does not check."""
    bits = 0
    for b in range(BITS):
        r, g, bl = pixel(b * SQUARE + SQUARE // 2, SQUARE // 2)
        bits = bits << 1 | int((r + g + bl) > 3 * 128)
    number, check = bits >> 6, bits & 0x3F
    return number if check == ~number & 0x3F else None


def has_mark(pixel: Pixel, x: int, y: int) -> bool:
    """Whether the pointer's square for a pointer at (x, y) is drawn."""
    x, y = mark_at(x, y)
    points = ((x + 8, y + 8), (x + MARK // 2, y + MARK // 2), (x + MARK - 8, y + MARK - 8))
    for px, py in points:
        r, g, b = pixel(px, py)
        if not (r > 180 and g < 90 and b > 180):
            return False
    return True


def mark_at(px: int, py: int) -> tuple[int, int]:
    """The corner of the pointer's square for a pointer at (px, py)."""
    return min(px + OFFSET, WIDTH - MARK), min(py + OFFSET, HEIGHT - MARK)


def strip(i: int) -> Image.Image:
    """The number strip of frame ``i``."""
    image = Image.new("RGB", (BITS * SQUARE, SQUARE))
    bits = code(i)
    for b in range(BITS):
        if bits >> (BITS - 1 - b) & 1:
            image.paste((255, 255, 255), (b * SQUARE, 0, (b + 1) * SQUARE, SQUARE))
    return image


def frame(big: Image.Image, i: int) -> Image.Image:
    """Frame ``i`` without the pointer's square (the bench's reference)."""
    dx = i * 8 % WIDTH
    image = big.crop((dx, 0, dx + WIDTH, HEIGHT))
    image.paste(strip(i), (0, 0))
    return image


class X11(_X11):
    """``_stream_draw``'s X11 client, drawing into a pixmap that :meth:`show` copies to the
    root in one request; and QueryPointer."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.pixmap = self.base + 2
        self.sock.sendall(
            struct.pack("<BBHIIHH", 53, self.depth, 4, self.pixmap, self.root, WIDTH, HEIGHT)
        )  # CreatePixmap
        self.target = self.pixmap

    def show(self) -> None:
        """CopyArea of the whole pixmap onto the root window."""
        self.sock.sendall(
            struct.pack("<BxHIIIhhhhHH", 62, 7, self.pixmap, self.root, self.gc, 0, 0, 0, 0,
                        WIDTH, HEIGHT)
        )  # fmt: skip

    def pointer(self) -> tuple[int, int]:
        """QueryPointer on the root: where the pointer is (waits for the reply: an XSync)."""
        self.sock.sendall(struct.pack("<BxHI", 38, 2, self.root))
        while True:
            reply = self._read(32)
            if reply[0] == 1:
                extra = struct.unpack_from("<I", reply, 4)[0]
                self._read(extra * 4)
                return struct.unpack_from("<hh", reply, 16)


def main(path: str, fps: float, seconds: float) -> None:
    x11 = X11(path)
    big = picture().tobytes("raw", "BGRX")
    row = WIDTH * 2 * 4
    mark = Image.new("RGB", (MARK, MARK), MAGENTA).tobytes("raw", "BGRX")
    period = 1.0 / fps
    start = next_at = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        n = i % CYCLE
        dx = n * 8 % WIDTH * 4
        for y in range(0, HEIGHT, STRIP_ROWS):
            rows = range(y, min(HEIGHT, y + STRIP_ROWS))
            data = b"".join(big[r * row + dx : r * row + dx + WIDTH * 4] for r in rows)
            x11.put(data, WIDTH, len(rows), 0, y)
        x11.put(strip(n).tobytes("raw", "BGRX"), BITS * SQUARE, SQUARE, 0, 0)
        px, py = x11.pointer()
        if 0 <= px < WIDTH and SQUARE <= py < HEIGHT:
            x11.put(mark, MARK, MARK, *mark_at(px, py))
        x11.show()
        x11.pointer()  # a round trip: the frame is on screen before the next one starts
        i += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    print(f"frames {i}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
