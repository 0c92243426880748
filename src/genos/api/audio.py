"""``WS /v1/environments/{id}/audio?token=...``: the environment's sound, Opus in Ogg;
``WS /v1/environments/{id}/microphone?token=...``: a viewer's microphone in.

The display token admits sound (control or view: sound carries no input). The
environment encodes (``genos-audio`` on ``audio.sock``, one encoder per
viewer); the gateway checks the Ogg framing page by page
(:mod:`genos.gateway.ogg`) and sends each page as one binary message. What
the viewer sends is read and dropped; the channel ends when either side does.

The microphone needs a control token and a spec with ``security.microphone``.
The viewer sends 16 kHz mono signed 16-bit little-endian PCM in binary
messages (no codec: nothing inside the environment parses more than samples;
256 kbit/s). The gateway bounds each message (16 KiB, whole samples) and the
rate (a token bucket at 1.25 times real time, two seconds of burst); past
either the channel closes with the reason. ``genos-mic`` plays it into the
environment's default source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fastapi import APIRouter, WebSocket

from genos.api.display import _admit, _open_or_close
from genos.errors import GenOSError
from genos.gateway.ogg import read_page
from genos.gateway.streams import AsyncioStream

log = logging.getLogger("genos.api.audio")
router = APIRouter()
MIC_RATE = 16000 * 2  # bytes a second of 16 kHz mono s16le
MIC_MESSAGE = 16 << 10  # the largest message: half a second
MIC_BURST = 2 * MIC_RATE  # how far ahead of real time a viewer may send


class Bucket:
    """A token bucket: ``rate`` bytes a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.level, self.at = burst, clock()

    def take(self, n: int) -> bool:
        """Spend ``n`` bytes; False (nothing spent) if there are not that many."""
        now = self.clock()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        if n > self.level:
            return False
        self.level -= n
        return True


@router.websocket("/v1/environments/{env_id}/audio")
async def audio(websocket: WebSocket, env_id: str, token: str = "") -> None:
    """Carry the environment's sound to a viewer, page by page."""
    admitted = await _admit(websocket, env_id, token, "audio")
    if admitted is None:
        return
    _svc, _grant, target = admitted
    opened = await _open_or_close(websocket, target, "sound server")
    if opened is None:
        return
    reader, writer = opened
    stream = AsyncioStream(reader, writer)

    async def inward() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def outward() -> None:
        while True:
            await websocket.send_bytes(await read_page(stream))

    tasks = [asyncio.create_task(inward()), asyncio.create_task(outward())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if isinstance(task.exception(), GenOSError):
                log.info("%s: sound channel closed: %s", env_id, task.exception())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stream.close()
        with contextlib.suppress(Exception):
            await websocket.close()


@router.websocket("/v1/environments/{env_id}/microphone")
async def microphone(websocket: WebSocket, env_id: str, token: str = "") -> None:
    """Carry a viewer's microphone (16 kHz mono PCM) into the environment, bounded. The
    environment's input is opened with the first good message."""
    admitted = await _admit(websocket, env_id, token, "mic")
    if admitted is None:
        return
    _svc, _grant, target = admitted
    bucket = Bucket(MIC_RATE * 1.25, MIC_BURST, asyncio.get_running_loop().time)
    writer: asyncio.StreamWriter | None = None
    code, why = 1000, ""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                code, why = 1003, "16 kHz mono s16le PCM in binary messages only"
                return
            if len(data) > MIC_MESSAGE or len(data) % 2:
                code, why = 1009, f"a message is whole samples, at most {MIC_MESSAGE} bytes"
                return
            if not bucket.take(len(data)):
                code, why = 1008, "faster than 16 kHz mono"
                return
            if writer is None:
                opened = await _open_or_close(websocket, target, "microphone input")
                if opened is None:
                    return
                writer = opened[1]
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError):
        code, why = 1011, "the environment's microphone input closed"
    finally:
        if writer is not None:
            writer.close()
        if why:
            log.info("%s: microphone closed: %s", env_id, why)
            with contextlib.suppress(Exception):
                await websocket.close(code=code, reason=why)
