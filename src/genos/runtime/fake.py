"""An in-memory driver for orchestrator and API tests (like ``httpx.MockTransport``).

It keeps the real drivers' state machine and errors, and serves a real RFB
banner on a unix socket per environment, so a gateway or a client can connect
to ``display()`` as it would to a real environment. Nothing else happens on
the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from genos.errors import CapabilityError, ClosedError, InputError, NotFoundError, StateError
from genos.ids import is_env_id
from genos.runtime import lifecycle
from genos.runtime.driver import EnvState, Inspection, Usage
from genos.runtime.fake_media import Handler, MediaLog, record_server, video_server
from genos.runtime.files import HomeDir
from genos.runtime.lifecycle import Verb
from genos.spec import EnvironmentSpec

RFB_BANNER = b"RFB 003.008\n"
VerbHook = Callable[[str, str], None]
"""Called as ``hook(env_id, verb)`` before each verb; raising makes the verb fail."""


@dataclass
class FakeEnv:
    """What the fake knows about one environment."""

    spec: EnvironmentSpec
    state: EnvState = EnvState.CREATED
    server: asyncio.AbstractServer | None = None
    history: list[EnvState] = field(default_factory=list)
    usage: Usage | None = None  # what inspect and usage report (tests set it)
    mic: asyncio.AbstractServer | None = None  # mic.sock, when the spec allows a microphone
    heard: bytearray = field(default_factory=bytearray)  # what reached mic.sock
    listeners: int = 0  # connections to mic.sock still open
    media_servers: list[asyncio.AbstractServer] = field(default_factory=list)  # video, record
    media: MediaLog = field(default_factory=MediaLog)
    connections: set[asyncio.Task[None]] = field(default_factory=set)  # handlers still serving


class FakeDriver:
    """A driver that runs nothing (see the module docstring).

    Args:
        root: where display sockets go (default: a fresh temporary directory).
        checkpoint: whether ``suspend(to_disk=True)`` works (else CapabilityError).
        hook: called before each verb; tests make verbs fail by raising in it.
    """

    name = "fake"

    def __init__(
        self, root: Path | None = None, *, checkpoint: bool = False, hook: VerbHook | None = None
    ) -> None:
        self._own_root = root is None
        self.root = root if root is not None else Path(tempfile.mkdtemp(prefix="genos-fake-"))
        self.checkpoint = checkpoint
        self.hook = hook
        self.envs: dict[str, FakeEnv] = {}
        self._closed = False

    async def create(self, env_id: str, spec: EnvironmentSpec) -> None:
        """Record a new environment in ``created``.

        Raises:
            StateError: ``env_id`` exists.
        """
        self._enter(env_id, "create")
        if env_id in self.envs:
            raise StateError(self.envs[env_id].state.value, ["absent"], "create")
        env = FakeEnv(spec)
        env.history.append(env.state)
        self.envs[env_id] = env

    async def start(self, env_id: str, *, timeout: float = 30.0) -> None:  # noqa: ARG002
        """Serve the RFB banner on ``display(env_id)`` and enter ``running``.

        Raises:
            NotFoundError: no such environment.
            StateError: not ``created``.
        """
        env = self._env(env_id, "start")
        target = lifecycle.require(env.state, Verb.START)
        sock = self.display(env_id)
        sock.parent.mkdir(parents=True, exist_ok=True)
        env.server = await serve_tracked(env, _greet, str(sock))
        if env.spec.security.microphone:

            async def listen(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
                env.listeners += 1
                try:
                    while data := await reader.read(65536):
                        env.heard += data
                finally:
                    env.listeners -= 1

            env.mic = await serve_tracked(env, listen, str(sock.with_name("mic.sock")))
        video = str(sock.with_name("video.sock"))
        env.media_servers = [await serve_tracked(env, video_server(env.media), video)]
        if env.spec.security.recording:
            serve = record_server(env.media)
            path = str(sock.with_name("record.sock"))
            env.media_servers.append(await serve_tracked(env, serve, path))
        self._move(env, target)

    async def suspend(self, env_id: str, *, to_disk: bool = False) -> None:
        """Enter ``suspended``.

        Raises:
            NotFoundError: no such environment.
            StateError: not ``running``.
            CapabilityError: ``to_disk`` and the fake was made without ``checkpoint``.
        """
        env = self._env(env_id, "suspend")
        target = lifecycle.require(env.state, Verb.SUSPEND)
        if to_disk and not self.checkpoint:
            raise CapabilityError("the fake driver was made without checkpoint support")
        self._move(env, target)

    async def resume(self, env_id: str) -> None:
        """Enter ``running`` again.

        Raises:
            NotFoundError: no such environment.
            StateError: not ``suspended``.
        """
        env = self._env(env_id, "resume")
        self._move(env, lifecycle.require(env.state, Verb.RESUME))

    async def destroy(self, env_id: str) -> None:
        """Forget the environment and close its display. Idempotent."""
        self._enter(env_id, "destroy")
        env = self.envs.pop(env_id, None)
        if env is not None:
            await _close(env)
        shutil.rmtree(self.root / env_id, ignore_errors=True)

    async def inspect(self, env_id: str) -> Inspection:
        """State and a plausible usage (no processes, so zero CPU).

        Raises:
            NotFoundError: no such environment.
        """
        env = self._env(env_id, "inspect")
        return Inspection(env_id, env.state, None, self._usage(env), self.name)

    def usage(self, env_id: str) -> Usage | None:
        """What tests set in ``FakeEnv.usage`` (default: nothing used), None if unknown."""
        env = self.envs.get(env_id)
        return None if env is None else self._usage(env)

    @staticmethod
    def _usage(env: FakeEnv) -> Usage:
        if env.usage is not None:
            return env.usage
        running = env.state in (EnvState.RUNNING, EnvState.SUSPENDED)
        return Usage(cpu_seconds=0.0, memory_bytes=0, pids=1 if running else 0)

    def display(self, env_id: str) -> Path:
        """``<root>/<env_id>/rfb.sock``.

        Raises:
            NotFoundError: no such environment.
        """
        if env_id not in self.envs:
            raise NotFoundError("environment", env_id)
        return self.root / env_id / "rfb.sock"

    def endpoint(self, env_id: str, protocol: str) -> Path:
        """``mic``: ``<root>/<env_id>/mic.sock`` (what arrives is kept in ``heard``) when
        the spec allows a microphone; ``video`` (video.sock) and, when the spec allows
        recording, ``record`` (record.sock): see :mod:`genos.runtime.fake_media`; no
        other protocol besides ``display``'s.

        Raises:
            NotFoundError: no such environment or protocol.
        """
        env = self.envs.get(env_id)
        names = {"mic": "mic.sock", "video": "video.sock", "record": "record.sock"}
        sock = self.root / env_id / names.get(protocol, "-")
        if env is None or env.server is None or not sock.exists():
            raise NotFoundError(f"{protocol} display of environment", env_id)
        return sock

    def home(self, env_id: str) -> HomeDir:
        """``<root>/<env_id>/home``, owned by this process's user (file transfer).

        Raises:
            NotFoundError: no such environment.
        """
        if env_id not in self.envs:
            raise NotFoundError("environment", env_id)
        home = self.root / env_id / "home"
        home.mkdir(parents=True, exist_ok=True)
        return HomeDir(self.root / env_id, ("home",), os.getuid(), os.getgid())

    async def list_ids(self) -> list[str]:
        """Every environment the fake holds."""
        return sorted(self.envs)

    async def aclose(self) -> None:
        """Close every display server; the driver refuses calls afterwards."""
        for env in self.envs.values():
            await _close(env)
        self._closed = True
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def history(self, env_id: str) -> list[EnvState]:
        """Every state ``env_id`` has been in, in order (for tests)."""
        return list(self._env(env_id, "history").history)

    def _enter(self, env_id: str, verb: str) -> None:
        if self._closed:
            raise ClosedError("the fake driver is closed")
        if not is_env_id(env_id):
            raise InputError(f"not an environment id: {env_id!r}")
        if self.hook is not None:
            self.hook(env_id, verb)

    def _env(self, env_id: str, verb: str) -> FakeEnv:
        self._enter(env_id, verb)
        try:
            return self.envs[env_id]
        except KeyError:
            raise NotFoundError("environment", env_id) from None

    @staticmethod
    def _move(env: FakeEnv, target: EnvState) -> None:
        env.state = target
        env.history.append(target)


async def serve_tracked(env: FakeEnv, handler: Handler, path: str) -> asyncio.AbstractServer:
    """A unix server at ``path`` for ``env`` whose connections :func:`_close` ends
    (every socket of the fake's, and the demo driver's RFB display).

    Python 3.11's ``Server.close`` leaves accepted connections open, so a
    handler still serving when the driver closed (a viewer, or the engine's
    readiness check hanging up) outlived its environment, and its socket was
    closed only by the garbage collector, with a ResourceWarning.
    """

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The handlers leave the connection to this: it closes it when they return.
        task = asyncio.current_task()  # always one: a handler runs in a task of its own
        if task is not None:
            env.connections.add(task)
        try:
            await handler(reader, writer)
        finally:
            if task is not None:
                env.connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    return await asyncio.start_unix_server(tracked, path=path)


async def _close(env: FakeEnv) -> None:
    """Stop ``env``'s display servers and end the connections they still serve."""
    servers = [s for s in (env.server, env.mic, *env.media_servers) if s is not None]
    for server in servers:
        server.close()
    await asyncio.sleep(0)  # a connection accepted just now starts its handler
    serving = list(env.connections)
    for task in serving:
        task.cancel()
    await asyncio.gather(*serving, return_exceptions=True)
    for server in servers:
        await server.wait_closed()


async def _greet(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send the RFB 3.8 ProtocolVersion (RFC 6143 7.1.1); :func:`serve_tracked` hangs up."""
    with contextlib.suppress(ConnectionError):
        writer.write(RFB_BANNER)
        await writer.drain()
