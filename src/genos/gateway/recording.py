"""Recording what the gateway sends to a viewer, with timestamps.

File format (``.rfbrec``), all integers big-endian::

    header   8 bytes   b"GENOSREC"
             2 bytes   format version, 1
             2 bytes   reserved, 0
    frame*   8 bytes   monotonic clock, nanoseconds (u64)
             4 bytes   length n of the data (u32)
             n bytes   bytes sent to the viewer, from the first RFB version
                       string on (so a player can replay the whole session)

A file is written under ``<root>/<env_id>/<UTC time>-<connection id>.rfbrec``.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GENOSREC"
VERSION = 1
_HEADER = struct.Struct("!8sHH")
_FRAME = struct.Struct("!QI")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class Recorder:
    """Appends timestamped frames to one recording file.

    Args:
        path: the file to create.
        clock: nanosecond monotonic clock.
    """

    def __init__(self, path: Path, clock: Callable[[], int] = time.monotonic_ns) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._clock = clock
        self._out: BinaryIO | None = path.open("xb")
        self._out.write(_HEADER.pack(MAGIC, VERSION, 0))

    @classmethod
    def for_connection(cls, root: Path, env_id: str, connection_id: str) -> Recorder:
        """A recorder for one connection in the environment's directory.

        Args:
            root: where recordings live.
            env_id: the environment (its directory).
            connection_id: the connection (part of the file name).

        Returns:
            The recorder, file created.
        """
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{_SAFE.sub('_', connection_id)}.rfbrec"
        return cls(root / _SAFE.sub("_", env_id) / name)

    def write(self, data: bytes) -> None:
        """Append one frame with the current time.

        Args:
            data: bytes sent to the viewer.
        """
        if self._out is not None and data:
            self._out.write(_FRAME.pack(self._clock(), len(data)) + data)

    def close(self) -> None:
        """Flush and close the file."""
        if self._out is not None:
            self._out.close()
            self._out = None


def read_recording(path: Path) -> Iterator[tuple[int, bytes]]:
    """Frames of a recording, as ``(monotonic ns, data)``.

    Args:
        path: the ``.rfbrec`` file.

    Yields:
        Each frame in order.

    Raises:
        ValueError: not a recording, or cut short.
    """
    with path.open("rb") as src:
        magic, version, _ = _HEADER.unpack(src.read(_HEADER.size))
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"{path} is not a GenOS recording")
        while head := src.read(_FRAME.size):
            if len(head) < _FRAME.size:
                raise ValueError(f"{path} ends inside a frame header")
            stamp, length = _FRAME.unpack(head)
            data = src.read(length)
            if len(data) < length:
                raise ValueError(f"{path} ends inside a frame")
            yield stamp, data
