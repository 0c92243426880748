"""Native viewers in tests: an X display of our own for them, its pixels, and an
RFB frame read through a local port (``genos connect``)."""

from __future__ import annotations

import socket
import struct
import subprocess

from PIL import Image

XWD_HEADER = struct.Struct(">25I")  # XWDFileHeader: 25 CARD32 fields


def grab(display: int) -> Image.Image:
    """The whole screen of X display ``display`` (xwd, 32-bit ZPixmap), as RGB."""
    raw = subprocess.run(
        ["xwd", "-root", "-silent", "-display", f":{display}"],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    fields = XWD_HEADER.unpack_from(raw)
    header_size, width, height = fields[0], fields[4], fields[5]
    bits_per_pixel, bytes_per_line, ncolors = fields[11], fields[12], fields[19]
    assert bits_per_pixel == 32, bits_per_pixel
    start = header_size + ncolors * 12  # each XWDColor is 12 bytes
    data = raw[start : start + bytes_per_line * height]
    return Image.frombytes("RGB", (width, height), data, "raw", "BGRX", bytes_per_line)


def _read(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(min(n - len(out), 1 << 20))
        if not chunk:
            raise ConnectionError("the display closed")
        out += chunk
    return out


def rfb_frame(port: int) -> Image.Image:
    """One full frame over RFB 3.8 (security None, Raw, 32-bit BGRX) from a local port."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        assert _read(sock, 12) == b"RFB 003.008\n"
        sock.sendall(b"RFB 003.008\n")
        types = _read(sock, _read(sock, 1)[0])
        assert 1 in types, types
        sock.sendall(b"\x01")
        assert _read(sock, 4) == b"\x00\x00\x00\x00"
        sock.sendall(b"\x01")  # shared
        width, height = struct.unpack("!HH", _read(sock, 4))
        _read(sock, 16)
        _read(sock, struct.unpack("!I", _read(sock, 4))[0])
        # 32 bpp, depth 24, little endian, true colour, red at 16, green at 8, blue at 0.
        pixel_format = struct.pack("!BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        sock.sendall(b"\x00\x00\x00\x00" + pixel_format)
        sock.sendall(struct.pack("!BBHi", 2, 0, 1, 0))  # SetEncodings: Raw only
        sock.sendall(struct.pack("!BBHHHH", 3, 0, 0, 0, width, height))
        image = Image.new("RGB", (width, height))
        covered = 0
        while covered < width * height:
            kind = _read(sock, 1)[0]
            if kind != 0:  # only updates are asked for; anything else is a bell/colours
                continue
            _read(sock, 1)
            (count,) = struct.unpack("!H", _read(sock, 2))
            for _ in range(count):
                x, y, w, h, encoding = struct.unpack("!HHHHi", _read(sock, 12))
                assert encoding == 0, encoding
                pixels = _read(sock, w * h * 4)
                image.paste(Image.frombytes("RGB", (w, h), pixels, "raw", "BGRX"), (x, y))
                covered += w * h
    return image


def agreement(one: Image.Image, other: Image.Image, step: int = 8) -> float:
    """The share of pixels on a ``step`` grid that are (nearly) the same in both images."""
    assert one.size == other.size, (one.size, other.size)
    a, b = one.load(), other.load()
    assert a is not None
    assert b is not None
    same = total = 0
    for y in range(0, one.height, step):
        for x in range(0, one.width, step):
            total += 1
            pa, pb = a[x, y], b[x, y]
            assert isinstance(pa, tuple)
            assert isinstance(pb, tuple)
            same += all(abs(p - q) <= 8 for p, q in zip(pa, pb, strict=True))
    return same / total


def placed_agreement(seen: Image.Image, expected: Image.Image, max_offset: int = 64) -> float:
    """:func:`agreement` of ``expected`` with the same-sized part of ``seen`` that starts
    0..``max_offset`` rows down (a viewer may put a tool bar above the picture); the
    rows below the screen's edge count as different."""
    best = 0.0
    for top in range(max_offset + 1):
        window = Image.new("RGB", expected.size, (255, 0, 255))
        window.paste(seen.crop((0, top, expected.width, top + expected.height)), (0, 0))
        best = max(best, agreement(window, expected, step=16))
        if best >= 0.99:
            break
    return best
