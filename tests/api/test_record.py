"""``POST /v1/environments/{id}/record``: the spec, the state and the length are checked
before the recorder is asked; its answer becomes the MP4 or the matching status.

The fake driver's record.sock answers ``OK`` and ``FAKE_MP4`` at once; tests that
need another answer put a stub recorder on the same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from genos.api import routes_record
from genos.audit import AuditLog
from genos.runtime.fake import FakeDriver
from genos.runtime.fake_media import FAKE_MP4
from tests.api.conftest import Api, AsUser

pytestmark = pytest.mark.anyio
MP4 = b"\x00\x00\x00\x18ftypisom"  # the start of any MP4 (an ftyp box)


async def env_with(api: httpx.AsyncClient, recording: bool) -> str:
    """A running environment whose spec allows recording or not."""
    spec = {"name": "rec", "security": {"recording": recording}}
    env: dict[str, Any] = (
        await api.post("/v1/environments", json={"spec": spec, "wait": True})
    ).json()
    assert env["state"] == "running", env
    env_id: str = env["id"]
    return env_id


def fake(api_app: Api) -> FakeDriver:
    driver = api_app.service.engine.driver
    assert isinstance(driver, FakeDriver)
    return driver


def asked(api_app: Api, env_id: str) -> list[str]:
    """The lines the fake recorder of ``env_id`` was sent."""
    return fake(api_app).envs[env_id].media.recordings


def audits(api_app: Api) -> list[dict[str, Any]]:
    return [
        r for r in AuditLog(api_app.service.audit_log.path).records() if r["action"] == "record"
    ]


@dataclass
class Stub:
    """A recorder that gives one fixed answer (None: none, and it waits up to 10 s for the
    gateway to hang up) and notes what it saw."""

    answer: bytes | None
    asks: list[str] = field(default_factory=list)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.asks.append((await reader.readline()).decode())
            await self._answer(reader, writer)
        except ConnectionError:
            pass  # the gateway hung up mid-answer (past the cap)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.answer is not None:
            writer.write(self.answer)
            await writer.drain()
            return
        with contextlib.suppress(TimeoutError):  # a gateway that never hangs up: we do
            await asyncio.wait_for(self._until_eof(reader), 10)
            self.hung_up.set()

    @staticmethod
    async def _until_eof(reader: asyncio.StreamReader) -> None:
        while await reader.read(1024):
            pass


async def stub_recorder(api_app: Api, env_id: str, answer: bytes | None) -> Stub:
    """Put a :class:`Stub` on ``env_id``'s record.sock in place of the fake's recorder."""
    env = fake(api_app).envs[env_id]
    sock = fake(api_app).root / env_id / "record.sock"
    (recorder,) = [s for s in env.media_servers if s.sockets[0].getsockname() == str(sock)]
    recorder.close()
    await recorder.wait_closed()
    sock.unlink(missing_ok=True)
    stub = Stub(answer)
    env.media_servers[env.media_servers.index(recorder)] = await asyncio.start_unix_server(
        stub.serve, str(sock)
    )
    return stub


async def test_a_recording_arrives_whole_named_and_audited(
    api: httpx.AsyncClient, api_app: Api
) -> None:
    """200 with the recorder's file as it sent it, video/mp4, an attachment named after the
    environment and the UTC time; the recorder was asked for the seconds; one audit record."""
    env_id = await env_with(api, True)
    answer = await api.post(f"/v1/environments/{env_id}/record", json={"seconds": 3})
    assert answer.status_code == 200, answer.text
    assert answer.content == FAKE_MP4
    assert answer.headers["content-type"] == "video/mp4"
    disposition = answer.headers["content-disposition"]
    assert re.fullmatch(rf'attachment; filename="genos-{env_id}-\d{{8}}T\d{{6}}\.mp4"', disposition)
    assert asked(api_app, env_id) == ["3"]
    (audit,) = audits(api_app)
    assert (audit["env_id"], audit["user"], audit["seconds"]) == (env_id, "admin", 3)
    assert (audit["bytes"], audit["outcome"]) == (len(FAKE_MP4), "ok")


async def test_refused_when_the_spec_does_not_allow_recording(
    api: httpx.AsyncClient, api_app: Api
) -> None:
    """403 forbidden naming security.recording, audited; no recorder is asked."""
    env_id = await env_with(api, False)
    answer = await api.post(f"/v1/environments/{env_id}/record", json={"seconds": 3})
    assert answer.status_code == 403
    assert answer.json() == {
        "error": {
            "code": "forbidden",
            "message": "its spec does not allow recording (security.recording)",
        }
    }
    assert asked(api_app, env_id) == []
    (audit,) = audits(api_app)
    assert (audit["bytes"], audit["outcome"]) == (0, answer.json()["error"]["message"])


@pytest.mark.parametrize(
    "body",
    [
        {"seconds": 0},
        {"seconds": 601},
        {"seconds": -1},
        {"seconds": "x"},
        {"seconds": "3"},
        {"seconds": 2.5},
        {"seconds": 10**30},
        {"seconds": True},
        {},
        {"seconds": 3, "extra": 1},
        None,
    ],
)
async def test_bad_lengths_are_422(
    api: httpx.AsyncClient, api_app: Api, body: dict[str, Any] | None
) -> None:
    """A length that is not a whole number of seconds from 1 to 600 (or no body): 422
    invalid_input in the usual error shape; the recorder is not asked."""
    env_id = await env_with(api, True)
    answer = await api.post(f"/v1/environments/{env_id}/record", json=body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_input"
    assert "\n" not in error["message"]
    assert asked(api_app, env_id) == []


async def test_a_non_json_body_is_422(api: httpx.AsyncClient, api_app: Api) -> None:
    """Text that is not JSON: 422, not a 500."""
    env_id = await env_with(api, True)
    answer = await api.post(f"/v1/environments/{env_id}/record", content=b"seconds=3")
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_input"
    assert asked(api_app, env_id) == []


async def test_not_running_is_409(api: httpx.AsyncClient, api_app: Api) -> None:
    """A suspended environment: 409 wrong_state; the recorder is not asked."""
    env_id = await env_with(api, True)
    assert (await api.post(f"/v1/environments/{env_id}/suspend")).status_code == 200
    answer = await api.post(f"/v1/environments/{env_id}/record", json={"seconds": 3})
    assert answer.status_code == 409
    assert answer.json()["error"] == {
        "code": "wrong_state",
        "message": "cannot record: state is suspended, needs running",
    }
    assert asked(api_app, env_id) == []


@pytest.mark.parametrize("env_id", ["0123456789", "NOT-AN-ID", "x" * 300])
async def test_unknown_or_malformed_ids_are_404(api: httpx.AsyncClient, env_id: str) -> None:
    """No such environment, or not an id at all: 404 not_found."""
    answer = await api.post(f"/v1/environments/{env_id}/record", json={"seconds": 3})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


async def test_another_users_environment_is_404(
    api: httpx.AsyncClient, api_app: Api, as_user: AsUser
) -> None:
    """A user cannot record someone else's environment (nor learn that it exists)."""
    env_id = await env_with(api, True)
    mallory = await as_user("mallory")
    answer = await mallory.post(f"/v1/environments/{env_id}/record", json={"seconds": 3})
    assert answer.status_code == 404
    assert asked(api_app, env_id) == []


