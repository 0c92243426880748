"""The display WebSocket: a token-bound RFB path through the gateway to the environment."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from genos.audit import AuditLog
from genos.gateway.recording import read_recording
from tests.api.conftest import Api

pytestmark = pytest.mark.anyio


async def running_env(api: httpx.AsyncClient) -> dict[str, Any]:
    """A running environment (1280x800 display)."""
    body = {"prompt": "a desktop with xterm", "wait": True}
    env: dict[str, Any] = (await api.post("/v1/environments", json=body)).json()
    assert env["state"] == "running"
    return env


async def token_for(
    api: httpx.AsyncClient, env_id: str, permission: str = "control"
) -> dict[str, Any]:
    """A display token for the environment."""
    response = await api.post(
        f"/v1/environments/{env_id}/display-token", json={"permission": permission}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


class Reader:
    """Reads exact byte counts from WebSocket binary messages."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buf = b""

    async def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            message = await self.ws.recv()
            assert isinstance(message, bytes)
            self.buf += message
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


async def handshake(ws: ClientConnection) -> tuple[Reader, int, int]:
    """RFB 3.8 with security None; returns the framebuffer size."""
    r = Reader(ws)
    assert await r.read(12) == b"RFB 003.008\n"
    await ws.send(b"RFB 003.008\n")
    count = (await r.read(1))[0]
    types = await r.read(count)
    assert types == b"\x01"
    await ws.send(b"\x01")
    assert await r.read(4) == b"\x00\x00\x00\x00"
    await ws.send(b"\x01")
    width, height = struct.unpack("!HH", await r.read(4))
    await r.read(16)
    name_len = struct.unpack("!I", await r.read(4))[0]
    await r.read(name_len)
    return r, width, height


