"""The streaming gateway: the only way a viewer reaches an environment's display.

The gateway terminates RFB on both sides and treats both as untrusted, the
environment most of all. How the package is laid out:

* ``streams``: the :class:`ByteStream` protocol and its adapters (asyncio
  streams, message transports such as a WebSocket, an in-memory pair).
* ``rfb``: message types, encodings, pixel formats and limits (RFC 6143).
* ``handshake``: the gateway as server to the viewer (3.8, security None) and
  as client to the environment (None only, always shared).
* ``client_messages`` / ``server_messages`` / ``tight``: strict, bounded
  parsers of each direction; what they pass on is re-encoded or length-checked.
* ``policy``: :class:`Grant` (control/view, clipboard direction, recording).
* ``tokens``: signed short-lived tokens, the key file, revocation stores.
* ``adaptive``: the per-viewer controller of quality, compression and frame rate.
* ``ogg``: the sound channel's Ogg framing, checked page by page; ``video``: video
  mode's frame framing and its per-viewer controller of bitrate and frame rate
  (the codecs themselves run inside the environment).
* ``metrics``: live connections and their figures; ``recording``: stream recordings.
* ``session``: :func:`proxy`, one viewer to one display; ``pumps``: its three
  tasks; ``server``: TCP and loopback listeners.
* ``fake``: :class:`~genos.gateway.fake.FakeDisplay`, an in-process RFB server
  for tests of the gateway's users (no Xvnc needed).
* ``desktop``: :class:`~genos.gateway.desktop.Desktop`, the gateway as an RFB
  client of its own (a framebuffer copy and checked input) for software agents;
  ``keys``: key names and text as keysyms; ``lease``: who has an environment's
  keyboard and mouse (agents or a person's control viewer).

A web route mounts it as::

    grant = await grant_for_token(authority, token, env_id, security_of)
    await websocket.accept(subprotocol="binary")
    await proxy(websocket_stream(websocket), await resolve_target(resolver, env_id), grant)
"""

from __future__ import annotations

import logging

from genos.gateway.adaptive import AdaptiveController, Levels, LinkStats, Tuning
from genos.gateway.metrics import REGISTRY, Connection, ConnectionRegistry, ConnectionStats
from genos.gateway.policy import Grant, Permission
from genos.gateway.recording import Recorder, read_recording
from genos.gateway.rfb import Limits
from genos.gateway.server import (
    Authorize,
    Resolver,
    SecurityLookup,
    grant_for_token,
    resolve_target,
    serve_local,
    serve_tcp,
    token_preamble,
)
from genos.gateway.session import Closed, ProxyOptions, proxy
from genos.gateway.streams import (
    AsyncioStream,
    ByteStream,
    MemoryStream,
    MessageStream,
    memory_pair,
    websocket_stream,
)
from genos.gateway.tokens import (
    FileRevocations,
    MemoryRevocations,
    RevocationStore,
    TokenAuthority,
    TokenClaims,
    load_or_create_key,
)

logging.getLogger("genos.gateway").addHandler(logging.NullHandler())

__all__ = [
    "REGISTRY",
    "AdaptiveController",
    "AsyncioStream",
    "Authorize",
    "ByteStream",
    "Closed",
    "Connection",
    "ConnectionRegistry",
    "ConnectionStats",
    "FileRevocations",
    "Grant",
    "Levels",
    "Limits",
    "LinkStats",
    "MemoryRevocations",
    "MemoryStream",
    "MessageStream",
    "Permission",
    "ProxyOptions",
    "Recorder",
    "Resolver",
    "RevocationStore",
    "SecurityLookup",
    "TokenAuthority",
    "TokenClaims",
    "Tuning",
    "grant_for_token",
    "load_or_create_key",
    "memory_pair",
    "proxy",
    "read_recording",
    "resolve_target",
    "serve_local",
    "serve_tcp",
    "token_preamble",
    "websocket_stream",
]
