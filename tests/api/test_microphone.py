"""The microphone WebSocket: a control token, a spec that allows it, bounded PCM in.

The fake driver keeps what reaches an environment's mic.sock, so these tests
see exactly what the gateway passed on and when it closed the channel.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from genos.api.audio import MIC_MESSAGE
from genos.audit import AuditLog
from tests.api.conftest import Api
from tests.api.test_display import refused, token_for

pytestmark = pytest.mark.anyio


async def env_with(api: httpx.AsyncClient, microphone: bool) -> dict[str, Any]:
    spec = {"name": "mic", "security": {"microphone": microphone}}
    env: dict[str, Any] = (
        await api.post("/v1/environments", json={"spec": spec, "wait": True})
    ).json()
    assert env["state"] == "running", env
    return env


def heard(api_app: Api, env_id: str) -> bytes:
    return bytes(api_app.service.engine.driver.envs[env_id].heard)  # type: ignore[attr-defined]


async def hung_up(api_app: Api, env_id: str) -> None:
    """Until the fake's end of mic.sock has seen the gateway hang up (and closed its own)."""
    env = api_app.service.engine.driver.envs[env_id]  # type: ignore[attr-defined]
    for _ in range(500):
        if env.listeners == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the gateway kept mic.sock open")


async def until_heard(api_app: Api, env_id: str, size: int) -> bytes:
    for _ in range(200):
        if len(found := heard(api_app, env_id)) >= size:
            return found
        await asyncio.sleep(0.01)
    return heard(api_app, env_id)


async def test_pcm_reaches_the_environment_as_sent(
    api: httpx.AsyncClient, api_app: Api, live: str
) -> None:
    """A control token on an environment that allows a microphone: the samples arrive whole,
    in order, unchanged; the audit log says who connected."""
    env = await env_with(api, True)
    token = (await token_for(api, env["id"]))["token"]
    chunks = [bytes([n]) * 1280 for n in range(5)]  # 40 ms each
    async with connect(f"ws://{live}/v1/environments/{env['id']}/microphone?token={token}") as ws:
        for chunk in chunks:
            await ws.send(chunk)
        assert await until_heard(api_app, env["id"], 6400) == b"".join(chunks)
    await hung_up(api_app, env["id"])
    records = AuditLog(api_app.service.audit_log.path).records()
    assert any(r.get("action") == "mic" and r.get("outcome") == "connected" for r in records)


async def test_refused_without_the_spec_or_with_a_view_token(
    api: httpx.AsyncClient, api_app: Api, live: str
) -> None:
    """No security.microphone, a view token, no token: refused at the handshake (403) and
    audited with the reason; nothing reaches the environment."""
    closed = await env_with(api, False)
    allowed = await env_with(api, True)
    base = f"ws://{live}/v1/environments"
    good = (await token_for(api, closed["id"]))["token"]
    view = (await token_for(api, allowed["id"], "view"))["token"]
    assert await refused(f"{base}/{closed['id']}/microphone?token={good}") == 403
    assert await refused(f"{base}/{allowed['id']}/microphone?token={view}") == 403
    assert await refused(f"{base}/{allowed['id']}/microphone") == 403
    outcomes = [r.get("outcome", "") for r in AuditLog(api_app.service.audit_log.path).records()]
    assert any("does not allow a microphone" in o for o in outcomes), outcomes
    assert any("needs a control token" in o for o in outcomes), outcomes
    assert heard(api_app, allowed["id"]) == b""


@pytest.mark.parametrize(
    ("message", "code", "why"),
    [
        (b"\x00" * (MIC_MESSAGE + 2), 1009, "whole samples"),
        (b"\x00" * 3, 1009, "whole samples"),
        ("text", 1003, "binary messages only"),
    ],
)
async def test_a_bad_message_closes_the_channel_with_the_reason(  # noqa: PLR0917 - the table's columns
    api: httpx.AsyncClient, api_app: Api, live: str, message: bytes | str, code: int, why: str
) -> None:
    """Too big, half a sample or text: the channel closes saying why; nothing passes."""
    env = await env_with(api, True)
    token = (await token_for(api, env["id"]))["token"]
    async with connect(f"ws://{live}/v1/environments/{env['id']}/microphone?token={token}") as ws:
        await ws.send(message)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == code
    assert why in info.value.rcvd.reason
    await hung_up(api_app, env["id"])
    assert heard(api_app, env["id"]) == b""


async def flood(ws: ClientConnection, sound: bytes) -> None:
    """Send ``sound`` in 16000-byte messages as fast as it goes, then wait for the close."""
    for at in range(0, len(sound), 16000):
        await ws.send(sound[at : at + 16000])
    await asyncio.wait_for(ws.recv(), 5)


async def test_faster_than_real_time_is_cut_off(
    api: httpx.AsyncClient, api_app: Api, live: str
) -> None:
    """Ten seconds of sound at once: the first two seconds' burst passes, then the channel
    closes (1008); far less than was sent reached the environment."""
    env = await env_with(api, True)
    token = (await token_for(api, env["id"]))["token"]
    second = b"\x01\x00" * 16000
    async with connect(f"ws://{live}/v1/environments/{env['id']}/microphone?token={token}") as ws:
        with pytest.raises(ConnectionClosed) as info:
            await flood(ws, second * 10)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "faster than 16 kHz mono")
    await hung_up(api_app, env["id"])
    passed = len(heard(api_app, env["id"]))
    assert 64000 <= passed < 3 * 32000
