"""Files in and out through the API (in-process, fake runtime): policy, names, limits, audit."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genos.api import routes_desktop
from genos.spec import EnvironmentSpec, Security, dump
from tests.api.conftest import Api, AsUser

pytestmark = pytest.mark.anyio


async def running_env(client: httpx.AsyncClient, transfer: str = "to_env") -> str:
    """A running environment whose security.file_transfer is ``transfer``."""
    spec = dump(EnvironmentSpec(name="files", security=Security(file_transfer=transfer)))
    made = await client.post("/v1/environments", json={"spec": spec, "wait": True})
    assert made.status_code == 201, made.text
    assert made.json()["state"] == "running"
    env_id: str = made.json()["id"]
    return env_id


def home(api_app: Api, env_id: str) -> Path:
    """The fake runtime's home of ``env_id``."""
    found = api_app.service.engine.driver.home(env_id)  # type: ignore[attr-defined]
    return Path(found.anchor, *found.parts)


def audit(api_app: Api, action: str) -> list[dict[str, Any]]:
    """The audit records of ``action``."""
    return [r for r in api_app.service.audit_log.records() if r["action"] == action]


async def upload(client: httpx.AsyncClient, env_id: str, name: str, data: Any) -> httpx.Response:
    return await client.post(
        f"/v1/environments/{env_id}/uploads", params={"name": name}, content=data
    )


def uploads(api_app: Api, env_id: str) -> dict[str, bytes]:
    """Everything in ~/Uploads, hidden files included."""
    folder = home(api_app, env_id) / "Uploads"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


async def test_upload_lands_in_uploads_and_never_replaces(
    api_app: Api, api: httpx.AsyncClient
) -> None:
    """An upload is stored in ~/Uploads; the same name again gets 'name (1).ext'."""
    env_id = await running_env(api)
    first = await upload(api, env_id, "report.txt", b"hello")
    assert first.status_code == 201, first.text
    assert first.json() == {"name": "report.txt", "size": 5, "path": "~/Uploads/report.txt"}
    second = await upload(api, env_id, "report.txt", b"again")
    assert second.json()["name"] == "report (1).txt"
    assert uploads(api_app, env_id) == {"report.txt": b"hello", "report (1).txt": b"again"}
    records = audit(api_app, "file.upload")
    assert [(r["name"], r["size"], r["outcome"]) for r in records] == [
        ("report.txt", 5, "stored"),
        ("report (1).txt", 5, "stored"),
    ]
    assert records[0]["env"] == env_id


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        (".bashrc", "bashrc"),
        ("a/b/../c.txt", "c.txt"),
        ("new\nline\x00.txt", "newline.txt"),
        ("  ...spaced.txt ", "spaced.txt"),
        ("é" * 200, "é" * 127),
    ],
)
async def test_hostile_names_are_sanitised_into_uploads(
    api_app: Api, api: httpx.AsyncClient, name: str, stored: str
) -> None:
    """Directory parts, control characters and leading dots go; the file stays in ~/Uploads."""
    env_id = await running_env(api)
    answer = await upload(api, env_id, name, b"x")
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == stored
    assert uploads(api_app, env_id) == {stored: b"x"}


@pytest.mark.parametrize("name", ["..", "/", "\x00\x01", " . ", "\u202e\u200b", "a/"])
async def test_names_with_nothing_usable_are_refused(
    api_app: Api, api: httpx.AsyncClient, name: str
) -> None:
    """A name that sanitises to nothing is a 422 and nothing is stored."""
    env_id = await running_env(api)
    answer = await upload(api, env_id, name, b"x")
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "bad_input"
    assert uploads(api_app, env_id) == {}


