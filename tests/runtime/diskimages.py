"""Real disk images made inside the tests, and `genos images` run as a user runs it."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

from genos.testing import RFB_BANNER

# GRUB paints the whole text screen in its normal colour when it clears it:
# a screen mostly of VGA blue (0, 0, 168) shows the image itself booted, not
# SeaBIOS (grey on black) or a blank display.
GRUB_CFG = """\
set timeout=-1
set color_normal=white/blue
clear
echo "GenOS user image test"
sleep 100000
"""
VGA_BLUE = (0, 0, 168)


def genos_cli(data_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``genos ARGS`` in a subprocess, with ``GENOS_DATA_DIR`` set to ``data_root``."""
    env = {**os.environ, "GENOS_DATA_DIR": str(data_root)}
    return subprocess.run(
        [sys.executable, "-m", "genos", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def grub_iso(work: Path) -> Path:
    """A BIOS-bootable ISO (``grub-mkrescue``) whose GRUB paints the screen blue and waits."""
    tree = work / "iso-tree"
    (tree / "boot" / "grub").mkdir(parents=True)
    (tree / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
    target = work / "grub.iso"
    subprocess.run(
        ["grub-mkrescue", "-o", str(target), str(tree),
         "--install-modules=normal echo sleep", "--locales=", "--fonts=", "--themes=",
         "--", "-volid", "GENOS_TEST"],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    return target


def to_qcow2(source: Path, target: Path, *options: str) -> Path:
    """``qemu-img convert`` of a raw file (an ISO is one) to qcow2, formats explicit."""
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", *options, str(source), str(target)],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    return target


async def frame(path: Path, timeout: float = 10.0) -> tuple[int, int, bytes]:
    """One whole frame of the display socket ``path``: width, height and BGRX pixels.

    RFB 3.8 (RFC 6143): security None, a shared ClientInit, 32-bit true colour,
    Raw encoding only, one full FramebufferUpdateRequest.
    """
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        return await asyncio.wait_for(_frame(reader, writer), timeout)
    finally:
        writer.close()
        await writer.wait_closed()


async def _frame(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[int, int, bytes]:
    assert await reader.readexactly(12) == RFB_BANNER
    writer.write(RFB_BANNER)
    types = await reader.readexactly((await reader.readexactly(1))[0])
    assert 1 in types, f"security types {list(types)} lack None"
    writer.write(b"\x01")
    assert await reader.readexactly(4) == b"\0\0\0\0"
    writer.write(b"\x01")  # shared
    width, height = struct.unpack("!HH", await reader.readexactly(4))
    await reader.readexactly(16)
    (name_len,) = struct.unpack("!I", await reader.readexactly(4))
    await reader.readexactly(name_len)
    # SetPixelFormat: 32 bpp, depth 24, little-endian, true colour, 8 bits each, BGRX.
    writer.write(struct.pack("!B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
    writer.write(struct.pack("!BxHi", 2, 1, 0))  # SetEncodings: Raw
    writer.write(struct.pack("!BBHHHH", 3, 0, 0, 0, width, height))
    await writer.drain()
    pixels = bytearray(width * height * 4)
    kind, _, rects = struct.unpack("!BBH", await reader.readexactly(4))
    assert kind == 0, f"server message {kind}, not a FramebufferUpdate"
    for _ in range(rects):
        x, y, w, h, encoding = struct.unpack("!HHHHi", await reader.readexactly(12))
        assert encoding == 0, f"encoding {encoding}, not Raw"
        data = await reader.readexactly(w * h * 4)
        for row in range(h):
            start = ((y + row) * width + x) * 4
            pixels[start : start + w * 4] = data[row * w * 4 : (row + 1) * w * 4]
    return width, height, bytes(pixels)


def share_of(pixels: bytes, rgb: tuple[int, int, int]) -> float:
    """The share of BGRX ``pixels`` that are the colour ``rgb``."""
    red, green, blue = rgb
    wanted = bytes((blue, green, red))
    count = sum(1 for i in range(0, len(pixels), 4) if pixels[i : i + 3] == wanted)
    return count / (len(pixels) // 4)


async def wait_for_colour(path: Path, rgb: tuple[int, int, int], timeout: float = 90.0) -> float:
    """Poll frames of the display until most of it is ``rgb``; that share.

    Raises:
        AssertionError: not by the deadline (with the last share seen).
    """
    deadline = time.monotonic() + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        _, _, pixels = await frame(path)
        seen = share_of(pixels, rgb)
        if seen > 0.5:
            return seen
        await asyncio.sleep(0.25)
    raise AssertionError(f"the display never showed the image's picture (share {seen:.2f})")
