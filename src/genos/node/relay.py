"""A node's display relay: a control plane's gateway reaches an environment's display here.

Viewers never connect to a node. They connect to the control plane's
gateway, which checks their token, enforces the display policy (view-only,
clipboard direction), records and adapts the stream as on one host, and
opens the display through this relay. So the gateway's policy is in one
place, nodes hold no user secrets, and a viewer needs one address.

The relay is TLS with a certificate on both ends from the cluster's CA, and
takes only clients whose certificate says ``control-plane``
(:mod:`genos.cluster.pki`). A client sends one line, ``GENOS-RELAY <env_id>
<protocol>``; the relay answers ``OK`` and then copies bytes both ways
between the connection and the environment's socket (``vnc``, ``spice`` or
``rdp``), or ``ERR <reason>`` and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path

from genos.cluster import pki
from genos.cluster.pki import Identity
from genos.errors import GenOSError
from genos.ids import is_env_id
from genos.runtime.driver import Driver, endpoint

log = logging.getLogger("genos.node.relay")
HELLO = b"GENOS-RELAY"
PROTOCOLS = ("vnc", "spice", "rdp")
LINE_LIMIT = 128
HELLO_TIMEOUT = 5.0


def server_context(identity: Identity) -> ssl.SSLContext:
    """TLS for the relay: this node's certificate; clients must show one of the cluster's."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(identity.ca))
    context.load_cert_chain(str(identity.cert), str(identity.key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(identity: Identity) -> ssl.SSLContext:
    """TLS towards a relay: the control plane's certificate; the node's is checked by the CA."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(identity.ca))
    context.load_cert_chain(str(identity.cert), str(identity.key))
    context.check_hostname = False  # the CA is the cluster's own; nodes are named by the CA
    return context


class Relay:
    """The relay's server: :meth:`start` listens, :meth:`aclose` stops."""

    def __init__(self, driver: Driver, identity: Identity, host: str, port: int) -> None:
        self.driver, self.identity, self.host, self.port = driver, identity, host, port
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on ``host:port`` (0: any free port; :attr:`port` says which)."""
        self.server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=server_context(self.identity)
        )
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        """Stop listening (connections in progress end with their peers)."""
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target = await self._hello(reader, writer)
            if target is None:
                return
            try:
                env_reader, env_writer = await asyncio.open_unix_connection(str(target))
            except OSError as exc:
                writer.write(f"ERR the display is not there: {exc.strerror or exc}\n".encode())
                return
            writer.write(b"OK\n")
            await _pipe(reader, writer, env_reader, env_writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("relay connection ended: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Path | None:
        peer = writer.get_extra_info("ssl_object")
        der = peer.getpeercert(binary_form=True) if peer is not None else None
        if not der or pki.role_of(der) != "control-plane":
            writer.write(b"ERR only a control plane may open displays\n")
            return None
        line = await asyncio.wait_for(reader.readuntil(b"\n"), HELLO_TIMEOUT)
        parts = line[:LINE_LIMIT].decode("ascii", "replace").split()
        if len(parts) != 3 or parts[0] != HELLO.decode() or parts[2] not in PROTOCOLS:
            writer.write(b"ERR bad hello\n")
            return None
        env_id, protocol = parts[1], parts[2]
        if not is_env_id(env_id):
            writer.write(b"ERR bad environment id\n")
            return None
        try:
            target = endpoint(self.driver, env_id, protocol)
        except GenOSError as exc:
            writer.write(f"ERR {exc}\n".encode()[:200])
            return None
        return target if isinstance(target, Path) else None


async def _pipe(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(1 << 16):
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError, RuntimeError):
            dst.write_eof() if dst.can_write_eof() else dst.close()

    tasks = [
        asyncio.create_task(copy(a_reader, b_writer)),
        asyncio.create_task(copy(b_reader, a_writer)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        b_writer.close()
        with contextlib.suppress(Exception):
            await b_writer.wait_closed()


async def open_relay(
    host: str, port: int, env_id: str, protocol: str, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open ``env_id``'s ``protocol`` display through a node's relay.

    Raises:
        OSError: the relay cannot be reached or refused (its reason in the message).
    """
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    writer.write(f"{HELLO.decode()} {env_id} {protocol}\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\n"), HELLO_TIMEOUT)
    if answer != b"OK\n":
        writer.close()
        raise ConnectionRefusedError(answer.decode("ascii", "replace").strip()[:200])
    return reader, writer
