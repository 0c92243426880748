"""RFB (RFC 6143) vocabulary: message types, encodings, pixel formats, limits.

Only what the gateway lets through is named here. Everything else a peer
sends is unknown and closes that peer's connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from genos.errors import ProtocolError

VERSION_3_8 = b"RFB 003.008\n"
SECURITY_NONE = 1  # RFC 6143 7.2.1


class ClientMsg(IntEnum):
    """Client-to-server message types (RFC 6143 7.5) the gateway understands."""

    SET_PIXEL_FORMAT = 0
    SET_ENCODINGS = 2
    FRAMEBUFFER_UPDATE_REQUEST = 3
    KEY_EVENT = 4
    POINTER_EVENT = 5
    CLIENT_CUT_TEXT = 6
    SET_DESKTOP_SIZE = 251  # ExtendedDesktopSize extension (rfbproto 7.5.9)


class ServerMsg(IntEnum):
    """Server-to-client message types (RFC 6143 7.6) the gateway understands."""

    FRAMEBUFFER_UPDATE = 0
    SET_COLOUR_MAP_ENTRIES = 1
    BELL = 2
    SERVER_CUT_TEXT = 3


class Encoding(IntEnum):
    """Encodings and pseudo-encodings whose rectangles the gateway can delimit."""

    RAW = 0
    COPY_RECT = 1
    TIGHT = 7
    ZRLE = 16
    CURSOR = -239
    DESKTOP_SIZE = -223
    LAST_RECT = -224
    EXTENDED_DESKTOP_SIZE = -308


QUALITY_LEVELS = range(-32, -22)  # -32 is level 0 ... -23 is level 9
COMPRESS_LEVELS = range(-256, -246)  # -256 is level 0 ... -247 is level 9

# What a client may ask the environment to send, in the gateway's order of
# preference for the ones it adds itself. Anything else (Hextile, RRE, Fence,
# ContinuousUpdates, extended clipboard, QEMU keys, ...) is stripped.
FRAME_ENCODINGS = frozenset({Encoding.RAW, Encoding.COPY_RECT, Encoding.TIGHT, Encoding.ZRLE})
PSEUDO_ENCODINGS = frozenset(
    {
        Encoding.CURSOR,
        Encoding.DESKTOP_SIZE,
        Encoding.LAST_RECT,
        Encoding.EXTENDED_DESKTOP_SIZE,
    }
)


@dataclass(frozen=True)
class Limits:
    """Bounds on what either peer may send; past one, that connection closes."""

    max_dimension: int = 8192
    max_name: int = 1024
    max_encodings: int = 64
    max_cut_text: int = 1 << 20
    max_cursor: int = 512
    max_screens: int = 16
    max_reason: int = 1024
    chunk: int = 64 << 10


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class PixelFormat:
    """RFC 6143 7.4: how one pixel is laid out on the wire."""

    bits_per_pixel: int
    depth: int
    big_endian: bool
    true_colour: bool
    red_max: int
    green_max: int
    blue_max: int
    red_shift: int
    green_shift: int
    blue_shift: int

    _STRUCT = struct.Struct("!BBBBHHHBBB3x")

    @classmethod
    def parse(cls, data: bytes, side: str) -> PixelFormat:
        """Decode and check a 16-byte PIXEL_FORMAT.

        Args:
            data: the 16 bytes.
            side: who sent it, for the error.

        Returns:
            The pixel format.

        Raises:
            ProtocolError: a layout the gateway will not relay.
        """
        bpp, depth, big, true, rmax, gmax, bmax, rs, gs, bs = cls._STRUCT.unpack(data)
        if bpp not in (8, 16, 32):
            raise ProtocolError(side, f"bits-per-pixel {bpp} is not 8, 16 or 32")
        if not 1 <= depth <= bpp:
            raise ProtocolError(side, f"depth {depth} does not fit {bpp} bits")
        if big > 1 or true > 1:
            raise ProtocolError(side, "pixel format flags are not 0 or 1")
        if true and max(rs, gs, bs) >= bpp:
            raise ProtocolError(side, "colour shift outside the pixel")
        return cls(bpp, depth, bool(big), bool(true), rmax, gmax, bmax, rs, gs, bs)

    def pack(self) -> bytes:
        """The canonical 16-byte encoding (padding zeroed)."""
        return self._STRUCT.pack(
            self.bits_per_pixel,
            self.depth,
            int(self.big_endian),
            int(self.true_colour),
            self.red_max,
            self.green_max,
            self.blue_max,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
        )

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes one pixel takes in Raw and Cursor data."""
        return self.bits_per_pixel // 8

    @property
    def tight_pixel(self) -> int:
        """Bytes of a Tight TPIXEL: 3 for 32-bit depth-24 true colour, else the pixel size."""
        compact = (
            self.true_colour
            and self.bits_per_pixel == 32
            and self.depth == 24
            and (self.red_max, self.green_max, self.blue_max) == (255, 255, 255)
        )
        return 3 if compact else self.bytes_per_pixel


@dataclass
class Framebuffer:
    """The environment's framebuffer size as the gateway last saw it."""

    width: int
    height: int
    largest_width: int = 0
    largest_height: int = 0

    def __post_init__(self) -> None:
        self.resize(self.width, self.height)

    def resize(self, width: int, height: int) -> None:
        """Record a new size (DesktopSize); requests are checked against the largest seen."""
        self.width, self.height = width, height
        self.largest_width = max(self.largest_width, width)
        self.largest_height = max(self.largest_height, height)

    def contains(self, x: int, y: int, w: int, h: int) -> bool:
        """Whether the rectangle lies inside the current framebuffer."""
        return x + w <= self.width and y + h <= self.height


def quality_encoding(level: int) -> int:
    """The QualityLevel pseudo-encoding for JPEG quality ``level`` (0..9)."""
    return -32 + level


def compress_encoding(level: int) -> int:
    """The CompressLevel pseudo-encoding for compression ``level`` (0..9)."""
    return -256 + level


def check_dimension(side: str, what: str, value: int, limits: Limits) -> None:
    """Refuse a width or height above the gateway's bound.

    Args:
        side: who sent it.
        what: its name, for the error.
        value: the value.
        limits: the bounds.

    Raises:
        ProtocolError: past ``limits.max_dimension``.
    """
    if value > limits.max_dimension:
        raise ProtocolError(side, f"{what} {value} is larger than {limits.max_dimension}")
