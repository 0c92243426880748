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
between the connection and the environment's socket (``vnc``, ``spice``,
``rdp``, ``audio`` or ``mic``), or ``ERR <reason>`` and closes.

A drain carries a container's volume between nodes through the same relays
(:func:`carry_volume`, run by the control plane): ``GENOS-VOLUME GET <owner>
<name>`` answers ``OK <size>`` and the volume as a tar
(:meth:`~genos.runtime.volumes.VolumeStore.pack`, detached volumes only);
``GENOS-VOLUME PUT <owner> <name> <size>`` answers ``OK``, takes the tar and
answers ``DONE`` once the volume is whole here (or ``ERR`` and nothing is
left); ``GENOS-VOLUME DEL <owner> <name>`` removes the sent copy. Each side
stages the tar in a file beside its volumes.

``GENOS-MIGRATE`` verbs are a node's half of moving a VM: live
(:mod:`genos.cluster.migration`: ``FACTS``, ``PREPARE``, ``FINISH``, ``SEND``,
``ABORT``, ``RESUME``), or, for a suspended one, as files: ``PACK <env>``
answers ``OK <facts> <disk> <state>`` (byte counts) and then the facts (JSON),
the disk overlay and the saved state; ``ADOPT <env> <body> <disk> <state>``
takes the spec and facts (JSON), then the two files, and answers ``DONE``
once the VM is held here suspended (or ``ERR`` and nothing is left).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genos.cluster import pki
from genos.cluster.pki import Identity
from genos.errors import GenOSError, InputError
from genos.ids import is_env_id
from genos.runtime.driver import Driver, EnvState, endpoint
from genos.spec import EnvironmentSpec

if TYPE_CHECKING:
    from genos.runtime.volumes import VolumeStore

