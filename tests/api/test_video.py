"""The video WebSocket: a display token, the encoder's frames with their header, acks, levels.

The fake driver's video.sock writes fake access units at the asked rate and keeps each
viewer's ask, so these tests see what the gateway asked the encoder for and what it passed on.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import genos.api.video
from genos.audit import AuditLog
from genos.gateway.video import KEY, LADDER, NEW_STREAM
from genos.runtime.fake_media import fake_frame
from tests.api.conftest import Api
from tests.api.test_display import refused, running_env, token_for

pytestmark = pytest.mark.anyio


def media(api_app: Api, env_id: str) -> Any:
    return api_app.service.engine.driver.envs[env_id].media  # type: ignore[attr-defined]


async def next_frame(ws: ClientConnection) -> tuple[int, int, bytes]:
    """(flags, seq, access unit) of the next frame; text messages in between are skipped."""
    while True:
        message = await asyncio.wait_for(ws.recv(), 10)
        if isinstance(message, bytes):
            assert message[0] == 1, message[:8]
            assert message[6:8] == b"\x00\x00", message[:8]
            return message[1], int.from_bytes(message[2:6], "big"), message[8:]


async def closing(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as closed:
        got = closed.rcvd
    assert got is not None, "closed without a close frame"
    return got.code, got.reason


async def next_levels(ws: ClientConnection) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(ws.recv(), 10)
        if isinstance(message, str) and json.loads(message)["type"] == "levels":
            levels: dict[str, Any] = json.loads(message)
            return levels


async def test_a_view_token_gets_frames_with_their_headers(
    api: httpx.AsyncClient, api_app: Api, live: str
) -> None:
    """Adaptive by default: the first message says level 5's figures, the encoder is asked for
    them, frames come whole and numbered, the first one a key frame of a new stream; the audit
    log says who connected."""
    env = await running_env(api)
    token = (await token_for(api, env["id"], "view"))["token"]
    kbps, fps = LADDER[5]
    async with connect(f"ws://{live}/v1/environments/{env['id']}/video?token={token}") as ws:
        levels = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert levels == {"type": "levels", "level": 5, "fps": fps, "kbps": kbps, "adaptive": True}
        size = kbps * 1000 // 8 // fps
        for n in range(4):
            flags, seq, frame = await next_frame(ws)
            assert seq == n
            assert flags == (KEY | NEW_STREAM if n == 0 else 0)
            assert frame == fake_frame(n, size)
            await ws.send(seq.to_bytes(4, "big"))
    assert media(api_app, env["id"]).video_asks == [f"{fps} {kbps}"]
    records = AuditLog(api_app.service.audit_log.path).records()
    assert any(r.get("action") == "video" and r.get("outcome") == "connected" for r in records)


async def test_fixed_levels_and_bad_ones(api: httpx.AsyncClient, api_app: Api, live: str) -> None:
    """fps and kbps together fix the levels; alone, out of range or not numbers: refused at
    the handshake, and no encoder is started."""
    env = await running_env(api)
    token = (await token_for(api, env["id"]))["token"]
    base = f"ws://{live}/v1/environments/{env['id']}/video?token={token}"
    async with connect(f"{base}&fps=10&kbps=200") as ws:
        assert await next_levels(ws) == {
            "type": "levels", "level": 5, "fps": 10, "kbps": 200, "adaptive": False,
        }  # fmt: skip
        assert (await next_frame(ws))[2] == fake_frame(0, 200 * 1000 // 8 // 10)
    huge = "&fps=1" + "0" * 400 + "&kbps=200"
    for bad in ("&fps=10", "&kbps=200", "&fps=0&kbps=200", "&fps=10&kbps=99999",
                "&fps=ab&kbps=200", "&fps=10&kbps=-5", huge):  # fmt: skip
        assert await refused(base + bad) == 403, bad
    assert media(api_app, env["id"]).video_asks == ["10 200"]


async def test_refused_tokens_and_states(api: httpx.AsyncClient, api_app: Api, live: str) -> None:
    """No token, another environment's token, a suspended environment: refused (403)."""
    env = await running_env(api)
    other = await running_env(api)
    good = (await token_for(api, env["id"]))["token"]
    base = f"ws://{live}/v1/environments"
    assert await refused(f"{base}/{env['id']}/video") == 403
    assert await refused(f"{base}/{other['id']}/video?token={good}") == 403
    assert (await api.post(f"/v1/environments/{env['id']}/suspend")).status_code == 200
    assert await refused(f"{base}/{env['id']}/video?token={good}") == 403
    assert media(api_app, env["id"]).video_asks == []


@pytest.mark.parametrize("message", ["ack 0", b"\x00\x00\x00", b"\x00" * 5])
async def test_anything_but_an_ack_ends_the_channel(
    api: httpx.AsyncClient, api_app: Api, live: str, message: str | bytes
) -> None:
    env = await running_env(api)
    token = (await token_for(api, env["id"]))["token"]
    async with connect(f"ws://{live}/v1/environments/{env['id']}/video?token={token}") as ws:
        await next_frame(ws)
        await ws.send(message)
        code, _ = await closing(ws)
    assert code == 1003
    for _ in range(200):
        if media(api_app, env["id"]).videos == 0:
            break
        await asyncio.sleep(0.02)
    assert media(api_app, env["id"]).videos == 0, "the encoder's socket was left open"


async def test_a_viewer_that_never_acks_is_stepped_down_then_hung_up_on(
    api: httpx.AsyncClient, api_app: Api, live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames unacked for a second: the encoder restarts two levels lower (a new stream's key
    frame next); with no ack at all for SILENT_LIMIT, the channel closes (1008)."""
    monkeypatch.setattr(genos.api.video, "SILENT_LIMIT", 3.0)
    env = await running_env(api)
    token = (await token_for(api, env["id"]))["token"]
    async with connect(f"ws://{live}/v1/environments/{env['id']}/video?token={token}") as ws:
        assert (await next_levels(ws))["level"] == 5
        assert (await next_levels(ws))["level"] == 3
        flags, seq, _ = await next_frame(ws)
        assert flags == KEY | NEW_STREAM
        assert seq > 0
        code, reason = await closing(ws)
    assert code == 1008
    assert "no frame acked" in reason
    asks = media(api_app, env["id"]).video_asks
    assert asks[:2] == [f"{LADDER[5][1]} {LADDER[5][0]}", f"{LADDER[3][1]} {LADDER[3][0]}"]
