"""``genos mcp``: the Model Context Protocol over stdio, for agents.

Tools: compose and create an environment from a sentence, list and remove
environments, and every computer action (screenshot, windows, accessibility, cursor, click, move,
drag, scroll, type, key, hold, release, wait, exec, lease, approvals). Each
tool is one call of the HTTP API through :class:`~genos.client.Client`
(``GENOS_URL`` and ``GENOS_TOKEN``, as for the CLI), run on a worker thread
so a long ``wait`` does not stall the protocol. A refusal (bad input, a
person holding the desktop, a view token) is a tool error with the server's
one-line message, never a crash.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from genos.client import Client
from genos.client_computer import Computer
from genos.errors import GenOSError

Run = Callable[..., Awaitable[Any]]
INSTRUCTIONS = (
    "GenOS makes sandboxed Linux desktops from a sentence. create_environment, then look with "
    "screenshot (coordinates: image pixels times the scale it reports) and act with click, "
    "type_text, key and friends; exec runs a command inside. A person may take the desktop "
    "over: actions then fail with lease_held until they give it back (lease waits for that)."
)


def build(client: Client) -> MCPServer:
    """The server with every tool, calling the API through ``client``."""
    server: MCPServer = MCPServer("genos", instructions=INSTRUCTIONS)

    async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
        except GenOSError as exc:
            raise ToolError(str(exc).splitlines()[0] if str(exc) else exc.code) from exc

    def desk(env_id: str) -> Computer:
        return Computer(client, env_id)

    @server.tool()
    async def compose(prompt: str) -> Any:
        """Turn a sentence into an environment spec (or the questions it raises)."""
        return await run(client.call, "POST", "/v1/compose", {"prompt": prompt})

    @server.tool()
    async def create_environment(
        prompt: str | None = None, spec: dict[str, Any] | None = None, wait: bool = True
    ) -> Any:
        """Create an environment from a sentence (or a genos/v1 spec, e.g. one compose gave);
        with wait, answer once it runs."""
        if (prompt is None) == (spec is None):
            raise ToolError("give a prompt or a spec")
        body: dict[str, Any] = {"prompt": prompt} if spec is None else {"spec": spec}
        body |= {"wait": wait, "timeout": 300}
        env = await run(client.call, "POST", "/v1/environments", body, timeout=330)
        return _brief(env) if "id" in env else env

    @server.tool()
    async def list_environments() -> Any:
        """Your environments: id, name, state."""
        page = await run(client.call, "GET", "/v1/environments")
        return [_brief(env) for env in page["items"]]

    @server.tool()
    async def remove_environment(env_id: str) -> Any:
        """End an environment and remove everything it had."""
        return _brief(await run(client.call, "DELETE", f"/v1/environments/{env_id}", timeout=120))

    _computer_tools(server, run, desk)
    return server


def _computer_tools(server: MCPServer, run: Run, desk: Callable[[str], Computer]) -> None:
    """Every computer action as a tool."""

    @server.tool(structured_output=False)
    async def screenshot(env_id: str, width: int | None = 1024) -> list[Any]:
        """The screen as PNG, scaled to ``width`` (None: full size), and its scale."""
        shot = await run(desk(env_id).screenshot, width)
        note = (
            f"screen {shot.screen_width}x{shot.screen_height}; scale {shot.scale:g} "
            "(screen x = image x * scale)"
        )
        return [note, Image(data=shot.png, format="png")]

    @server.tool()
    async def windows(env_id: str) -> Any:
        """The desktop's windows: title, app, geometry in screen pixels, focus."""
        return await run(desk(env_id).windows)

    @server.tool()
    async def accessibility(env_id: str) -> Any:
        """The focused window's accessibility tree (role, name, screen extents, children):
        act by element, clicking an element's centre."""
        return await run(desk(env_id).accessibility)

    @server.tool()
    async def cursor(env_id: str) -> Any:
        """Where the pointer is, in screen pixels."""
        return await run(desk(env_id).cursor)

    @server.tool()
    async def click(
        env_id: str,
        x: int,
        y: int,
        button: Literal["left", "middle", "right"] = "left",
        count: int = 1,
    ) -> Any:
        """Click at screen pixel (x, y); count 2 double-clicks."""
        return await run(desk(env_id).click, x, y, button, count)

    @server.tool()
    async def move(env_id: str, x: int, y: int) -> Any:
        """Move the pointer to screen pixel (x, y)."""
        return await run(desk(env_id).move, x, y)

    @server.tool()
    async def drag(env_id: str, path: list[tuple[int, int]]) -> Any:
        """Press at the first point, move through the rest, release at the last."""
        return await run(desk(env_id).drag, path)

    @server.tool()
    async def scroll(env_id: str, dy: int = 0, dx: int = 0) -> Any:
        """Scroll where the pointer is: dy clicks down (negative up), dx right."""
        return await run(desk(env_id).scroll, dy, dx)

    @server.tool()
    async def type_text(env_id: str, text: str) -> Any:
        """Type text (newline presses Return)."""
        return await run(desk(env_id).type, text)

    @server.tool()
    async def key(env_id: str, keys: str) -> Any:
        """Press a key or combination: Return, Escape, ctrl+l, alt+F4, shift+Tab."""
        return await run(desk(env_id).key, keys)

    @server.tool()
    async def hold(env_id: str, keys: str | None = None, button: str | None = None) -> Any:
        """Keep keys and/or a mouse button pressed until release."""
        return await run(desk(env_id).hold, keys, button)

    @server.tool()
    async def release(env_id: str, keys: str | None = None, button: str | None = None) -> Any:
        """Release held keys and buttons (all when none is named)."""
        return await run(desk(env_id).release, keys, button)

    @server.tool()
    async def wait(
        env_id: str, until: Literal["change", "settle"] = "change", timeout: float = 10.0
    ) -> Any:
        """Wait for the screen to change, or to settle."""
        return await run(desk(env_id).wait, until, timeout)

    @server.tool()
    async def exec_command(env_id: str, argv: list[str], timeout: float = 30.0) -> Any:
        """Run a command inside the environment as its user: exit code, stdout, stderr."""
        return await run(desk(env_id).exec, argv, timeout)

    @server.tool()
    async def ask_approval(env_id: str, description: str, timeout: float = 120.0) -> Any:
        """Ask the person watching to approve a step; wait for approved/declined/timed_out."""
        return await run(desk(env_id).ask_approval, description, timeout)

    @server.tool()
    async def lease(env_id: str, version: int | None = None, wait: float = 0) -> Any:
        """Who has the keyboard and mouse; with version and wait, answer once it changes."""
        return await run(desk(env_id).lease, version, wait)


def _brief(env: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "state", "state_reason", "url")
    return {k: env[k] for k in keys if k in env}


def serve_stdio(client: Client) -> None:
    """Speak MCP on stdin/stdout until the agent closes it."""
    build(client).run("stdio")
