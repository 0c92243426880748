"""``genos connect``: a loopback port for a native viewer (VNC; SPICE for VMs; RDP), over WebSocket.

Each viewer connection on the local port gets a fresh short-lived display
token from the API and its own WebSocket to
``/v1/environments/{id}/display`` (``/spice``, ``/rdp``); bytes flow both
ways unchanged (the server's gateway speaks RFB with the viewer and checks
everything; SPICE and RDP it carries as they are). The port listens on
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from genos.client import Client
from genos.errors import ExternalError, InputError

log = logging.getLogger("genos.connect")
CHUNK = 65536


def ws_url(http_url: str, path: str) -> str:
    """The WebSocket URL of ``path`` on the server at ``http_url``."""
    if http_url.startswith("https://"):
        return "wss://" + http_url.removeprefix("https://") + path
    return "ws://" + http_url.removeprefix("http://") + path


async def _pump_in(reader: asyncio.StreamReader, ws: ClientConnection) -> None:
    while data := await reader.read(CHUNK):
        await ws.send(data)
    await ws.close()


async def _pump_out(ws: ClientConnection, writer: asyncio.StreamWriter) -> None:
    async for message in ws:
        if isinstance(message, str):
            break
        writer.write(message)
        await writer.drain()


async def _bridge(  # noqa: PLR0917 - one viewer connection and what it is for
    client: Client, env_id: str, permission: str, protocol: str,
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
) -> None:  # fmt: skip
    try:
        grant = await asyncio.to_thread(
            client.call, "POST", f"/v1/environments/{env_id}/display-token",
            {"permission": permission, "ttl": 60},
        )  # fmt: skip
        path = grant["websocket"]
        if protocol != "vnc":  # the same token opens the protocol's own route
            path = path.replace("/display?", f"/{protocol}?", 1)
        url = ws_url(client.url, path)
        tls = client.tls if url.startswith("wss://") else None
        async with connect(url, subprotocols=["binary"],  # type: ignore[list-item]
                           max_size=None, compression=None, ssl=tls) as ws:  # fmt: skip
            tasks = [
                asyncio.create_task(_pump_in(reader, ws)),
                asyncio.create_task(_pump_out(ws, writer)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    except (ConnectionClosed, InvalidStatus, InvalidURI, OSError) as exc:
        log.warning("viewer connection ended: %s", exc)
    except Exception as exc:  # noqa: BLE001 - one viewer's failure must not stop the port
        log.warning("viewer connection failed: %s", exc)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def serve(
    client: Client, env_id: str, *, port: int = 0, permission: str = "control",
    protocol: str = "vnc", ready: Callable[[int], None] | None = None,
) -> None:  # fmt: skip
    """Listen on 127.0.0.1:``port`` until cancelled; ``ready`` gets the bound port.

    Raises:
        InputError: the port cannot be bound.
        RemoteError: the environment is not there or not the caller's.
    """
    env = await asyncio.to_thread(client.call, "GET", f"/v1/environments/{env_id}")
    if env["state"] != "running":
        raise ExternalError(f"{env_id} is {env['state']}, not running")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _bridge(client, env_id, permission, protocol, reader, writer)

    try:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
    except OSError as exc:
        raise InputError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from exc
    async with server:
        bound = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready(bound)
        await server.serve_forever()


def announce(as_json: bool, env_id: str, protocol: str = "vnc") -> Callable[[int], None]:
    """What ``genos connect`` prints once the port is bound."""

    def ready(port: int) -> None:
        if as_json:
            print(json.dumps({"port": port, "protocol": protocol}), flush=True)
        elif protocol == "spice":
            print(f"{env_id}: run remote-viewer spice://127.0.0.1:{port} (Ctrl-C ends)", flush=True)
        elif protocol == "rdp":
            # xrdp takes any user and password (the token authenticated this
            # connection); without them it asks which session first.
            print(f"{env_id}: run xfreerdp /v:127.0.0.1:{port} /u:user /p:genos (Ctrl-C ends)",
                  flush=True)  # fmt: skip
        else:
            print(f"{env_id}: point a VNC viewer at 127.0.0.1:{port} (Ctrl-C ends)", flush=True)

    return ready
