"""The paths to a desktop: ``WS /v1/environments/{id}/display?token=...`` carrying RFB,
``WS .../spice?token=...`` carrying SPICE for VMs that serve it, and
``WS .../rdp?token=...`` carrying RDP for environments whose spec asks for it.

The token (from ``POST .../display-token``) is checked before the socket is
accepted; the display socket is looked up from the registry's environment
and the driver, never from anything the client sends. A refused token closes
the handshake with an HTTP 403 and nothing reaches the environment.

RFB is parsed and policed message by message (see ``genos.gateway``). When
the environment is on a node and its display goes away while it still runs
(a drain live-migrated it), the gateway dials its display again on whichever
node holds it now and the viewer keeps its connection; the grant it was
admitted with still applies. SPICE
is carried as it is: the gateway checks the token and the environment, but
does not parse SPICE's channels, so a SPICE session needs a ``control``
token (input cannot be filtered out of it) and its clipboard follows the VM's
agent, which QEMU gets only when the spec allows a clipboard at all. RDP is
carried the same way (it is TLS from the viewer to the environment's xrdp);
xrdp there carries no channel at all, so no clipboard, drive or sound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter, WebSocket

from genos.api.service import Service
from genos.errors import GenOSError, NotFoundError, TokenError
from genos.gateway.policy import Grant
from genos.gateway.recording import read_recording
from genos.gateway.server import grant_for_token
from genos.gateway.session import ProxyOptions, proxy
from genos.gateway.streams import websocket_stream
from genos.ids import is_env_id
from genos.orchestrator.states import State
from genos.runtime.driver import DisplayTarget, RemoteDisplay, endpoint
from genos.spec import EnvironmentSpec, Protocol

log = logging.getLogger("genos.api.display")
router = APIRouter()
SUBPROTOCOL = "binary"
SERVER_WAIT = 5.0  # seconds a just-started protocol server may take to listen


async def _authorise(svc: Service, env_id: str, token: str) -> Grant:
    async def security(target: str) -> EnvironmentSpec:
        return (await svc.engine.get(target)).spec

    return await grant_for_token(svc.gateway, token, env_id, security)


async def _admit(
    websocket: WebSocket, env_id: str, token: str, protocol: str
) -> tuple[Service, Grant, DisplayTarget] | None:
    """Check the token and the environment, then accept; None (and closed) when refused."""
    svc: Service = websocket.app.state.service
    client = websocket.client.host if websocket.client else "unknown"
    try:
        if not is_env_id(env_id) or len(token) > 2048:
            raise TokenError("malformed", "bad environment id or token")
        grant = await _authorise(svc, env_id, token)
        if protocol not in ("vnc", "audio", "video") and str(grant.permission) != "control":
            raise TokenError("view_only", f"{protocol} carries input: it needs a control token")
        env = await svc.engine.get(env_id)
        if env.state is not State.RUNNING:
            raise TokenError("not_running", f"the environment is {env.state.value}")
        if protocol == "mic" and not env.spec.security.microphone:
            raise TokenError("not_allowed", "its spec does not allow a microphone "
                             "(security.microphone)")  # fmt: skip
        if protocol == "rdp" and env.spec.display.protocol is not Protocol.RDP:
            raise NotFoundError("rdp display (its spec does not ask for rdp) of", env_id)
        target = endpoint(svc.engine.driver, env_id, protocol)
    except GenOSError as exc:
        svc.audit_log.append(
            action=protocol, env_id=env_id[:40], client=client, outcome=str(exc)[:200]
        )
        await websocket.close(code=1008, reason=str(exc)[:120])
        return None
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    svc.audit_log.append(
        action=protocol, env_id=env_id, user_id=grant.user_id,
        permission=str(grant.permission), client=client, outcome="connected",
    )  # fmt: skip
    with contextlib.suppress(GenOSError):
        await svc.engine.activity(env_id)
    return svc, grant, target


@router.websocket("/v1/environments/{env_id}/display")
async def display(websocket: WebSocket, env_id: str, token: str = "") -> None:
    """Proxy a viewer (noVNC) to the environment's display, within the token's grant."""
    admitted = await _admit(websocket, env_id, token, "vnc")
    if admitted is None:
        return
    svc, grant, target = admitted
    try:
        viewer = (await svc.accounts.get_user(grant.user_id)).name
    except GenOSError:
        viewer = grant.user_id
    follow = _follower(svc, env_id) if isinstance(target, RemoteDisplay) else None
    options = ProxyOptions(recordings=svc.root / "recordings", viewer=viewer, follow=follow)
    closed = await proxy(websocket_stream(websocket), target, grant, options)
    log.info("%s: viewer left (%s: %s)", env_id, closed.side, closed.reason)
    with contextlib.suppress(GenOSError):
        await svc.engine.activity(env_id)


def _follower(svc: Service, env_id: str) -> Callable[[], Awaitable[DisplayTarget | None]]:
    """Where ``env_id``'s display is now, while it runs (None once it does not)."""

    async def follow() -> DisplayTarget | None:
        try:
            if (await svc.engine.get(env_id)).state is not State.RUNNING:
                return None
            return endpoint(svc.engine.driver, env_id, "vnc")
        except GenOSError:
            return None

    return follow


