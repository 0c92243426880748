"""The computer API on a real desktop: ``genos serve --driver oci``, real runc, real Xvnc, xterm."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from PIL import Image, ImageChops
from websockets.sync.client import connect

from genos.spec import EnvironmentSpec, dump
from tests.api.test_real import real_server
from tests.api.test_server import BIN, Server
from tests.sandbox.probes import NOTHING, host_traces

__all__ = ["real_server"]
ARTIFACTS = Path(os.environ.get("GENOS_ARTIFACTS", "/tmp/genos-artifacts")) / "computer"
pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.server]


class Agent:
    """An agent's HTTP client on one environment's computer."""

    def __init__(self, server: Server, env_id: str, token: str | None = None) -> None:
        self.base = f"{server.url}/v1/environments/{env_id}/computer"
        headers = {"Authorization": f"Bearer {token or server.token}"}
        self.http = httpx.Client(headers=headers, timeout=60)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.close()

    def post(self, path: str, **body: Any) -> httpx.Response:
        return self.http.post(f"{self.base}/{path}", json=body)

    def ok(self, path: str, **body: Any) -> dict[str, Any]:
        answer = self.post(path, **body)
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def screenshot(self, **params: int) -> Image.Image:
        answer = self.http.get(f"{self.base}/screenshot", params=params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/png"
        return Image.open(io.BytesIO(answer.content)).convert("RGB")

    def exec(self, *argv: str, timeout: float = 20, **more: Any) -> dict[str, Any]:
        return self.ok("exec", argv=list(argv), timeout=timeout, **more)


@pytest.fixture
def desktop(real_server: Server, desktop_spec: EnvironmentSpec) -> Iterator[str]:
    """A running real desktop (a headless display: xterm fills it); removed after, and
    nothing of it is left."""
    headers = {"Authorization": f"Bearer {real_server.token}"}
    spec = {**dump(desktop_spec), "display": {"headless": True}}
    spec["security"] = {**spec["security"], "file_transfer": "both"}
    body = {"spec": spec, "wait": True, "timeout": 120}
    env = httpx.post(
        f"{real_server.url}/v1/environments", json=body, headers=headers, timeout=180
    ).json()
    assert env["state"] == "running", env
    try:
        yield env["id"]
    finally:
        gone = httpx.delete(
            f"{real_server.url}/v1/environments/{env['id']}", headers=headers, timeout=120
        )
        assert gone.json()["state"] == "terminated"
        assert host_traces(env["id"], real_server.root) == NOTHING


def changed_pixels(one: Image.Image, other: Image.Image) -> int:
    """How many pixels differ between two same-sized screenshots."""
    diff = ImageChops.difference(one, other).convert("L").point(lambda v: 255 if v else 0)
    return int(sum(diff.histogram()[255:]))


def test_an_agent_types_into_the_terminal_and_the_file_appears(
    real_server: Server, desktop: str
) -> None:
    """Typing through the API writes a file (seen by exec) and changes the screenshot."""
    with Agent(real_server, desktop) as agent:
        assert agent.http.get(f"{agent.base}/screen").json()["width"] == 1280
        agent.ok("wait", until="settle", quiet=1.0, timeout=30)
        before = agent.screenshot()
        agent.ok("click", x=640, y=400)
        agent.ok("type", text="echo 'typed by an agent' > ~/typed.txt\n")
        changed = agent.ok("wait", until="change", timeout=10)["changed"]
        agent.ok("wait", until="settle", quiet=0.5, timeout=10)
        after = agent.screenshot()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        before.save(ARTIFACTS / "typed-before.png")
        after.save(ARTIFACTS / "typed-after.png")
        assert changed is True
        assert changed_pixels(before, after) > 200  # the typed line and its echo on the screen
        deadline = time.monotonic() + 10
        while (result := agent.exec("cat", "/home/user/typed.txt"))["exit_code"] != 0:
            assert time.monotonic() < deadline, result
            time.sleep(0.2)
        assert result["stdout"] == "typed by an agent\n"
        agent.ok("key", keys="ctrl+l")  # xterm clears: the screen changes again
        assert agent.ok("wait", until="change", timeout=10)["changed"] is True
        small = agent.screenshot(width=640)
        assert small.size == (640, 400)
        listed = agent.http.get(f"{agent.base}/windows").json()["windows"]
        xterms = [w for w in listed if w["app"] == "XTerm"]
        assert len(xterms) == 1, listed
        geometry = [xterms[0][k] for k in ("x", "y", "width", "height")]
        assert all(abs(a - b) <= 8 for a, b in zip(geometry, [0, 0, 1280, 800], strict=True))
        assert xterms[0]["title"] != ""


def test_exec_runs_as_the_user_with_a_timeout_and_an_output_limit(
    real_server: Server, desktop: str
) -> None:
    """exec answers exit code and output as the session user; time and output are bounded."""
    with Agent(real_server, desktop) as agent:
        who = agent.exec("id", "-un")
        assert (who["exit_code"], who["stdout"], who["timed_out"]) == (0, "user\n", False)
        failed = agent.exec("sh", "-c", "echo oops >&2; exit 3")
        assert (failed["exit_code"], failed["stderr"]) == (3, "oops\n")
        began = time.monotonic()
        slow = agent.exec("sleep", "30", timeout=1)
        assert slow["timed_out"] is True
        assert slow["exit_code"] == 124
        assert time.monotonic() - began < 10
        chatty = agent.exec("head", "-c", "5000000", "/dev/zero", max_output=1000)
        assert (len(chatty["stdout"]), chatty["truncated"]) == (1000, True)
        missing = agent.exec("no-such-command")
        assert missing["exit_code"] == 127
        files = f"{agent.base}/files"
        written = agent.http.put(files, json={"path": "/home/user/é.txt", "content": "ünï\n"})
        assert written.json() == {"path": "/home/user/é.txt", "size": 6}
        assert agent.exec("cat", "/home/user/é.txt")["stdout"] == "ünï\n"
        read = agent.http.get(files, params={"path": "/home/user/é.txt"}).json()
        assert (read["content"], read["size"]) == ("ünï\n", 6)
        absent = agent.http.get(files, params={"path": "/home/user/none"})
        assert absent.status_code == 404


def test_a_person_takes_control_and_gives_it_back(real_server: Server, desktop: str) -> None:
    """A control viewer's key makes the agent's next action 409; giving it back lets it on.
    A view token can take screenshots but not act."""
    with Agent(real_server, desktop) as agent:
        agent.ok("move", x=10, y=10)
        headers = {"Authorization": f"Bearer {real_server.token}"}
        tokens = f"{real_server.url}/v1/environments/{desktop}/display-token"
        control = httpx.post(tokens, json={"permission": "control"}, headers=headers).json()
        ws_url = real_server.url.replace("http://", "ws://") + control["websocket"]
        with connect(ws_url, subprotocols=["binary"]) as ws:  # type: ignore[list-item]
            _viewer_handshake(ws)
            ws.send(struct.pack("!BB2xI", 4, 1, 0xFFE1))  # a person presses and releases shift
            ws.send(struct.pack("!BB2xI", 4, 0, 0xFFE1))
            deadline = time.monotonic() + 10
            while (refused := agent.post("click", x=20, y=20)).status_code != 409:
                assert time.monotonic() < deadline, refused.text
                time.sleep(0.05)
            error = refused.json()["error"]
            assert error["code"] == "lease_held"
            assert error["holder"]["kind"] == "person"
            assert agent.http.post(f"{agent.base}/lease/release").json()["holder"] is None
            assert agent.ok("click", x=20, y=20)["cursor"] == {"x": 20, "y": 20}
        view = httpx.post(tokens, json={"permission": "view"}, headers=headers).json()["token"]
    with Agent(real_server, desktop, token=view) as watcher:
        assert watcher.screenshot(width=320).size == (320, 200)
        assert watcher.post("type", text="x").status_code == 403
        assert watcher.post("exec", argv=["true"]).status_code == 403


def _viewer_handshake(ws: Any) -> None:
    """RFB 3.8, security None, shared, through the display WebSocket; reads ServerInit."""
    buffer = b""

    def read(n: int) -> bytes:
        nonlocal buffer
        while len(buffer) < n:
            buffer += ws.recv(timeout=10)
        out, buffer = buffer[:n], buffer[n:]
        return out

    assert read(12) == b"RFB 003.008\n"
    ws.send(b"RFB 003.008\n")
    read(read(1)[0])
    ws.send(b"\x01")
    assert read(4) == b"\0\0\0\0"
    ws.send(b"\x01")
    read(20)
    read(struct.unpack("!I", read(4))[0])


def test_an_agent_over_mcp_creates_types_looks_and_removes(
    real_server: Server, desktop_spec: EnvironmentSpec
) -> None:
    """genos mcp drives a real desktop: create (a spec), type into xterm, the file appears
    (exec), the screenshot shows it, remove leaves nothing."""
    spec = {**dump(desktop_spec), "display": {"headless": True}}
    env = {"GENOS_URL": real_server.url, "GENOS_TOKEN": real_server.token}
    params = StdioServerParameters(command=str(BIN / "genos"), args=["mcp"], env=env)

    async def agent() -> str:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp:
            await mcp.initialize()

            async def call(tool: str, **args: Any) -> Any:
                result = await mcp.call_tool(tool, args)
                assert result.is_error is False, result.content
                return result

            made = json.loads((await call("create_environment", spec=spec)).content[0].text)
            assert made["state"] == "running"
            env_id = made["id"]
            await call("wait", env_id=env_id, until="settle", timeout=30)
            await call("click", env_id=env_id, x=640, y=400)
            await call("type_text", env_id=env_id, text="echo over mcp > ~/mcp.txt\n")
            deadline = time.monotonic() + 10
            while True:
                ran = await call("exec_command", env_id=env_id, argv=["cat", "/home/user/mcp.txt"])
                out = json.loads(ran.content[0].text)
                if out["exit_code"] == 0 or time.monotonic() > deadline:
                    break
            assert out["stdout"] == "over mcp\n"
            shot = (await call("screenshot", env_id=env_id, width=640)).content[1]
            image = Image.open(io.BytesIO(base64.b64decode(shot.data))).convert("RGB")
            assert image.size == (640, 400)
            assert len(image.getcolors(1 << 16) or []) > 2  # text on the terminal, not one colour
            gone = json.loads((await call("remove_environment", env_id=env_id)).content[0].text)
            assert gone["state"] == "terminated"
            return str(env_id)

    env_id = anyio.run(agent)
    assert host_traces(env_id, real_server.root) == NOTHING


GTK_APP = """
import os
from pathlib import Path
for proc in Path("/proc").iterdir():
    try:
        pairs = (proc / "environ").read_bytes().split(b"\\0")
    except OSError:
        continue
    found = [p for p in pairs if p.startswith(b"DBUS_SESSION_BUS_ADDRESS=")]
    if found:
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = found[0].split(b"=", 1)[1].decode()
        break
