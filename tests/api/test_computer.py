"""The computer API in-process over the fake runtime's real RFB display: shapes, tokens,
the input lease against a viewer on the display WebSocket, audit, and bad input."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import connect

from genos.audit import AuditLog
from genos.gateway.lease import LEASES
from tests.api.conftest import Api, client_for
from tests.api.test_display import handshake, running_env, token_for

pytestmark = pytest.mark.anyio
FAKE_RGB = (0x80, 0x40, 0x20)  # FakeDisplay's pixel b"\x20\x40\x80\x00" in BGRX


def computer(env: dict[str, Any]) -> str:
    return f"/v1/environments/{env['id']}/computer"


async def test_screenshot_is_png_of_the_display_full_and_scaled(api: httpx.AsyncClient) -> None:
    """GET screenshot answers image/png of the display's pixels; ?width= scales with X-Scale."""
    env = await running_env(api)
    full = await api.get(f"{computer(env)}/screenshot")
    assert full.status_code == 200, full.text
    assert full.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(full.content))
    assert image.size == (1280, 800)
    assert image.convert("RGB").getpixel((640, 400)) == FAKE_RGB
    scaled = await api.get(f"{computer(env)}/screenshot", params={"width": 1024})
    assert Image.open(io.BytesIO(scaled.content)).size == (1024, 640)
    assert scaled.headers["x-scale"] == "1.250000"
    assert scaled.headers["x-screen-width"] == "1280"
    bigger = await api.get(f"{computer(env)}/screenshot", params={"width": 2000})
    assert bigger.status_code == 422
    assert (
        bigger.json()["error"]["message"] == "a screenshot is at most the screen's size, 1280x800"
    )
    screen = await api.get(f"{computer(env)}/screen")
    assert screen.json() == {"width": 1280, "height": 800, "name": "fake display"}


async def test_a_removed_environment_s_screen_is_not_kept(
    api: httpx.AsyncClient, api_app: Api
) -> None:
    """Once an environment an agent looked at is removed, its connection is closed and its
    screen's pixels let go, with no further call on it; so are its input lease and when
    its agent was last active."""
    desktops = api_app.service.desktops
    one, two = await running_env(api), await running_env(api)
    assert (await api.get(f"{computer(one)}/screenshot")).status_code == 200
    assert (await api.post(f"{computer(one)}/click", json={"x": 3, "y": 4})).status_code == 200
    assert one["id"] in desktops._open
    assert LEASES.get(one["id"]).holder is not None
    assert one["id"] in api_app.service.agent_activity
    assert (await api.delete(f"/v1/environments/{one['id']}")).status_code == 200
    assert (await api.get(f"{computer(two)}/screenshot")).status_code == 200
    assert set(desktops._open) == {two["id"]}
    assert one["id"] not in desktops._locks
    assert one["id"] not in LEASES._leases
    assert one["id"] not in api_app.service.agent_activity


async def test_actions_answer_the_cursor_and_are_audited(
    api: httpx.AsyncClient, api_app: Api
) -> None:
    """Actions move the cursor they report and each lands in the audit log with its arguments."""
    env = await running_env(api)
    base = computer(env)
    click = await api.post(f"{base}/click", json={"x": 100, "y": 200, "button": "right"})
    assert click.status_code == 200, click.text
    assert click.json()["cursor"] == {"x": 100, "y": 200}
    assert (await api.post(f"{base}/move", json={"x": 5, "y": 6})).json()["cursor"] == {
        "x": 5,
        "y": 6,
    }
    assert (await api.get(f"{base}/cursor")).json() == {"x": 5, "y": 6}
    drag = await api.post(f"{base}/drag", json={"path": [[1, 1], [30, 40]]})
    assert drag.json()["cursor"] == {"x": 30, "y": 40}
    for path, body in [
        ("type", {"text": "héllo wörld ✓\n"}),
        ("key", {"keys": "ctrl+l"}),
        ("scroll", {"dy": 3}),
        ("hold", {"keys": "shift"}),
        ("release", {}),
    ]:
        answer = await api.post(f"{base}/{path}", json=body)
        assert answer.status_code == 200, (path, answer.text)
    records = list(AuditLog(api_app.service.audit_log.path).records())
    actions = [(r["action"], r.get("text")) for r in records if r["action"].startswith("computer.")]
    assert actions == [
        ("computer.click", None), ("computer.move", None), ("computer.drag", None),
        ("computer.type", "héllo wörld ✓\n"), ("computer.key", None),
        ("computer.scroll", None), ("computer.hold", None), ("computer.release", None),
    ]  # fmt: skip
    click_record = next(r for r in records if r["action"] == "computer.click")
    assert (click_record["x"], click_record["y"], click_record["button"]) == (100, 200, "right")
    assert click_record["user"] == "admin"