@pytest.mark.parametrize(
    ("transfer", "up", "down"),
    [("none", 403, 403), ("to_env", 201, 403), ("from_env", 403, 200), ("both", 201, 200)],
)
async def test_each_direction_only_as_the_policy_says(
    api_app: Api, api: httpx.AsyncClient, transfer: str, up: int, down: int
) -> None:
    """security.file_transfer decides uploads and downloads; refusals are audited."""
    env_id = await running_env(api, transfer)
    answer = await upload(api, env_id, "a.txt", b"x")
    assert answer.status_code == up
    listing = await api.get(f"/v1/environments/{env_id}/downloads")
    assert listing.status_code == down
    fetched = await api.get(f"/v1/environments/{env_id}/downloads/a.txt")
    assert fetched.status_code == (403 if down == 403 else 404)
    if up == 403:
        assert answer.json()["error"]["code"] == "file_transfer_refused"
        assert uploads(api_app, env_id) == {}
    refused = [r for r in audit(api_app, "file.upload") if r["outcome"] == "refused"]
    assert len(refused) == (1 if up == 403 else 0)


async def test_too_large_uploads_leave_nothing(
    api_app: Api, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the limit, declared or streamed, the answer is 413 and no file, partial or not."""
    monkeypatch.setattr(routes_desktop, "MAX_UPLOAD_BYTES", 10)
    env_id = await running_env(api)
    declared = await upload(api, env_id, "big.bin", b"x" * 11)
    assert declared.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"abcd"

    streamed = await upload(api, env_id, "big.bin", chunks())
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "too_large"
    assert list((home(api_app, env_id) / "Uploads").iterdir()) == []
    exact = await upload(api, env_id, "ten.bin", b"x" * 10)
    assert exact.status_code == 201
    outcomes = [r["outcome"] for r in audit(api_app, "file.upload")]
    assert outcomes == ["too_large", "too_large", "stored"]


async def test_a_linked_uploads_folder_is_refused(api_app: Api, api: httpx.AsyncClient) -> None:
    """~/Uploads as a symlink is never followed: 409, the link's target untouched."""
    env_id = await running_env(api)
    target = api_app.root / "elsewhere"
    target.mkdir()
    (home(api_app, env_id) / "Uploads").symlink_to(target)
    answer = await upload(api, env_id, "x.txt", b"x")
    assert answer.status_code == 409
    assert "not a directory" in answer.json()["error"]["message"]
    assert list(target.iterdir()) == []


async def test_downloads_lists_regular_files_only_and_sends_them(
    api_app: Api, api: httpx.AsyncClient
) -> None:
    """Links, folders and fifos in ~/Downloads are neither listed nor sent; files are, whole."""
    env_id = await running_env(api, "from_env")
    folder = home(api_app, env_id) / "Downloads"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"my notes")
    secret = api_app.root / "secret"
    secret.write_text("host secret")
    (folder / "link.txt").symlink_to(secret)
    (folder / "sub").mkdir()
    os.mkfifo(folder / "pipe")
    listing = (await api.get(f"/v1/environments/{env_id}/downloads")).json()
    assert [(i["name"], i["size"]) for i in listing["items"]] == [("notes.txt", 8)]
    got = await api.get(f"/v1/environments/{env_id}/downloads/notes.txt")
    assert got.status_code == 200
    assert got.content == b"my notes"
    assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''notes.txt"
    for name in ("link.txt", "sub", "pipe", "..%2Fsecret", "nothing"):
        refused = await api.get(f"/v1/environments/{env_id}/downloads/{name}")
        assert refused.status_code == 404, name
    sent = [r for r in audit(api_app, "file.download") if r["outcome"] == "sent"]
    assert [(r["name"], r["size"]) for r in sent] == [("notes.txt", 8)]


async def test_others_environments_and_stopped_ones_refuse(
    api: httpx.AsyncClient, as_user: AsUser
) -> None:
    """Someone else's environment is a 404; a suspended one is a 409."""
    env_id = await running_env(api, "both")
    mallory = await as_user("mallory")
    assert (await upload(mallory, env_id, "x", b"x")).status_code == 404
    assert (await mallory.get(f"/v1/environments/{env_id}/downloads")).status_code == 404
    assert (await api.post(f"/v1/environments/{env_id}/suspend")).status_code == 200
    stopped = await upload(api, env_id, "x", b"x")
    assert stopped.status_code == 409
    assert stopped.json()["error"]["code"] == "wrong_state"
