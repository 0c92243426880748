"""The sound channel's framing check: whole Ogg pages pass, anything else closes it."""

from __future__ import annotations

import struct

import pytest

from genos.errors import ProtocolError, StreamClosedError
from genos.gateway.ogg import read_page
from genos.gateway.streams import memory_pair
from tests.gateway.helpers import run


def page(*packets: bytes, version: int = 0, capture: bytes = b"OggS") -> bytes:
    """An Ogg page holding ``packets`` (lacing per RFC 3533 section 6)."""
    table = b""
    for packet in packets:
        table += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    head = struct.pack("<4sBBqIIIB", capture, version, 0, 0, 1, 0, 0, len(table))
    return head + table + b"".join(packets)


async def pages_from(data: bytes, count: int) -> list[bytes]:
    """Feed ``data`` through a memory stream and read ``count`` pages."""
    ours, theirs = memory_pair()
    await theirs.write(data)
    await theirs.close()
    return [await read_page(ours) for _ in range(count)]


def test_whole_pages_pass_one_by_one() -> None:
    """Pages of any lacing come out exactly as they went in, one per read."""
    first, second = page(b"OpusHead" + b"\x01" * 11), page(b"x" * 600, b"y" * 3)
    assert run(pages_from(first + second, 2)) == [first, second]


@pytest.mark.parametrize(
    "data",
    [page(b"x", capture=b"RIFF"), page(b"x", version=1), b"GET / HTTP/1.1\r\n" + b"\0" * 40],
)
def test_anything_but_ogg_closes_the_channel(data: bytes) -> None:
    """Another container, another Ogg version, or garbage is a ProtocolError."""
    with pytest.raises(ProtocolError, match="not an Ogg stream"):
        run(pages_from(data, 1))


def test_a_truncated_page_is_the_end_of_the_stream() -> None:
    """A page cut short raises StreamClosedError, never a partial page."""
    with pytest.raises(StreamClosedError):
        run(pages_from(page(b"z" * 300)[:-10], 1))
