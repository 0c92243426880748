"""The RFB proxy: one viewer, one connection to the environment's display.

:func:`proxy` does both handshakes itself (the viewer's first, so nothing
reaches the environment from a viewer that cannot even speak RFB 3.8), then
runs the three tasks of :mod:`genos.gateway.pumps` until one side goes away
or breaks the protocol, and closes both. With ``ProxyOptions.follow`` a
display that goes away between two messages is looked up and dialled again
for up to ``follow_timeout`` seconds (a live-migrated VM's display is on
another node now), and the viewer keeps its connection. Whatever happens to this
connection, no other connection notices: each has its own streams, tasks
and counters, and every error ends in a :class:`Closed`, never a raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from genos.errors import ProtocolError, StreamClosedError
from genos.gateway.adaptive import AdaptiveController, Clock, Tuning
from genos.gateway.handshake import (
    ServerInit,
    client_refuse,
    client_security,
    client_version,
    environment_handshake,
)
from genos.gateway.lease import LEASES, Leases
from genos.gateway.metrics import REGISTRY, Connection, ConnectionRegistry
from genos.gateway.policy import Grant
from genos.gateway.pumps import Pumps
from genos.gateway.recording import Recorder
from genos.gateway.rfb import DEFAULT_LIMITS, Framebuffer, Limits
from genos.gateway.server_messages import EnvState
from genos.gateway.streams import ByteStream, open_target
from genos.paths import data_dir
from genos.runtime.driver import DisplayTarget

log = logging.getLogger("genos.gateway")
FOLLOW_RETRY = 0.2  # seconds between attempts to reach a display that moved


@dataclass(frozen=True)
class ProxyOptions:
    """How :func:`proxy` behaves; the defaults suit production.

    Attributes:
        limits: size bounds on both peers.
        handshake_timeout: seconds for both handshakes together.
        quiesce_timeout: seconds a pixel-format change may wait for an outstanding update.
        recordings: where recordings go; default ``data_dir()/recordings``.
        tuning: the adaptive controller's thresholds.
        clock: monotonic seconds for the controller.
        registry: where live connections are listed.
        connect: opens the stream to the display socket (a fake in tests).
        leases: the input leases a control viewer's input takes (None: input is never leased).
        viewer: how the lease names this viewer's person to others (default: the user id).
        follow: where the display is now, once its stream ended (None: gone; the
            option None: the session ends with the display's stream).
        follow_timeout: seconds to keep looking for the display again.
    """

    limits: Limits = DEFAULT_LIMITS
    handshake_timeout: float = 10.0
    quiesce_timeout: float = 10.0
    recordings: Path | None = None
    tuning: Tuning | None = None
    clock: Clock = time.monotonic
    registry: ConnectionRegistry = field(default_factory=lambda: REGISTRY)
    connect: Callable[[DisplayTarget], Awaitable[ByteStream]] = open_target
    leases: Leases | None = field(default_factory=lambda: LEASES)
    viewer: str = ""
    follow: Callable[[], Awaitable[DisplayTarget | None]] | None = None
    follow_timeout: float = 15.0


@dataclass(frozen=True)
class Closed:
    """How a proxied connection ended.

    Attributes:
        side: ``client`` or ``environment`` (who left or misbehaved), or ``gateway``.
        reason: a short human reason.
        error: whether it ended because of an error rather than a peer leaving.
    """

    side: str
    reason: str
    error: bool


class _Peer:
    """A stream that notes which side ended first; the viewer's also counts and records."""

    def __init__(self, stream: ByteStream, side: str, session: _Session) -> None:
        self.stream, self.side, self.session = stream, side, session
        self.recorder: Recorder | None = None
        self.counts = side == "client"

    async def read_exact(self, n: int) -> bytes:
        try:
            return await self.stream.read_exact(n)
        except StreamClosedError:
            self.session.gone = self.session.gone or self.side
            raise

    async def write(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.write(data)
        if self.counts:
            self.session.conn.bytes_to_client += len(data)
        try:
            await self.stream.write(data)
        except StreamClosedError:
            self.session.gone = self.session.gone or self.side
            raise

    async def close(self, reason: str = "") -> None:
        await self.stream.close(reason)


async def proxy(
    client: ByteStream, target: DisplayTarget, grant: Grant, options: ProxyOptions | None = None
) -> Closed:
    """Proxy one authorised viewer to the environment's display socket.

    Args:
        client: the viewer's stream, before any RFB byte was exchanged.
        target: the environment's display socket (from the resolver, never the client).
        grant: what this viewer may do.
        options: limits, timeouts, recording directory, controller tuning, registry.

    Returns:
        How the connection ended. Both streams are closed.
    """
    session = _Session(client, grant, options or ProxyOptions())
    return await session.run(target)


class _Session:
    def __init__(self, client: ByteStream, grant: Grant, options: ProxyOptions) -> None:
        self.options = options
        self.grant = grant
        self.client = _Peer(client, "client", self)
        self.env: _Peer | None = None
        self.conn = Connection(grant, AdaptiveController(options.clock, options.tuning))
        self.log = log.getChild(grant.env_id)
        self.gone: str | None = None

    async def run(self, target: DisplayTarget) -> Closed:
        if self.grant.record:
            root = self.options.recordings or data_dir() / "recordings"
            self.client.recorder = Recorder.for_connection(
                root, self.grant.env_id, self.conn.connection_id
            )
        try:
            closed = await self._run(target)
        finally:
            if self.client.recorder is not None:
                self.client.recorder.close()
        self.log.info("viewer %s closed: %s: %s", self.grant.user_id, closed.side, closed.reason)
        return closed

    async def _run(self, target: DisplayTarget) -> Closed:
        closed = Closed("gateway", "cancelled", error=False)
        try:
            async with asyncio.timeout(self.options.handshake_timeout):
                env, init = await self._handshake(target)
            closed = await self._stream(env, init)
        except ProtocolError as exc:
            closed = Closed(exc.side, exc.reason, error=True)
        except StreamClosedError:
            closed = Closed(self.gone or "gateway", "disconnected", error=False)
        except TimeoutError:
            closed = Closed("gateway", "handshake timed out", error=True)
        finally:
            await self._close_all(closed)  # also when cancelled: no socket outlives us
        return closed

    async def _handshake(self, target: DisplayTarget) -> tuple[_Peer, ServerInit]:
        await client_version(self.client)
        try:
            self.env = _Peer(await self._connect(target), "environment", self)
            init = await environment_handshake(self.env, self.options.limits)
        except (ProtocolError, StreamClosedError):
            with contextlib.suppress(StreamClosedError):
                await client_refuse(self.client, "the environment's display is not available")
            raise
        await client_security(self.client)
        await self.client.write(init.pack())
        return self.env, init

    async def _connect(self, target: DisplayTarget) -> ByteStream:
        try:
            return await self.options.connect(target)
        except StreamClosedError:
            self.gone = "environment"
            raise

    async def _stream(self, env: _Peer, init: ServerInit) -> Closed:
        state = EnvState(Framebuffer(init.width, init.height), init.format, self.options.limits)
        leases = self.options.leases
        lease = leases.get(self.grant.env_id) if leases is not None else None
        pumps = Pumps(
            self.client, env, state, self.conn, self.options.quiesce_timeout,
            lease=lease, viewer=self.options.viewer,
            follow=self._follow if self.options.follow is not None else None,
        )  # fmt: skip
        self.options.registry.add(self.conn)
        tasks = [
            asyncio.create_task(pumps.client_pump(), name="client-pump"),
            asyncio.create_task(pumps.env_pump(), name="env-pump"),
            asyncio.create_task(pumps.pacer(), name="pacer"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.options.registry.remove(self.conn)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
        return Closed("gateway", "stopped", error=False)

    async def _follow(self) -> tuple[ByteStream, ServerInit] | None:
        """The display again, handshaken, after its stream ended; None: it is gone."""
        follow = self.options.follow
        if follow is None or self.gone != "environment":
            return None
        if self.env is not None:
            with contextlib.suppress(StreamClosedError, OSError):
                await self.env.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.follow_timeout
        while (target := await follow()) is not None:
            stream: ByteStream | None = None
            try:
                async with asyncio.timeout(self.options.handshake_timeout):
                    stream = await self.options.connect(target)
                    peer = _Peer(stream, "environment", self)
                    init = await environment_handshake(peer, self.options.limits)
            except (ProtocolError, StreamClosedError, TimeoutError, OSError) as exc:
                await _close_quietly(stream)
                if loop.time() > deadline:
                    self.log.info("the display did not come back: %s", exc)
                    return None
                await asyncio.sleep(FOLLOW_RETRY)
                continue
            except BaseException:
                await _close_quietly(stream)
                raise
            self.env, self.gone = peer, None
            self.log.info("viewer %s followed the display to %s", self.grant.user_id, target)
            return peer, init
        return None

    async def _close_all(self, closed: Closed) -> None:
        reason = f"{closed.side}: {closed.reason}" if closed.error else ""
        # The display socket first: it is ours, and closing the viewer's
        # transport can fail in ways of its own (or be cancelled).
        try:
            if self.env is not None:
                with contextlib.suppress(StreamClosedError, OSError):
                    await self.env.close()
        finally:
            with contextlib.suppress(StreamClosedError, OSError):
                await self.client.close(reason)


async def _close_quietly(stream: ByteStream | None) -> None:
    if stream is not None:
        with contextlib.suppress(StreamClosedError, OSError):
            await stream.close()
