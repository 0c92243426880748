"""Live gateway connections and their figures, for the viewer overlay and ``/metrics``.

Each proxied viewer is a :class:`Connection` in a :class:`ConnectionRegistry`
from its handshake to its close; :meth:`Connection.stats` is a consistent
snapshot (a frozen :class:`ConnectionStats`) safe to serialise.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

from genos.gateway.adaptive import AdaptiveController, LinkStats
from genos.gateway.policy import Grant


@dataclass(frozen=True)
class ConnectionStats:
    """One connection's figures at one moment."""

    connection_id: str
    env_id: str
    user_id: str
    permission: str
    started_at: float
    link: LinkStats
    bytes_to_client: int
    bytes_to_env: int
    updates: int
    forwarded: dict[str, int]
    dropped: dict[str, int]


@dataclass
class Connection:
    """One viewer's proxied connection, as counted by the gateway."""

    grant: Grant
    controller: AdaptiveController
    connection_id: str = field(default_factory=lambda: secrets.token_hex(6))
    started_at: float = field(default_factory=time.time)
    bytes_to_client: int = 0
    bytes_to_env: int = 0
    updates: int = 0
    forwarded: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    def stats(self) -> ConnectionStats:
        """A snapshot of this connection's figures."""
        return ConnectionStats(
            connection_id=self.connection_id,
            env_id=self.grant.env_id,
            user_id=self.grant.user_id,
            permission=str(self.grant.permission),
            started_at=self.started_at,
            link=self.controller.stats(),
            bytes_to_client=self.bytes_to_client,
            bytes_to_env=self.bytes_to_env,
            updates=self.updates,
            forwarded=dict(self.forwarded),
            dropped=dict(self.dropped),
        )


class ConnectionRegistry:
    """The live connections of one gateway."""

    def __init__(self) -> None:
        self._live: dict[str, Connection] = {}

    def add(self, conn: Connection) -> None:
        """Register a connection that has started."""
        self._live[conn.connection_id] = conn

    def remove(self, conn: Connection) -> None:
        """Forget a connection that has ended."""
        self._live.pop(conn.connection_id, None)

    def get(self, connection_id: str) -> Connection | None:
        """The live connection with this id, if any."""
        return self._live.get(connection_id)

    def snapshot(self, env_id: str | None = None) -> list[ConnectionStats]:
        """Figures of every live connection (of one environment if ``env_id`` is given).

        Args:
            env_id: only this environment's viewers.

        Returns:
            One snapshot per connection, oldest first.
        """
        conns = sorted(self._live.values(), key=lambda c: c.started_at)
        return [c.stats() for c in conns if env_id is None or c.grant.env_id == env_id]

    def count(self) -> int:
        """How many connections are live."""
        return len(self._live)

    def watching(self, env_id: str) -> bool:
        """Whether any viewer is connected to ``env_id`` now."""
        return any(conn.grant.env_id == env_id for conn in self._live.values())


REGISTRY = ConnectionRegistry()
