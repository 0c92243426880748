"""The moving workload of ``bench/stream.py``: a photo-like image panning on the X root.

A minimal X11 client (core protocol only, no library): it connects to the
display's unix socket, makes a GC on the root window and every 1/fps seconds
PutImages a 640x360 window of a larger, smooth-plus-noise picture, shifted a
few pixels, then waits for a GetInputFocus round trip (XSync) so it never
floods the server. Each frame changes every pixel of the region, and the
content suits JPEG, so the encoder's quality level matters on the wire.

    python bench/_stream_draw.py DISPLAY_NUMBER FPS
"""

from __future__ import annotations

import socket
import struct
import sys
import time

from PIL import Image, ImageChops, ImageFilter

WIDTH, HEIGHT, STRIP = 640, 360, 90  # a strip stays under the 256 KiB core request limit


def picture() -> Image.Image:
    """Smooth colour fields with fine noise: many colours, as in a photo or video."""
    size = (WIDTH * 2, HEIGHT)
    red = Image.radial_gradient("L").resize(size)
    green = Image.linear_gradient("L").rotate(90).resize(size)
    blue = Image.effect_mandelbrot(size, (-2.0, -1.2, 1.0, 1.2), 64)
    noise = Image.effect_noise(size, 40).filter(ImageFilter.GaussianBlur(1))
    return Image.merge("RGB", (ImageChops.add(red, noise, 1, -64), green, blue))


class X11:
    """Just enough of the X core protocol to draw images on the root window."""

    def __init__(self, display: int | str) -> None:
        """Connect to display number ``display``, or to the X socket at that path."""
        path = display if isinstance(display, str) else f"/tmp/.X11-unix/X{display}"  # noqa: S108
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.sendall(struct.pack("<BxHHHHxx", 0x6C, 11, 0, 0, 0))  # little endian, no auth
        status, _major, _minor, words = struct.unpack("<BxHHH", self._read(8))
        data = self._read(words * 4)
        if status != 1:
            raise RuntimeError(f"X server refused: {data[: data[0] + 1]!r}")
        self.base = struct.unpack_from("<I", data, 4)[0]
        vendor, formats = struct.unpack_from("<H", data, 16)[0], data[21]
        screen = 32 + (vendor + 3) // 4 * 4 + 8 * formats
        self.root = struct.unpack_from("<I", data, screen)[0]
        self.depth = data[screen + 38]
        self.gc = self.base + 1
        self.target = self.root  # where put() draws
        self.sock.sendall(struct.pack("<BxHIII", 55, 4, self.gc, self.root, 0))  # CreateGC

    def _read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise RuntimeError("X server closed the connection")
            out += chunk
        return bytes(out)

    def put(self, bgrx: bytes, width: int, height: int, x: int, y: int) -> None:
        """PutImage, ZPixmap, 32 bits a pixel (depth 24)."""
        words = 6 + len(bgrx) // 4
        head = struct.pack(
            "<BBHIIHHhhBBxx", 72, 2, words, self.target, self.gc, width, height, x, y, 0, self.depth
        )
        self.sock.sendall(head + bgrx)

    def sync(self) -> None:
        """GetInputFocus and wait for its reply; skip errors and events (32 bytes each)."""
        self.sock.sendall(struct.pack("<BxH", 43, 1))
        while self._read(32)[0] != 1:
            pass


def main(display: int, fps: float) -> None:
    x11 = X11(display)
    image = picture()
    period, frame = 1.0 / fps, 0
    next_at = time.monotonic()
    while True:
        dx = frame * 8 % WIDTH
        for y in range(0, HEIGHT, STRIP):
            data = image.crop((dx, y, dx + WIDTH, y + STRIP)).tobytes("raw", "BGRX")
            x11.put(data, WIDTH, STRIP, 0, y)
        x11.sync()
        frame += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