async def test_a_recording_in_progress_is_409(api: httpx.AsyncClient, api_app: Api) -> None:
    """The recorder's ``ERR another recording is in progress``: 409 conflict with its words."""
    env_id = await env_with(api, True)
    stub = await stub_recorder(api_app, env_id, b"ERR another recording is in progress\n")
    answer = await api.post(f"/v1/environments/{env_id}/record", json={"seconds": 5})
    assert answer.status_code == 409
    assert answer.json()["error"] == {
        "code": "conflict",
        "message": "another recording is in progress",
    }
    assert stub.asks == ["5\n"]
    (audit,) = audits(api_app)
    assert (audit["bytes"], audit["outcome"]) == (0, "another recording is in progress")


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"ERR the display is not up\n", "the recording failed: the display is not up"),
        (b"", "the recorder hung up without an answer"),
        (b"OK\n", "the recorder sent no file"),
        (b"OK\n<html>not a video</html>", "the recorder's answer is not an MP4 file"),
        (b"HELLO\n", "the recorder's answer is not OK or ERR: 'HELLO'"),
    ],
)
async def test_a_failed_recorder_is_502(
    api: httpx.AsyncClient, api_app: Api, reply: bytes, message: str
) -> None:
    """Anything but ``OK`` and an MP4 (or a known ``ERR``): 502 external, one line."""
    env_id = await env_with(api, True)
    await stub_recorder(api_app, env_id, reply)
    answer = await api.post(f"/v1/environments/{env_id}/record", json={"seconds": 2})
    assert answer.status_code == 502
    assert answer.json()["error"] == {"code": "external", "message": message}