async def test_bad_input_is_a_one_line_4xx(api: httpx.AsyncClient) -> None:
    """Off-screen points, huge text, unknown keys, garbage and empty exec get 422 with one line."""
    env = await running_env(api)
    base = computer(env)
    cases: list[tuple[str, Any, str]] = [
        ("click", {"x": 1280, "y": 0}, "(1280, 0) is off the 1280x800 screen"),
        ("move", {"x": -1, "y": 0}, "x: Input should be greater than or equal to 0"),
        ("click", {"x": 5}, "give both x and y, or neither"),
        ("drag", {"path": [[0, 0], [0, 900]]}, "(0, 900) is off the 1280x800 screen"),
        ("type", {"text": "x" * 8193}, "text: String should have at most 8192 characters"),
        ("type", {"text": "bell\x07"}, "character U+0007 cannot be typed"),
        ("key", {"keys": "ctrl+hyper"}, "unknown key 'hyper'"),
        ("key", {"keys": "ctrl+"}, "not a key combination: 'ctrl+'"),
        ("click", {"x": "1", "y": 2}, "x: Input should be a valid integer"),
        ("scroll", {"x": 1, "y": 1}, "scroll needs dx or dy"),
        ("exec", {"argv": []}, "argv: List should have at least 1 item after validation, not 0"),
        ("exec", {"argv": [""]}, "argv[0] is empty: name the command to run"),
        ("click", {"x": 1, "y": 1, "extra": 1}, "extra: Extra inputs are not permitted"),
    ]
    for path, body, message in cases:
        answer = await api.post(f"{base}/{path}", json=body)
        assert answer.status_code == 422, (path, body, answer.text)
        assert answer.json()["error"]["message"] == message
    garbage = await api.post(
        f"{base}/type", content=b"\xff\xfe\x00garbage", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 422
    assert "\n" not in garbage.json()["error"]["message"]
    assert (await api.get(f"{base}/cursor")).json() == {"x": 0, "y": 0}  # nothing was sent


async def test_a_view_token_watches_but_cannot_act(api: httpx.AsyncClient, api_app: Api) -> None:
    """A view display token gets screenshots; actions and exec are 403 and nothing moves."""
    env = await running_env(api)
    view = (await token_for(api, env["id"], "view"))["token"]
    control = (await token_for(api, env["id"], "control"))["token"]
    async with client_for(api_app.app, view) as watcher:
        shot = await watcher.get(f"{computer(env)}/screenshot", params={"width": 320})
        assert shot.status_code == 200
        for path, body in [("click", {"x": 1, "y": 1}), ("type", {"text": "a"})]:
            refused = await watcher.post(f"{computer(env)}/{path}", json=body)
            assert refused.status_code == 403
            assert refused.json()["error"]["message"] == (
                "a view token can watch this desktop but not act on it"
            )
        assert (
            await watcher.post(f"{computer(env)}/exec", json={"argv": ["id"]})
        ).status_code == 403
    async with client_for(api_app.app, control) as actor:
        moved = await actor.post(f"{computer(env)}/move", json={"x": 9, "y": 9})
        assert moved.status_code == 200
    other = await running_env(api)
    async with client_for(api_app.app, control) as actor:
        wrong = await actor.get(f"{computer(other)}/screen")
        assert wrong.status_code == 401


async def test_a_person_taking_control_gets_the_agent_a_409_until_given_back(
    api: httpx.AsyncClient, live: str
) -> None:
    """A viewer's key takes the lease: the agent's click is 409 naming them; release ends that."""
    env = await running_env(api)
    base = computer(env)
    assert (await api.post(f"{base}/click", json={"x": 1, "y": 1})).status_code == 200
    lease = (await api.get(f"{base}/lease")).json()
    assert lease["holder"]["kind"] == "agent"
    token = await token_for(api, env["id"])
    async with connect(f"ws://{live}{token['websocket']}", subprotocols=["binary"]) as ws:  # type: ignore[list-item]
        await handshake(ws)
        await ws.send(struct.pack("!BB2xI", 4, 1, 0x61))  # KeyEvent: 'a' down
        await ws.send(struct.pack("!BB2xI", 4, 0, 0x61))
        for _ in range(200):
            lease = (await api.get(f"{base}/lease")).json()
            if lease["holder"]["kind"] == "person":
                break
            await asyncio.sleep(0.01)
        refused = await api.post(f"{base}/click", json={"x": 2, "y": 2})
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "lease_held"
        assert error["holder"]["kind"] == "person"
        waiting = asyncio.create_task(
            api.get(f"{base}/lease", params={"version": lease["version"], "wait": 10})
        )
        back = await api.post(f"{base}/lease/release")
        assert back.json()["holder"] is None
        assert (await waiting).json()["holder"] is None
        again = await api.post(f"{base}/click", json={"x": 2, "y": 2})
        assert again.status_code == 200
    for _ in range(200):  # each change is written as an event a moment after it happens
        stream = await api.get(f"/v1/environments/{env['id']}/events", params={"follow": "false"})
        leases = [
            json.loads(line[6:])["data"]["lease"]
            for line in stream.text.splitlines()
            if line.startswith("data: ") and '"lease"' in line
        ]
        kinds = [lease["kind"] if lease else None for lease in leases]
        if len(kinds) >= 4:
            break
        await asyncio.sleep(0.01)
    assert kinds == ["agent", "person", None, "agent"]


async def test_exec_without_a_runtime_that_can_is_a_clear_422(api: httpx.AsyncClient) -> None:
    """The fake runtime cannot run commands: exec says so in one line."""
    env = await running_env(api)
    answer = await api.post(f"{computer(env)}/exec", json={"argv": ["true"]})
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == "this server's runtime cannot run commands"


async def test_a_stopped_environment_refuses_the_computer(api: httpx.AsyncClient) -> None:
    """A suspended environment's computer answers 409 in one line."""
    env = await running_env(api)
    assert (await api.get(f"{computer(env)}/screen")).status_code == 200
    await api.post(f"/v1/environments/{env['id']}/suspend")
    answer = await api.post(f"{computer(env)}/click", json={"x": 1, "y": 1})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "wrong_state"


async def test_files_outside_home_or_against_the_policy_are_refused(api: httpx.AsyncClient) -> None:
    """Paths outside the user's home are 422; reading out under file_transfer to_env is 403."""
    env = await running_env(api)
    files = f"{computer(env)}/files"
    for path in ["/etc/passwd", "/home/user/../../etc/passwd", "relative.txt", "/home/user"]:
        answer = await api.get(files, params={"path": path})
        assert answer.status_code == 422, (path, answer.text)
        assert "is not" in answer.json()["error"]["message"]
    outside = await api.put(files, json={"path": "/root/x", "content": "x"})
    assert outside.json()["error"]["message"] == "'/root/x' is not a normal path under /home/user"
    policy = await api.get(files, params={"path": "/home/user/notes.txt"})
    assert policy.status_code == 403
    assert policy.json()["error"]["message"] == (
        "the spec's file policy (file_transfer: to_env) forbids it"
    )
    both = await api.put(files, json={"path": "/home/user/a", "content": "x", "base64": "eA=="})
    assert both.json()["error"]["message"] == "give exactly one of content and base64"
    big = await api.put(files, json={"path": "/home/user/a", "base64": "A" * 90000})
    assert big.status_code == 422


async def pending(api: httpx.AsyncClient, base: str) -> list[dict[str, Any]]:
    """The pending approvals once there is one (polled, 2 s at most)."""
    for _ in range(200):
        listed: list[dict[str, Any]] = (await api.get(base)).json()
        if listed:
            return listed
        await asyncio.sleep(0.01)
    raise AssertionError("no approval became pending")


async def test_an_agent_waits_for_a_person_to_approve_or_decline(
    api: httpx.AsyncClient, api_app: Api
) -> None:
    """An approval waits until decided; decline and timeout come back as such; all audited."""
    env = await running_env(api)
    base = f"{computer(env)}/approvals"
    asking = asyncio.create_task(api.post(base, json={"description": "delete ~/old?"}))
    listed = await pending(api, base)
    assert [a["description"] for a in listed] == ["delete ~/old?"]
    decided = await api.post(f"{base}/{listed[0]['id']}", json={"decision": "approve"})
    assert decided.json()["status"] == "approved"
    answer = (await asking).json()
    assert (answer["status"], answer["decided_by"]) == ("approved", "admin")
    declining = asyncio.create_task(api.post(base, json={"description": "send mail?"}))
    listed = await pending(api, base)
    await api.post(f"{base}/{listed[0]['id']}", json={"decision": "decline"})
    assert (await declining).json()["status"] == "declined"
    late = await api.post(base, json={"description": "anyone?", "timeout": 0.2})
    assert late.json()["status"] == "timed_out"
    again = await api.post(f"{base}/{listed[0]['id']}", json={"decision": "approve"})
    assert again.status_code == 404
    view = (await token_for(api, env["id"], "view"))["token"]
    async with client_for(api_app.app, view) as watcher:
        refused = await watcher.post(base, json={"description": "x"})
        assert refused.status_code == 403
    actions = [r["action"] for r in AuditLog(api_app.service.audit_log.path).records()]
    assert actions.count("computer.approval_outcome") == 3
    assert api_app.service.approvals._by_env == {}  # nothing kept once none is pending


async def test_actions_are_marked_beside_recordings_on_their_clock(
    api: httpx.AsyncClient, api_app: Api
) -> None:
    """With security.recording on, each action gets a line with the recordings' clock."""
    body = {"spec": {"name": "rec", "security": {"recording": True}}, "wait": True}
    env = (await api.post("/v1/environments", json=body)).json()
    assert env["state"] == "running", env
    before = time.monotonic_ns()
    assert (await api.post(f"{computer(env)}/click", json={"x": 3, "y": 4})).status_code == 200
    assert (await api.post(f"{computer(env)}/type", json={"text": "ok"})).status_code == 200
    marks = api_app.service.root / "recordings" / env["id"] / "actions.jsonl"
    lines = [json.loads(line) for line in marks.read_text().splitlines()]
    assert [(m["action"], m.get("x"), m.get("text")) for m in lines] == [
        ("click", 3, None), ("type", None, "ok"),
    ]  # fmt: skip
    assert before <= lines[0]["t"] <= lines[1]["t"] <= time.monotonic_ns()
    listed = (await api.get(f"/v1/environments/{env['id']}/recordings")).json()
    assert listed == []  # the marks are not a recording
