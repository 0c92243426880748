"""``genos mcp``: a real MCP client (the SDK's) speaks to the command over stdio, against a
real ``genos serve`` (fake runtime, real RFB display)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from PIL import Image

from tests.api.test_server import BIN, Server, start_server, stop

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``genos serve --driver fake`` on a free loopback port."""
    root = tmp_path_factory.mktemp("mcp") / "data"
    process, url = start_server(root, "--driver", "fake", "--cpus", "8", "--memory-mb", "16384")
    token = (root / "api" / "admin.token").read_text().strip()
    try:
        yield Server(url, root, token, process)
    finally:
        stop(process)


def params(server: Server) -> StdioServerParameters:
    return StdioServerParameters(
        command=str(BIN / "genos"),
        args=["mcp"],
        env={"GENOS_URL": server.url, "GENOS_TOKEN": server.token},
    )


def data(result: Any) -> Any:
    """The JSON a tool answered (its first text block)."""
    assert result.is_error is False, result.content
    return json.loads(result.content[0].text)


async def test_tools_list_and_a_create_type_screenshot_remove_round_trip(
    fake_server: Server,
) -> None:
    """tools/list names the tools; create, type, screenshot, remove work; refusals: tool errors."""
    async with (
        stdio_client(params(fake_server)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert {
            "compose", "create_environment", "list_environments", "remove_environment",
            "screenshot", "windows", "accessibility", "cursor", "click", "move", "drag", "scroll",
            "type_text", "key", "hold", "release", "wait", "exec_command", "lease", "ask_approval",
        } <= names  # fmt: skip
        env = data(
            await session.call_tool("create_environment", {"prompt": "a desktop with xterm"})
        )
        assert env["state"] == "running"
        listed = data(await session.call_tool("list_environments", {}))
        assert env["id"] in [e["id"] for e in (listed if isinstance(listed, list) else [listed])]
        typed = data(await session.call_tool("type_text", {"env_id": env["id"], "text": "hi\n"}))
        assert typed["ok"] is True
        clicked = data(await session.call_tool("click", {"env_id": env["id"], "x": 7, "y": 8}))
        assert clicked["cursor"] == {"x": 7, "y": 8}
        shot = await session.call_tool("screenshot", {"env_id": env["id"], "width": 640})
        assert shot.is_error is False
        note, image = shot.content
        assert note.text == "screen 1280x800; scale 2 (screen x = image x * scale)"
        assert image.mime_type == "image/png"
        assert Image.open(io.BytesIO(base64.b64decode(image.data))).size == (640, 400)
        off = await session.call_tool("click", {"env_id": env["id"], "x": 5000, "y": 1})
        assert off.is_error is True
        assert (
            off.content[0].text
            == "Error executing tool click: (5000, 1) is off the 1280x800 screen"
        )
        unknown = await session.call_tool("key", {"env_id": env["id"], "keys": "hyper+x"})
        assert unknown.content[0].text == "Error executing tool key: unknown key 'hyper'"
        gone = data(await session.call_tool("remove_environment", {"env_id": env["id"]}))
        assert gone["state"] == "terminated"
