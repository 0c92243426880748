"""Listeners that hand authorised viewers to :func:`~genos.gateway.session.proxy`.

* :func:`serve_tcp` accepts native VNC viewers (optionally over TLS); an
  ``authorize`` callable turns each raw connection into a :class:`Grant`
  before any RFB byte is exchanged, e.g. :func:`token_preamble`, which reads
  one ``GENOS <env_id> <token>`` line first (what ``genos connect`` sends).
* :func:`serve_local` is the loopback port ``genos connect`` opens for a viewer
  that cannot send a token: every connection on it gets one pre-authorised grant.

The display socket is always found by the ``resolver`` from the grant's
environment id; nothing a client sends can choose it.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from genos.errors import (
    InputError,
    NotFoundError,
    ProtocolError,
    StreamClosedError,
    TokenError,
)
from genos.gateway.policy import Grant
from genos.gateway.session import ProxyOptions, proxy
from genos.gateway.streams import AsyncioStream, ByteStream
from genos.gateway.tokens import TokenAuthority
from genos.spec import EnvironmentSpec, Security

log = logging.getLogger("genos.gateway")

Resolver = Callable[[str], Path | Awaitable[Path]]
# The spec's security section, or the whole spec (then the display's resize limits apply too).
Policy = Security | EnvironmentSpec
SecurityLookup = Callable[[str], Policy | Awaitable[Policy]]
Authorize = Callable[[ByteStream], Awaitable[Grant]]

PREAMBLE_MAX = 4096
T = TypeVar("T")


async def _maybe_await(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


async def resolve_target(resolver: Resolver, env_id: str) -> Path:
    """Ask the resolver for an environment's display socket.

    Args:
        resolver: env id -> socket path (sync or async); raises NotFoundError.
        env_id: the environment.

    Returns:
        The socket path.
    """
    return await _maybe_await(resolver(env_id))


async def grant_for_token(
    authority: TokenAuthority, token: str, env_id: str, security: SecurityLookup
) -> Grant:
    """Check a token for ``env_id`` and build the viewer's grant.

    Args:
        authority: the token authority.
        token: the token the client presented.
        env_id: the environment the client asked for.
        security: env id -> the spec's ``security`` section (sync or async).

    Returns:
        The grant.

    Raises:
        TokenError: the token is refused (its ``reason`` says why).
    """
    claims = authority.verify(token, env_id)
    sec: Policy = await _maybe_await(security(env_id))
    return Grant.from_security(env_id, claims.user_id, claims.permission, sec, claims.token_id)


def token_preamble(
    authority: TokenAuthority, security: SecurityLookup, timeout: float = 10.0
) -> Authorize:
    """An ``authorize`` for :func:`serve_tcp` reading ``GENOS <env_id> <token>\\n`` first.

    Args:
        authority: checks the token.
        security: env id -> the spec's ``security`` section.
        timeout: seconds the client has to send the line.

    Returns:
        The authorize callable.
    """

    async def authorize(stream: ByteStream) -> Grant:
        async with asyncio.timeout(timeout):
            line = bytearray()
            while not line.endswith(b"\n"):
                if len(line) >= PREAMBLE_MAX:
                    raise ProtocolError("client", "token preamble too long")
                line += await stream.read_exact(1)
        words = line.decode("ascii", "replace").split()
        if len(words) != 3 or words[0] != "GENOS":
            raise ProtocolError("client", "expected 'GENOS <env_id> <token>'")
        return await grant_for_token(authority, words[2], words[1], security)

    return authorize


async def serve_tcp(
    host: str,
    port: int,
    resolver: Resolver,
    authorize: Authorize,
    *,
    ssl: _ssl.SSLContext | None = None,
    options: ProxyOptions | None = None,
) -> asyncio.Server:
    """Listen for native VNC viewers on TCP (TLS if ``ssl`` is given).

    Args:
        host: address to bind.
        port: port to bind (0: any free one).
        resolver: env id -> display socket.
        authorize: raw stream -> grant; runs before any RFB byte is exchanged.
        ssl: server TLS context, or None for plain TCP.
        options: passed to :func:`proxy`.

    Returns:
        The listening server (close it with ``close()`` + ``await wait_closed()``).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = AsyncioStream(reader, writer)
        try:
            await _serve_one(stream, resolver, authorize, options)
        except Exception:  # one viewer's failure must never reach the listener
            log.exception("gateway connection failed")
        finally:
            await stream.close()

    return await asyncio.start_server(handle, host, port, ssl=ssl)


async def _serve_one(
    stream: ByteStream, resolver: Resolver, authorize: Authorize, options: ProxyOptions | None
) -> None:
    try:
        grant = await authorize(stream)
        target = await resolve_target(resolver, grant.env_id)
    except (TokenError, NotFoundError, ProtocolError, StreamClosedError, TimeoutError) as exc:
        reason = exc.reason if isinstance(exc, TokenError | ProtocolError) else type(exc).__name__
        log.info("viewer refused: %s", reason)
        return
    await proxy(stream, target, grant, options)


async def serve_local(
    grant: Grant,
    resolver: Resolver,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    options: ProxyOptions | None = None,
) -> tuple[asyncio.Server, int]:
    """Open a loopback port where every VNC viewer gets ``grant`` (for ``genos connect``).

    Args:
        grant: the already-authorised grant.
        resolver: env id -> display socket.
        host: a loopback address.
        port: port to bind (0: any free one).
        options: passed to :func:`proxy`.

    Returns:
        The server and the port it listens on.

    Raises:
        InputError: ``host`` is not a loopback address (the port needs no token).
    """
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InputError(f"serve_local binds loopback only, not {host!r}")

    async def authorize(_stream: ByteStream) -> Grant:
        return grant

    server = await serve_tcp(host, port, resolver, authorize, options=options)
    bound = server.sockets[0].getsockname()[1]
    log.info("local port %d for %s (%s)", bound, grant.env_id, grant.permission)
    return server, int(bound)