@router.websocket("/v1/environments/{env_id}/spice")
async def spice(websocket: WebSocket, env_id: str, token: str = "") -> None:
    """Carry SPICE between a viewer (``genos connect --spice``) and a VM's SPICE server."""
    await _carry(websocket, env_id, token, "spice")


@router.websocket("/v1/environments/{env_id}/rdp")
async def rdp(websocket: WebSocket, env_id: str, token: str = "") -> None:
    """Carry RDP between a viewer (``genos connect --rdp``) and the environment's xrdp."""
    await _carry(websocket, env_id, token, "rdp")


async def _carry(websocket: WebSocket, env_id: str, token: str, protocol: str) -> None:
    """Admit, then pipe bytes unchanged to the protocol's server in the environment."""
    admitted = await _admit(websocket, env_id, token, protocol)
    if admitted is None:
        return
    _svc, _grant, target = admitted
    opened = await _open_or_close(websocket, target, f"{protocol.upper()} server")
    if opened is not None:
        await _pipe(websocket, *opened)


async def _open_or_close(
    websocket: WebSocket, target: DisplayTarget, what: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """:func:`_open_server`, or close the viewer's socket (1011) saying ``what`` is missing."""
    try:
        return await _open_server(target)
    except OSError as exc:
        reason = f"the {what} is not there: {exc.strerror or exc}"
        await websocket.close(code=1011, reason=reason[:120])
        return None


async def _open_server(
    target: DisplayTarget, wait: float = SERVER_WAIT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``target``; a server that is still starting (xrdp comes up just
    after the display does) gets ``wait`` seconds to appear."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            opened: tuple[asyncio.StreamReader, asyncio.StreamWriter] = (
                await asyncio.open_unix_connection(str(target))
                if isinstance(target, Path)
                else await target.open()
            )
        except (FileNotFoundError, ConnectionRefusedError):
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            return opened


async def _pipe(
    websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Bytes both ways until either side ends; both are closed after."""

    async def inward() -> None:
        while True:
            message = await websocket.receive()
            data = message.get("bytes")
            if message["type"] == "websocket.disconnect" or not isinstance(data, bytes):
                return
            writer.write(data)
            await writer.drain()

    async def outward() -> None:
        while data := await reader.read(1 << 16):
            await websocket.send_bytes(data)

    tasks = [asyncio.create_task(inward()), asyncio.create_task(outward())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        with contextlib.suppress(Exception):
            await websocket.close()


RECORDING_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}-[A-Za-z0-9._-]{1,64}\.rfbrec$")
REPLAY_MAX_GAP = 2.0  # seconds: longer pauses in a recording are shortened to this


def recording_path(svc: Service, env_id: str, name: str) -> Path:
    """The file of one recording (names are checked; nothing outside the env's folder).

    Raises:
        NotFoundError: no such recording.
    """
    path = svc.root / "recordings" / env_id / name
    if not is_env_id(env_id) or not RECORDING_NAME.fullmatch(name) or not path.is_file():
        raise NotFoundError("recording", name[:80])
    return path


@router.websocket("/v1/environments/{env_id}/recordings/{name}/replay")
async def replay(websocket: WebSocket, env_id: str, name: str, token: str = "") -> None:
    """Play a recorded session back to a viewer (noVNC), at its own pace; input is ignored."""
    svc: Service = websocket.app.state.service
    try:
        if len(token) > 2048:
            raise TokenError("malformed", "bad token")
        svc.gateway.verify(token, env_id)
        path = recording_path(svc, env_id, name)
        frames = await asyncio.to_thread(lambda: list(read_recording(path)))
    except (GenOSError, ValueError, OSError) as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)

    async def drain() -> None:  # the viewer's handshake and requests go nowhere
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def play() -> None:
        previous: int | None = None
        for stamp, data in frames:
            if previous is not None:
                await asyncio.sleep(min((stamp - previous) / 1e9, REPLAY_MAX_GAP))
            previous = stamp
            await websocket.send_bytes(data)

    tasks = [asyncio.create_task(drain()), asyncio.create_task(play())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[1].done() and not tasks[0].done():
            await asyncio.wait([tasks[0]], timeout=3600)  # the last frame stays up until they leave
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await websocket.close()
