"""Listeners: the token preamble on TCP, optional TLS, and the loopback-only local port."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from genos.errors import InputError, NotFoundError
from genos.gateway import (
    ConnectionRegistry,
    Grant,
    Permission,
    ProxyOptions,
    TokenAuthority,
    serve_local,
    serve_tcp,
    token_preamble,
)
from genos.gateway.fake import FakeDisplay
from genos.gateway.server_messages import UpdateRelayed
from genos.gateway.streams import AsyncioStream
from genos.spec import Security
from tests.gateway.helpers import run
from tests.gateway.rfbclient import Viewer

AUTHORITY = TokenAuthority(b"s" * 32)


@asynccontextmanager
async def listening(
    tmp: Path, tls: ssl.SSLContext | None = None, registry: ConnectionRegistry | None = None
) -> AsyncIterator[int]:
    """A fake display on a unix socket behind serve_tcp with the token preamble."""
    fake = FakeDisplay()
    sock = tmp / "rfb.sock"
    display = await fake.serve_unix(sock)

    def resolver(env_id: str) -> Path:
        if env_id != "env-1":
            raise NotFoundError("environment", env_id)
        return sock

    options = ProxyOptions(registry=registry if registry is not None else ConnectionRegistry())
    authorize = token_preamble(AUTHORITY, lambda _env: Security(), timeout=5)
    server = await serve_tcp("127.0.0.1", 0, resolver, authorize, ssl=tls, options=options)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        display.close()
        await server.wait_closed()
        await display.wait_closed()


async def preamble_viewer(port: int, line: bytes, tls: ssl.SSLContext | None = None) -> Viewer:
    """Connect, send the preamble line, return the (not yet handshaken) viewer."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1" if tls else None
    )
    viewer = Viewer(AsyncioStream(reader, writer))
    await viewer.stream.write(line)
    return viewer


def test_token_preamble_admits_a_valid_token(tmp_path: Path) -> None:
    """'GENOS env token' with a valid token leads to a streaming RFB session."""

    async def go() -> None:
        async with listening(tmp_path) as port:
            token = AUTHORITY.issue("env-1", "alice", Permission.VIEW)
            viewer = await preamble_viewer(port, f"GENOS env-1 {token}\n".encode())
            init = await viewer.handshake()
            assert (init.width, init.height, init.name) == (64, 48, b"fake display")
            await viewer.set_encodings(0)
            await viewer.request()
            assert isinstance(await viewer.next_message(), UpdateRelayed)
            await viewer.close()

    run(go())


@pytest.mark.parametrize(
    "line",
    [
        b"GENOS env-2 {token}\n",
        b"GENOS env-1 forged.token\n",
        b"HELLO\n",
        b"GENOS env-1\n",
    ],
)
def test_bad_preamble_is_closed_before_rfb(tmp_path: Path, line: bytes) -> None:
    """A wrong environment, a bad token or a bad line: closed with no RFB byte sent."""

    async def go() -> bytes:
        async with listening(tmp_path) as port:
            token = AUTHORITY.issue("env-1", "alice", Permission.CONTROL)
            viewer = await preamble_viewer(port, line.replace(b"{token}", token.encode()))
            reader = viewer.stream._reader  # type: ignore[attr-defined]
            data: bytes = await reader.read()
            await viewer.close()
            return data

    assert run(go()) == b""


def test_unknown_environment_is_closed(tmp_path: Path) -> None:
    """A valid token for an environment the resolver does not know is closed quietly."""

    async def go() -> bytes:
        async with listening(tmp_path) as port:
            token = AUTHORITY.issue("env-9", "alice", Permission.CONTROL)
            viewer = await preamble_viewer(port, f"GENOS env-9 {token}\n".encode())
            data: bytes = await viewer.stream._reader.read()  # type: ignore[attr-defined]
            await viewer.close()
            return data

    assert run(go()) == b""


def _tls_pair(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed server context for 127.0.0.1 and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "genos-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_tls_listener(tmp_path: Path) -> None:
    """With an SSLContext the listener speaks TLS; the session inside is the same."""
    server_tls, client_tls = _tls_pair(tmp_path)

    async def go() -> None:
        async with listening(tmp_path, server_tls) as port:
            token = AUTHORITY.issue("env-1", "alice", Permission.VIEW)
            viewer = await preamble_viewer(port, f"GENOS env-1 {token}\n".encode(), client_tls)
            init = await viewer.handshake()
            assert init.width == 64
            await viewer.close()

    run(go())


def test_serve_local_binds_loopback_only() -> None:
    """A pre-authorised port on a non-loopback address is refused."""
    grant = Grant("env-1", "alice", Permission.CONTROL)

    async def go() -> None:
        with pytest.raises(InputError, match="loopback only"):
            await serve_local(grant, lambda _e: Path("/x"), host="0.0.0.0")  # noqa: S104 - the point

    run(go())