log = logging.getLogger("genos.node.relay")
HELLO = b"GENOS-RELAY"
VOLUME = b"GENOS-VOLUME"
MIGRATE = b"GENOS-MIGRATE"
CHUNK = 1 << 20  # volumes move in 1 MiB pieces (fewer thread hops per byte)
PROTOCOLS = ("vnc", "spice", "rdp", "audio", "mic", "video", "record")
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

    def __init__(
        self,
        driver: Driver,
        identity: Identity,
        host: str,
        port: int,
        volumes: VolumeStore | None = None,
    ) -> None:
        self.driver, self.identity, self.host, self.port = driver, identity, host, port
        self.volumes = volumes  # carried to and from other nodes (None: not offered)
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
            if not _from_control_plane(writer):
                writer.write(b"ERR only a control plane may use the relay\n")
                return
            line = await asyncio.wait_for(reader.readuntil(b"\n"), HELLO_TIMEOUT)
            parts = line[:LINE_LIMIT].decode("ascii", "replace").split()
            if parts and parts[0] == VOLUME.decode():
                await self._volume(parts, reader, writer)
                return
            if parts and parts[0] == MIGRATE.decode():
                await self._migrate(parts, reader, writer)
                return
            target = await self._hello(parts, writer)
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

    async def _volume(
        self, parts: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """``GENOS-VOLUME GET|PUT|DEL <owner> <name> [<size>]`` (see :func:`carry_volume`)."""
        store = self.volumes
        if store is None:
            writer.write(b"ERR this node carries no volumes\n")
            return
        verb, rest = (parts[1], parts[2:]) if len(parts) > 1 else ("", [])
        try:
            if verb == "GET" and len(rest) == 2:
                await self._send_volume(store, rest[0], rest[1], writer)
            elif verb == "PUT" and len(rest) == 3 and rest[2].isdigit():
                await self._take_volume(store, rest[0], rest[1], int(rest[2]), reader, writer)
            elif verb == "DEL" and len(rest) == 2:
                await asyncio.to_thread(store.rm, rest[0], rest[1])
                writer.write(b"DONE\n")
            else:
                writer.write(b"ERR bad volume request\n")
        except GenOSError as exc:
            writer.write(f"ERR {exc}\n".encode()[:300])
        await writer.drain()

    async def _migrate(
        self, parts: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """``GENOS-MIGRATE <verb> <env> ...``: this node's half of a VM's live migration
        (see :func:`genos.cluster.migration.migrate`)."""
        vms = _vm_driver(self.driver)
        verb, rest = (parts[1], parts[2:]) if len(parts) > 2 else ("", [])
        if vms is None or not rest or not is_env_id(rest[0]):
            writer.write(b"ERR bad migration request (or no VMs on this node)\n")
            return
        env_id = rest[0]
        try:
            if verb == "PACK" and len(rest) == 1:
                await self._pack(vms, env_id, writer)
                return
            if verb == "ADOPT" and len(rest) == 4 and all(a.isdigit() for a in rest[1:]):
                sizes = [int(a) for a in rest[1:]]
                answer = await self._adopt(vms, env_id, sizes, reader)
            else:
                answer = await self._migrate_step(vms, verb, env_id, rest[1:], reader)
        except GenOSError as exc:
            answer = f"ERR {' '.join(str(exc).split())}"[:400]
        except (ValueError, KeyError, TypeError) as exc:  # a body that is not what was asked
            answer = f"ERR bad migration request: {type(exc).__name__}"
        writer.write(answer.encode() + b"\n")
        await writer.drain()

    async def _pack(self, vms: Any, env_id: str, writer: asyncio.StreamWriter) -> None:
        facts, disk, state = await vms.saved_for_move(env_id)
        body = json.dumps(facts, separators=(",", ":")).encode()
        with disk.open("rb") as disk_file, state.open("rb") as state_file:
            sizes = [os.fstat(f.fileno()).st_size for f in (disk_file, state_file)]
            writer.write(f"OK {len(body)} {sizes[0]} {sizes[1]}\n".encode() + body)
            for src, size in zip((disk_file, state_file), sizes, strict=True):
                left = size
                while left:
                    chunk = await asyncio.to_thread(src.read, min(CHUNK, left))
                    if not chunk:
                        raise InputError(f"{env_id}: a file shrank while it was sent")
                    writer.write(chunk)
                    await writer.drain()
                    left -= len(chunk)
        await writer.drain()

    async def _adopt(
        self, vms: Any, env_id: str, sizes: list[int], reader: asyncio.StreamReader
    ) -> str:
        body_size, disk_size, state_size = sizes
        if body_size >= 1 << 20:
            raise InputError("the spec and facts are too large")
        body = json.loads(await reader.readexactly(body_size))
        spec = EnvironmentSpec.model_validate(body["spec"])
        disk, state = await vms.adopt_saved(env_id, spec, body["source"])
        try:
            # The overlay keeps the owner create gave it (QEMU's user); the state is root's.
            state.touch(mode=0o600, exist_ok=True)
            for path, size in ((disk, disk_size), (state, state_size)):
                await _receive(reader, path, size)
            await vms.finish_adopt(env_id)
        except BaseException:
            with contextlib.suppress(GenOSError):
                await asyncio.shield(vms.abort_incoming(env_id))
            raise
        return "DONE"

    async def _migrate_step(
        self, vms: Any, verb: str, env_id: str, args: list[str], reader: asyncio.StreamReader
    ) -> str:
        if verb == "FACTS" and not args:
            return "OK " + json.dumps(vms.migration_source(env_id), separators=(",", ":"))
        if verb == "PREPARE" and len(args) == 1 and args[0].isdigit() and int(args[0]) < 1 << 20:
            body = json.loads(await reader.readexactly(int(args[0])))
            spec = EnvironmentSpec.model_validate(body["spec"])
            port = await vms.prepare_incoming(env_id, spec, body["source"], tls=self.identity,
                                              listen_host=self.host)  # fmt: skip
            return f"OK {port}"
        if verb == "FINISH" and not args:
            await vms.finish_incoming(env_id)
            return "DONE"
        if verb == "SEND" and len(args) == 2 and args[1].isdigit():
            done = await vms.migrate_out(env_id, args[0], int(args[1]), tls=self.identity)
            return f"DONE {done.total_ms} {done.downtime_ms} {done.ram_bytes}"
        if verb == "ABORT" and not args:
            await vms.abort_incoming(env_id)
            return "DONE"
        if verb == "RESUME" and not args:
            if (await vms.inspect(env_id)).state is EnvState.SUSPENDED:
                await vms.resume(env_id)
            return "DONE"
        raise InputError(f"bad migration request {verb[:20]!r}")

    async def _send_volume(
        self, store: VolumeStore, owner: str, name: str, writer: asyncio.StreamWriter
    ) -> None:
        packed = store.root / f".carry-{secrets.token_hex(6)}.tar"
        try:
            await asyncio.to_thread(store.pack, owner, name, packed)
            size = packed.stat().st_size
            writer.write(f"OK {size}\n".encode())
            with packed.open("rb") as src:
                while chunk := await asyncio.to_thread(src.read, CHUNK):
                    writer.write(chunk)
                    await writer.drain()
        finally:
            packed.unlink(missing_ok=True)

    async def _take_volume(  # noqa: PLR0917 - the request's parts and its streams
        self,
        store: VolumeStore,
        owner: str,
        name: str,
        size: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        store.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        packed = store.root / f".carry-{secrets.token_hex(6)}.tar"
        try:
            writer.write(b"OK\n")
            await writer.drain()
            with packed.open("wb") as out:
                left = size
                while left:
                    chunk = await reader.read(min(CHUNK, left))
                    if not chunk:
                        raise InputError(f"the volume ended {left} bytes short")
                    await asyncio.to_thread(out.write, chunk)
                    left -= len(chunk)
            await asyncio.to_thread(store.unpack, owner, name, packed)
            writer.write(b"DONE\n")
        finally:
            packed.unlink(missing_ok=True)

    async def _hello(self, parts: list[str], writer: asyncio.StreamWriter) -> Path | None:
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


async def _receive(reader: asyncio.StreamReader, path: Path, size: int) -> None:
    """Write the next ``size`` bytes of ``reader`` over the file at ``path`` (kept, with
    its owner and mode).

    Raises:
        InputError: the stream ended short.
    """
    with path.open("r+b") as out:
        await asyncio.to_thread(out.truncate, 0)
        left = size
        while left:
            chunk = await reader.read(min(CHUNK, left))
            if not chunk:
                raise InputError(f"{path.name}: the stream ended {left} bytes short")
            await asyncio.to_thread(out.write, chunk)
            left -= len(chunk)


def _vm_driver(driver: Driver) -> Any | None:
    """The driver of this node that migrates VMs (QEMU's), if there is one."""
    for candidate in getattr(driver, "drivers", [driver]):
        if hasattr(candidate, "prepare_incoming"):
            return candidate
    return None


def _from_control_plane(writer: asyncio.StreamWriter) -> bool:
    peer = writer.get_extra_info("ssl_object")
    der = peer.getpeercert(binary_form=True) if peer is not None else None
    return isinstance(der, bytes) and pki.role_of(der) == "control-plane"


async def carry_volume(
    source: tuple[str, int],
    target: tuple[str, int],
    owner: str,
    name: str,
    context: ssl.SSLContext,
) -> int:
    """Copy detached volume ``owner/name`` from the node whose relay is ``source`` to the
    one at ``target`` (a tar through this control plane, mutual TLS both ways), then
    remove it from the source. The bytes carried.

    The target makes the volume whole or not at all; the source removes its copy only
    once the target has it.

    Raises:
        ExternalError: either side refused or the copy broke (the source keeps its copy).
    """
    from genos.errors import ExternalError  # noqa: PLC0415

    async def ask(
        where: tuple[str, int], line: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        reader, writer = await asyncio.open_connection(*where, ssl=context)
        writer.write(f"{VOLUME.decode()} {line}\n".encode())
        await writer.drain()
        answer = (await asyncio.wait_for(reader.readuntil(b"\n"), 60.0)).decode("ascii", "replace")
        return reader, writer, answer.strip()

    opened: list[asyncio.StreamWriter] = []
    try:
        src_reader, src_writer, said = await ask(source, f"GET {owner} {name}")
        opened.append(src_writer)
        if not said.startswith("OK ") or not said[3:].isdigit():
            raise ExternalError(f"the source node would not give volume {name}: {said[:200]}")
        size = int(said[3:])
        dst_reader, dst_writer, said = await ask(target, f"PUT {owner} {name} {size}")
        opened.append(dst_writer)
        if said != "OK":
            raise ExternalError(f"the target node would not take volume {name}: {said[:200]}")
        left = size
        while left:
            chunk = await src_reader.read(min(CHUNK, left))
            if not chunk:
                raise ExternalError(f"volume {name}: the source stopped {left} bytes short")
            dst_writer.write(chunk)
            await dst_writer.drain()
            left -= len(chunk)
        done = (await asyncio.wait_for(dst_reader.readuntil(b"\n"), 300.0)).decode().strip()
        if done != "DONE":
            raise ExternalError(f"the target node could not make volume {name}: {done[:200]}")
        _, del_writer, said = await ask(source, f"DEL {owner} {name}")
        opened.append(del_writer)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError) as exc:
        raise ExternalError(f"carrying volume {name} broke: {exc}") from exc
    finally:
        for writer in opened:
            writer.close()
    if said != "DONE":
        log.warning("volume %s/%s carried, but the source kept its copy: %s", owner, name, said)
    return size


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
