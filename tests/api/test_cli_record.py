"""``genos record``: the MP4 lands where asked, whole, or nothing lands at all.

Most tests run the CLI against ``genos serve --driver fake`` (whose recorder answers
``FAKE_MP4``); the broken-off recording runs it against the app in-process, with a
stub recorder that sends more than a lowered cap.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genos.api import routes_record
from genos.runtime.fake_media import FAKE_MP4
from tests.api.conftest import Api
from tests.api.test_record import MP4, stub_recorder
from tests.api.test_server import BIN, Server, start_server, stop

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``genos serve --driver fake`` on a free loopback port."""
    root = tmp_path_factory.mktemp("serve") / "data"
    process, url = start_server(root, "--driver", "fake", "--cpus", "16", "--memory-mb", "65536")
    token = (root / "api" / "admin.token").read_text().strip()
    try:
        yield Server(url, root, token, process)
    finally:
        stop(process)


def new_env(server: Server, recording: bool) -> str:
    """A running environment on ``server`` whose spec allows recording or not."""
    headers = {"Authorization": f"Bearer {server.token}"}
    body = {"spec": {"name": "rec", "security": {"recording": recording}}, "wait": True}
    env = httpx.post(f"{server.url}/v1/environments", json=body, headers=headers, timeout=60)
    assert env.json()["state"] == "running", env.text
    env_id: str = env.json()["id"]
    return env_id


def genos_in(server: Server, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI against ``server`` in ``cwd``."""
    return subprocess.run(
        [str(BIN / "genos"), *args], env=server.env(), cwd=cwd, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def test_the_recording_is_written_where_asked(server: Server, tmp_path: Path) -> None:
    """``-o PATH``: exit 0, the server's file at PATH and nothing else beside it, one line
    saying where, how big and how long."""
    env_id = new_env(server, True)
    result = genos_in(server, tmp_path, "record", env_id, "--seconds", "3", "-o", "out.mp4")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.mp4").read_bytes() == FAKE_MP4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    assert result.stdout == f"out.mp4: {len(FAKE_MP4)} bytes, 3 s\n"


def test_the_default_name_is_genos_id_in_the_current_directory(
    server: Server, tmp_path: Path
) -> None:
    """Without ``-o`` the file is ``./genos-<id>.mp4``; a directory as ``-o`` gets it inside."""
    env_id = new_env(server, True)
    result = genos_in(server, tmp_path, "record", env_id, "--seconds", "1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"genos-{env_id}.mp4").read_bytes() == FAKE_MP4
    (tmp_path / "videos").mkdir()
    result = genos_in(server, tmp_path, "record", env_id, "-s", "1", "-o", "videos")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "videos").iterdir()] == [f"genos-{env_id}.mp4"]


@pytest.mark.parametrize(
    ("recording", "args", "code", "line"),
    [
        (False, ("--seconds", "3"), 1,
         "genos: its spec does not allow recording (security.recording)"),
        (True, ("--seconds", "0"), 2,
         "genos: Invalid value for '--seconds' / '-s': 0 is not in the range 1<=x<=600."),
        (True, ("--seconds", "x"), 2,
         "genos: Invalid value for '--seconds' / '-s': 'x' is not a valid int range."),
        (True, ("--seconds", "3", "-o", "no/such/dir/out.mp4"), 2,
         "genos: no/such/dir is not a directory"),
    ],
)  # fmt: skip
def test_a_refused_recording_is_one_line_and_no_file(  # noqa: PLR0917 - the table's columns
    server: Server, tmp_path: Path, recording: bool, args: tuple[str, ...], code: int, line: str
) -> None:
    """Refused by the server or by the CLI: one line on stderr, a non-zero exit, and the
    directory stays empty (no file, no temporary file)."""
    env_id = new_env(server, recording)
    result = genos_in(server, tmp_path, "record", env_id, *args)
    assert (result.returncode, result.stderr, result.stdout) == (code, line + "\n", "")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_environment_is_one_line(server: Server, tmp_path: Path) -> None:
    """No such environment: exit 1, the server's words; not an id at all: exit 2."""
    result = genos_in(server, tmp_path, "record", "0123456789", "-s", "3")
    assert (result.returncode, result.stderr) == (1, "genos: no environment named '0123456789'\n")
    result = genos_in(server, tmp_path, "record", "../etc", "-s", "3")
    assert (result.returncode, result.stderr) == (2, "genos: not an environment id: '../etc'\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_a_recording_that_breaks_off_leaves_no_file(
    api_app: Api, live: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server drops the connection mid-file (past the cap): exit 1 saying it broke off,
    and no file, whole or partial, is left in the directory."""
    monkeypatch.setattr(routes_record, "MAX_BYTES", 1 << 16)
    headers = {"Authorization": f"Bearer {api_app.admin_token}"}
    async with httpx.AsyncClient(base_url=f"http://{live}", headers=headers) as admin:
        spec = {"name": "rec", "security": {"recording": True}}
        made = await admin.post("/v1/environments", json={"spec": spec, "wait": True})
    env_id = made.json()["id"]
    await stub_recorder(api_app, env_id, b"OK\n" + MP4 + b"\x00" * (1 << 20))
    out = tmp_path / "out"
    out.mkdir()
    result = await run_cli(
        {"GENOS_URL": f"http://{live}", "GENOS_TOKEN": api_app.admin_token},
        "record", env_id, "-s", "2", "-o", str(out / "x.mp4"),
    )  # fmt: skip
    assert result[0] == 1
    assert result[1].startswith(f"genos: the recording from http://{live} broke off: ")
    assert result[1].count("\n") == 1
    assert list(out.iterdir()) == []


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, Any]:
    """Run the CLI without blocking the loop the in-process server runs on: exit, stderr,
    stdout."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")}
    process = await asyncio.create_subprocess_exec(
        str(BIN / "genos"), *args, env=base | env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stderr.decode(), stdout.decode()
