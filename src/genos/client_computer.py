"""The computer API from Python: an agent's view of one environment's desktop.

::

    from genos.client import Client
    from genos.client_computer import Computer

    with Client() as client:
        desk = Computer(client, env_id)
        shot = desk.screenshot(width=1024)        # PNG bytes, and the scale back
        desk.click(int(400 * shot.scale), int(300 * shot.scale))
        desk.type("hello\\n")
        desk.wait(until="change")
        print(desk.exec(["cat", "/home/user/notes.txt"])["stdout"])

Errors are the client's: a :class:`~genos.errors.RemoteError` with the
server's code (``lease_held`` when a person has the desktop, ``forbidden``
for a view token), a :class:`~genos.errors.RemoteInputError` for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genos.client import Client, decode


@dataclass(frozen=True)
class Screenshot:
    """A PNG and how it maps to the screen: screen x = image x * ``scale``."""

    png: bytes
    scale: float
    screen_width: int
    screen_height: int


class Computer:
    """One environment's ``/v1/environments/{id}/computer/...`` through a :class:`Client`."""

    def __init__(self, client: Client, env_id: str) -> None:
        self.client = client
        self.env_id = env_id
        self.base = f"/v1/environments/{env_id}/computer"

    def _post(self, action: str, **body: Any) -> Any:
        sent = {k: v for k, v in body.items() if v is not None}
        return self.client.call("POST", f"{self.base}/{action}", sent, timeout=150)

    def screen(self) -> dict[str, Any]:
        """``{"width", "height", "name"}``."""
        answer: dict[str, Any] = self.client.call("GET", f"{self.base}/screen")
        return answer

    def screenshot(self, width: int | None = None, height: int | None = None) -> Screenshot:
        """The screen as PNG, scaled down to fit ``width`` x ``height`` if given."""
        status, data, headers = self.client.fetch(
            "GET", f"{self.base}/screenshot", width=width, height=height
        )
        if status != 200:
            decode(status, data)  # raises the server's error
        return Screenshot(
            data,
            float(headers.get("x-scale", "1")),
            int(headers.get("x-screen-width", "0")),
            int(headers.get("x-screen-height", "0")),
        )

    def windows(self) -> Any:
        """``{"windows": [{"id", "title", "app", "x", "y", "width", "height", "focused"}]}``."""
        return self.client.call("GET", f"{self.base}/windows", timeout=60)

    def accessibility(self) -> Any:
        """The focused window's AT-SPI tree: ``{"app", "window": {"role", "name", "x", "y",
        "width", "height", "focused", "children"}}``."""
        return self.client.call("GET", f"{self.base}/accessibility", timeout=60)

    def cursor(self) -> dict[str, int]:
        """``{"x", "y"}``: where the pointer is."""
        answer: dict[str, int] = self.client.call("GET", f"{self.base}/cursor")
        return answer

    def move(self, x: int, y: int) -> Any:
        """Move the pointer."""
        return self._post("move", x=x, y=y)

    def click(
        self, x: int | None = None, y: int | None = None, button: str = "left", count: int = 1
    ) -> Any:
        """Click (at the pointer when ``x``, ``y`` are not given)."""
        return self._post("click", x=x, y=y, button=button, count=count)

    def drag(self, path: list[tuple[int, int]], button: str = "left") -> Any:
        """Press at the first point, move through the rest, release at the last."""
        return self._post("drag", path=[list(p) for p in path], button=button)

    def scroll(self, dy: int = 0, dx: int = 0, x: int | None = None, y: int | None = None) -> Any:
        """Scroll ``dy`` clicks down (negative: up), ``dx`` right."""
        return self._post("scroll", x=x, y=y, dx=dx, dy=dy)

    def type(self, text: str) -> Any:
        """Type text."""
        return self._post("type", text=text)

    def key(self, keys: str) -> Any:
        """Press a key or combination (``ctrl+l``, ``Return``)."""
        return self._post("key", keys=keys)

    def hold(self, keys: str | None = None, button: str | None = None) -> Any:
        """Press and keep down keys and/or a mouse button."""
        return self._post("hold", keys=keys, button=button)

    def release(self, keys: str | None = None, button: str | None = None) -> Any:
        """Release held keys/buttons (all when nothing is named)."""
        return self._post("release", keys=keys, button=button)

    def wait(self, until: str = "change", timeout: float = 10.0, quiet: float = 0.5) -> Any:
        """Wait for the screen to change (or settle); ``{"changed", "waited"}``."""
        return self._post("wait", until=until, timeout=timeout, quiet=quiet)

    def exec(self, argv: list[str], timeout: float = 30.0, max_output: int = 65536) -> Any:
        """Run a command as the environment's user: ``{"exit_code", "stdout", "stderr", ...}``."""
        return self._post("exec", argv=argv, timeout=timeout, max_output=max_output)

    def lease(self, version: int | None = None, wait: float = 0) -> Any:
        """Who holds the keyboard and mouse; with ``version`` and ``wait``, once it changes."""
        return self.client.call(
            "GET", f"{self.base}/lease", version=version, wait=wait or None, timeout=wait + 30
        )

    def ask_approval(self, description: str, timeout: float = 120.0) -> Any:
        """Ask a person to approve a step; ``status`` is approved, declined or timed_out."""
        return self.client.call(
            "POST", f"{self.base}/approvals", {"description": description, "timeout": timeout},
            timeout=timeout + 30,
        )  # fmt: skip

    def give_back(self) -> Any:
        """Free the lease (a person handing control back)."""
        return self._post("lease/release")