async def test_a_recording_past_the_cap_breaks_off(
    api_app: Api, live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than the cap: the answer stops without its end (the client sees a broken body,
    not a short file), the recorder is hung up on, and the audit says so."""
    monkeypatch.setattr(routes_record, "MAX_BYTES", 1 << 16)
    async with admin_of(api_app, live) as admin:
        env_id = await env_with(admin, True)
        await stub_recorder(api_app, env_id, b"OK\n" + MP4 + b"\x00" * (1 << 18))
        got: list[bytes] = []
        with pytest.raises(httpx.RemoteProtocolError):
            await download(admin, f"/v1/environments/{env_id}/record", 2, got)
    assert got[0] == 200
    assert sum(map(len, got[1:])) <= 1 << 16
    (audit,) = audits(api_app)
    assert audit["outcome"] == f"broken: the recording is larger than {1 << 16} bytes"
    assert 1 << 16 < audit["bytes"] <= (1 << 16) + routes_record.CHUNK


async def download(client: httpx.AsyncClient, path: str, seconds: int, got: list[Any]) -> None:
    """POST for a recording; ``got`` gets the status, then each piece of body as it comes."""
    async with client.stream("POST", path, json={"seconds": seconds}) as answer:
        got.append(answer.status_code)
        async for chunk in answer.aiter_raw():
            got.append(chunk)


def admin_of(api_app: Api, live: str) -> httpx.AsyncClient:
    """A client of the live server, signed in as the admin."""
    headers = {"Authorization": f"Bearer {api_app.admin_token}"}
    return httpx.AsyncClient(base_url=f"http://{live}", headers=headers, timeout=30)


async def test_a_client_that_leaves_hangs_up_on_the_recorder(api_app: Api, live: str) -> None:
    """The client goes away while the recorder records: the gateway closes record.sock at
    once (not after the recording's length) and audits ``client_gone``."""
    async with admin_of(api_app, live) as admin:
        env_id = await env_with(admin, True)
    stub = await stub_recorder(api_app, env_id, None)
    host, port = live.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"seconds": 600}'
    writer.write(
        f"POST /v1/environments/{env_id}/record HTTP/1.1\r\nHost: {live}\r\n"
        f"Authorization: Bearer {api_app.admin_token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    for _ in range(500):
        if stub.asks:
            break
        await asyncio.sleep(0.01)
    assert stub.asks == ["600\n"]
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(stub.hung_up.wait(), 12)
    for _ in range(500):
        if audits(api_app):
            break
        await asyncio.sleep(0.01)
    (audit,) = audits(api_app)
    assert (audit["seconds"], audit["bytes"], audit["outcome"]) == (600, 0, "client_gone")
    assert reader.at_eof() or not await reader.read()
