"""Behind a reverse proxy: the client's address from ``X-Forwarded-For``, from trusted proxies only.

Anyone can send ``X-Forwarded-For``; believing it from everyone would let a
client pick the address that sign-in throttling and the audit log see. So
the header is read only when the peer is one of the operator's proxies
(``genos serve --trusted-proxy ADDR``, an address or a network), and then
from the right: each proxy appends the address it saw, so the client is the
right-most entry that is not itself a trusted proxy (a client may put
anything to the left of it). ``X-Forwarded-Proto`` (``https``/``http``)
from a trusted proxy sets the scheme the app sees (``wss``/``ws`` for
WebSockets). A header that does not parse leaves the peer as it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from genos.errors import InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse ``--trusted-proxy`` values (``10.0.0.5``, ``10.0.0.0/8``, ``::1``).

    Raises:
        InputError: a value is not an address or network.
    """
    parsed = []
    for value in values:
        try:
            parsed.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise InputError(f"--trusted-proxy: not an address or network: {value!r}") from exc
    return tuple(parsed)


class ForwardedFor:
    """ASGI middleware: the client address (and scheme) as the trusted proxy saw them.

    Args:
        app: the application.
        trusted: addresses or networks of the proxies (see :func:`networks`).
    """

    def __init__(self, app: ASGIApp, trusted: Sequence[str]) -> None:
        self.app = app
        self.trusted = networks(trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client(self, peer: str, header: str) -> str:
        """The client behind ``peer`` given its ``X-Forwarded-For`` value."""
        if not self._is_trusted(peer):
            return peer
        hops = [hop.strip() for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in {"http", "websocket"} and scope.get("client"):
            scope = self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> Scope:
        peer = scope["client"][0]
        if not self._is_trusted(peer):
            return scope
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name.lower(), []).append(value)
        forwarded = b",".join(headers.get(b"x-forwarded-for", [])).decode("latin-1")
        changed: dict[str, Any] = {}
        if forwarded:
            client = self.client(peer, forwarded)
            if client != peer:
                changed["client"] = (client, 0)  # the client's own port is not forwarded
        proto = b"".join(headers.get(b"x-forwarded-proto", [])[-1:]).decode("latin-1").strip()
        if proto in {"http", "https"}:
            secure = proto == "https"
            if scope["type"] == "websocket":
                changed["scheme"] = "wss" if secure else "ws"
            else:
                changed["scheme"] = proto
        return {**scope, **changed} if changed else scope
