"""The gateway of ``bench/video.py``: a Starlette app on uvicorn (as ``genos.api.serve`` runs
it) whose routes do what the API's do, without accounts or tokens:

* ``/ws``: the display, ``proxy(websocket_stream(ws), rfb.sock, control grant)`` with the
  adaptive controller on (today's RFB path);
* ``/video[?fps=F&kbps=K]``: video mode, the API's :class:`genos.api.video.VideoChannel` on
  the environment's ``video.sock``, adaptive unless both levels are given.

    python bench/_video_host.py HOST PORT RFB_SOCKET VIDEO_SOCKET
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from genos.api.video import VideoChannel, _fixed
from genos.gateway import Grant, Permission, ProxyOptions, proxy, websocket_stream
from genos.gateway.video import VideoController


def serve(host: str, port: int, rfb: Path, video: Path) -> None:
    async def display(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="binary")
        grant = Grant("bench", "bench", Permission.CONTROL)
        await proxy(websocket_stream(websocket), rfb, grant, ProxyOptions())

    async def frames(websocket: WebSocket) -> None:
        query = websocket.query_params
        fixed = _fixed(query.get("fps"), query.get("kbps"))
        await websocket.accept(subprotocol="binary")
        await VideoChannel(websocket, video, VideoController(fixed=fixed)).run()

    app = Starlette(routes=[WebSocketRoute("/ws", display), WebSocketRoute("/video", frames)])
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", ws="websockets-sansio", lifespan="off"
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