async def test_a_token_opens_the_display_and_frames_flow(api: httpx.AsyncClient, live: str) -> None:
    """With a control token the viewer completes RFB and gets a framebuffer update."""
    env = await running_env(api)
    token = await token_for(api, env["id"])
    assert token["websocket"] == f"/v1/environments/{env['id']}/display?token={token['token']}"
    assert token["share_url"] == f"http://genos.test/#/view/{env['id']}/{token['token']}"
    async with connect(f"ws://{live}{token['websocket']}", subprotocols=["binary"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "binary"
        reader, width, height = await handshake(ws)
        assert (width, height) == (1280, 800)
        await ws.send(struct.pack("!BBHHHH", 3, 0, 0, 0, 4, 2))
        head = await reader.read(4)
        assert head[0] == 0
        assert struct.unpack("!H", head[2:4])[0] == 1
        x, y, w, h, enc = struct.unpack("!HHHHi", await reader.read(12))
        assert (x, y, w, h, enc) == (0, 0, 4, 2, 0)
        assert len(await reader.read(4 * 2 * 4)) == 32


async def refused(url: str) -> int:
    """The HTTP status a refused WebSocket handshake got."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(url):
            pass
    return info.value.response.status_code


async def test_forged_wrong_env_and_revoked_tokens_are_refused(
    api: httpx.AsyncClient, api_app: Api, live: str
) -> None:
    """Forged, other-environment and revoked tokens never reach the display (403 at handshake)."""
    env = await running_env(api)
    other = await running_env(api)
    good = (await token_for(api, env["id"]))["token"]
    body, mac = good.split(".")
    forged = f"{body}.{mac[:-2]}AA"
    base = f"ws://{live}/v1/environments"
    assert await refused(f"{base}/{env['id']}/display?token={forged}") == 403
    assert await refused(f"{base}/{other['id']}/display?token={good}") == 403
    assert await refused(f"{base}/{env['id']}/display") == 403
    assert await refused(f"{base}/not-an-id/display?token={good}") == 403
    api_app.service.gateway.revoke(good)
    assert await refused(f"{base}/{env['id']}/display?token={good}") == 403


async def test_rdp_needs_a_spec_asking_for_it_and_a_control_token(
    api: httpx.AsyncClient, api_app: Api, live: str
) -> None:
    """RDP and SPICE are carried only with a control token, RDP only where the spec asks."""
    env = await running_env(api)
    base = f"ws://{live}/v1/environments/{env['id']}"
    control = (await token_for(api, env["id"]))["token"]
    view = (await token_for(api, env["id"], "view"))["token"]
    assert await refused(f"{base}/rdp?token={control}") == 403  # the spec says vnc
    assert await refused(f"{base}/rdp?token={view}") == 403
    assert await refused(f"{base}/spice?token={view}") == 403
    assert await refused(f"{base}/rdp") == 403
    outcomes = [r.get("outcome", "") for r in AuditLog(api_app.service.audit_log.path).records()]
    assert any("its spec does not ask for rdp" in o for o in outcomes), outcomes
    assert any("needs a control token" in o for o in outcomes), outcomes


async def test_a_suspended_environment_refuses_viewers(api: httpx.AsyncClient, live: str) -> None:
    """A token for a suspended environment does not open its display."""
    env = await running_env(api)
    token = (await token_for(api, env["id"], "view"))["token"]
    await api.post(f"/v1/environments/{env['id']}/suspend")
    url = f"ws://{live}/v1/environments/{env['id']}/display?token={token}"
    assert await refused(url) == 403


async def test_connections_lists_live_viewers(api: httpx.AsyncClient, live: str) -> None:
    """While a viewer is connected it appears in the connections list with its permission."""
    env = await running_env(api)
    token = await token_for(api, env["id"], "view")
    async with connect(f"ws://{live}{token['websocket']}") as ws:
        await handshake(ws)
        conns = (await api.get(f"/v1/environments/{env['id']}/connections")).json()
        assert [c["permission"] for c in conns] == ["view"]
        assert conns[0]["user_id"] == env["owner"]
    assert websockets.__version__


async def test_a_recorded_session_replays_byte_for_byte(
    api: httpx.AsyncClient, api_app: Api, live: str
) -> None:
    """With security.recording the session is recorded; replay sends the same bytes in order."""
    spec = {"name": "rec", "security": {"recording": True}}
    env = (await api.post("/v1/environments", json={"spec": spec, "wait": True})).json()
    token = await token_for(api, env["id"])
    async with connect(f"ws://{live}{token['websocket']}") as ws:
        reader, _w, _h = await handshake(ws)
        await ws.send(struct.pack("!BBHHHH", 3, 0, 0, 0, 8, 8))
        await reader.read(4 + 12 + 8 * 8 * 4)
    listed = (await api.get(f"/v1/environments/{env['id']}/recordings")).json()
    assert len(listed) == 1
    name = listed[0]["name"]
    path = api_app.service.root / "recordings" / env["id"] / name
    for _ in range(200):  # the proxy closes the file as the viewer leaves
        recorded = b"".join(data for _, data in read_recording(path))
        if len(recorded) >= 12 + 2 + 4 + 24 + 4 + 12 + 256:
            break
        await asyncio.sleep(0.01)
    grant = (await api.post(f"/v1/environments/{env['id']}/recordings/{name}/token")).json()
    got = b""
    async with connect(f"ws://{live}{grant['websocket']}") as ws:
        while len(got) < len(recorded):
            got += await ws.recv()  # type: ignore[operator]
    assert got == recorded
    assert got.startswith(b"RFB 003.008\n")
    bad = await api.post(f"/v1/environments/{env['id']}/recordings/../../etc/passwd/token")
    assert bad.status_code == 404
    other = await api.post(
        f"/v1/environments/{env['id']}/recordings/20260101T000000-x.rfbrec/token"
    )
    assert other.status_code == 404


async def test_audio_takes_display_tokens_of_either_permission(
    api: httpx.AsyncClient, api_app: Api, live: str
) -> None:
    """The sound channel refuses bad and other-environment tokens; a view token passes the
    permission check (sound carries no input) and only then meets the fake's missing server."""
    env = await running_env(api)
    other = await running_env(api)
    base = f"ws://{live}/v1/environments"
    good = (await token_for(api, env["id"]))["token"]
    view = (await token_for(api, env["id"], "view"))["token"]
    assert await refused(f"{base}/{other['id']}/audio?token={good}") == 403
    assert await refused(f"{base}/{env['id']}/audio") == 403
    assert await refused(f"{base}/{env['id']}/audio?token={view}") == 403  # the fake has no sound
    outcomes = [r.get("outcome", "") for r in AuditLog(api_app.service.audit_log.path).records()]
    assert not any("needs a control token" in o for o in outcomes), outcomes
    assert any("audio display of environment" in o for o in outcomes), outcomes
