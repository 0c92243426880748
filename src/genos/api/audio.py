"""``WS /v1/environments/{id}/audio?token=...``: the environment's sound, Opus in Ogg.

The display token admits it (control or view: sound carries no input). The
environment encodes (``genos-audio`` on ``audio.sock``, one encoder per
viewer); the gateway checks the Ogg framing page by page
(:mod:`genos.gateway.ogg`) and sends each page as one binary message. What
the viewer sends is read and dropped; the channel ends when either side does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket

from genos.api.display import _admit, _open_or_close
from genos.errors import GenOSError
from genos.gateway.ogg import read_page
from genos.gateway.streams import AsyncioStream

log = logging.getLogger("genos.api.audio")
router = APIRouter()


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