os.environ["DISPLAY"] = ":0"
import gi
gi.require_version("Gtk", "3.0")
from gi.repository import Gtk
window = Gtk.Window(title="genos a11y")
button = Gtk.Button(label="Press me")
button.connect("clicked", lambda _b: Path("/home/user/pressed").write_text("yes"))
window.add(button)
window.set_default_size(400, 200)
window.connect("destroy", Gtk.main_quit)
window.show_all()
Gtk.main()
"""
A11Y_PACKAGES = ["at-spi2-core", "python3-gi", "gir1.2-atspi-2.0", "gir1.2-gtk-3.0"]


def _find(node: dict[str, Any], role: str, name: str) -> dict[str, Any] | None:
    if node["role"] == role and node["name"] == name:
        return node
    for child in node["children"]:
        if (hit := _find(child, role, name)) is not None:
            return hit
    return None


def test_the_accessibility_tree_names_a_gtk_button_that_a_click_presses(
    real_server: Server,
) -> None:
    """A GTK app's button is in the focused window's AT-SPI tree with its extents; a click at
    their centre through the API presses it (the app writes a file)."""
    headers = {"Authorization": f"Bearer {real_server.token}"}
    wanted = {"name": "a11y", "display": {"headless": True}, "extra_packages": A11Y_PACKAGES}
    spec = dump(EnvironmentSpec.model_validate(wanted))
    body = {"spec": spec, "wait": True, "timeout": 300}
    made = httpx.post(f"{real_server.url}/v1/environments", json=body, headers=headers, timeout=330)
    env = made.json()
    assert env.get("state") == "running", made.text
    try:
        with Agent(real_server, env["id"]) as agent:
            launch = 'setsid -f python3 -c "$1" >/dev/null 2>&1 </dev/null'
            assert agent.exec("sh", "-c", launch, "sh", GTK_APP)["exit_code"] == 0
            deadline = time.monotonic() + 30
            while True:
                answer = agent.http.get(f"{agent.base}/accessibility")
                assert answer.status_code == 200, answer.text
                tree = answer.json()
                window = tree["window"]
                button = _find(window, "push button", "Press me") if window else None
                if button is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert button is not None, tree
            assert window["name"] == "genos a11y"
            x = button["x"] + button["width"] // 2
            y = button["y"] + button["height"] // 2
            agent.ok("click", x=x, y=y)
            deadline = time.monotonic() + 10
            while (pressed := agent.exec("cat", "/home/user/pressed"))["exit_code"] != 0:
                assert time.monotonic() < deadline, pressed
                time.sleep(0.2)
            assert pressed["stdout"] == "yes"
    finally:
        gone = httpx.delete(
            f"{real_server.url}/v1/environments/{env['id']}", headers=headers, timeout=120
        )
        assert gone.json()["state"] == "terminated"
        assert host_traces(env["id"], real_server.root) == NOTHING
