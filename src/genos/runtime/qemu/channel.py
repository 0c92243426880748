"""The channel of a live migration: sockets QEMU is handed, and its TLS files.

QEMU runs in the environment's network namespace, from which the other node
cannot be reached, so the driver opens the TCP sockets in the host's
namespace (the target's listener, the source's connection) and hands them to
QEMU as descriptors (QMP ``getfd``), as GenOS hands QEMU its tap.

gnutls reads a directory of fixed names (``ca-cert.pem``, ``server-cert.pem``,
``server-key.pem``; ``client-...`` on the source), which QEMU's own user must
be able to read, while the node's key is root's: copies are written to
``<run>/<id>/qemu/migrate-tls`` (0700 and 0400, QEMU's user), loaded into
QEMU by ``object-add`` and deleted at once, so the key's copy lives for
milliseconds (:mod:`genos.runtime.qemu.migrate` does so).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path
from typing import Literal, Protocol

from qemu.qmp import QMPClient, QMPError

from genos.errors import ExternalError, InputError
from genos.runtime.qemu import qmp as qemuqmp
from genos.runtime.qemu.host import VmPaths

CREDS_ID = "genos-migrate-tls"
FD_NAME = "genos-migrate"
TLS_DIR = "migrate-tls"
CONNECT_TIMEOUT = 10.0


class TlsIdentity(Protocol):
    """A member's certificate, key and CA (:class:`genos.cluster.pki.Identity` is one)."""

    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...
    @property
    def ca(self) -> Path: ...


def write_tls(paths: VmPaths, uid: int, identity: TlsIdentity, endpoint: str) -> Path:
    """Copies of ``identity`` under gnutls's names, readable by QEMU's user only.

    Raises:
        InputError: a certificate or key cannot be read.
    """
    directory = paths.private / TLS_DIR
    remove_tls(paths)
    directory.mkdir(mode=0o700)
    os.chown(directory, uid, uid)
    files = {"ca-cert.pem": identity.ca, f"{endpoint}-cert.pem": identity.cert,
             f"{endpoint}-key.pem": identity.key}  # fmt: skip
    for name, source in files.items():
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            remove_tls(paths)
            raise InputError(f"cannot read {source} for the migration: {exc.strerror}") from exc
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chown(directory / name, uid, uid)
    return directory


def remove_tls(paths: VmPaths) -> None:
    """Remove the TLS copies (nothing if there are none)."""
    shutil.rmtree(paths.private / TLS_DIR, ignore_errors=True)


def listen(host: str, port: int) -> socket.socket:
    """A TCP listener in this (the host's) network namespace.

    Raises:
        ExternalError: the address cannot be bound.
    """
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=1)
    except OSError as exc:
        raise ExternalError(f"cannot listen for the migration on {host}:{port}: "
                            f"{exc.strerror or exc}") from exc  # fmt: skip


async def connect(host: str, port: int) -> socket.socket:
    """A TCP connection to the target, from the host's network namespace.

    Raises:
        ExternalError: nothing answers there.
    """
    try:
        sock = await asyncio.to_thread(socket.create_connection, (host, port), CONNECT_TIMEOUT)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ExternalError(f"cannot reach the migration target {host}:{port}: {reason}") from exc
    sock.settimeout(None)
    return sock


async def give_fd(client: QMPClient, fd: int) -> None:
    """Hand QEMU a socket under the name :data:`FD_NAME` (QMP ``getfd``).

    Raises:
        ExternalError: QEMU did not take it.
    """
    try:
        client.send_fd_scm(fd)
    except (OSError, QMPError) as exc:
        raise ExternalError("passing the migration socket to QEMU failed", detail=str(exc)) from exc
    await qemuqmp.call(client, "getfd", {"fdname": FD_NAME})


async def add_creds(client: QMPClient, tls: Path, endpoint: Literal["server", "client"]) -> None:
    """Load the TLS files of ``tls`` into QEMU as :data:`CREDS_ID` (the peer is verified).

    Raises:
        ExternalError: QEMU refused them (gnutls's words in the message).
    """
    creds = {"qom-type": "tls-creds-x509", "id": CREDS_ID, "endpoint": endpoint,
             "verify-peer": True, "dir": str(tls)}  # fmt: skip
    try:
        await qemuqmp.call(client, "object-add", creds)
    except ExternalError as exc:
        raise ExternalError(f"QEMU cannot load the node's certificate: {exc.detail}") from exc
