"""Where an admitted environment goes: this host, or one node of a cluster.

Admission asks a :class:`Placer` for a :class:`Plan` once per pass (one read
of what every host holds, and the queue with it); the plan answers, for each
waiting request in queue order, the host that takes it or None, and counts
what it placed, so one pass places many. :class:`SingleHost` is the one-host
placer (``genos serve`` without a cluster); the cluster's is
:class:`genos.cluster.placement.ClusterPlacer`. Both judge with
:meth:`~genos.orchestrator.capacity.Capacity.fits`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from genos.orchestrator.capacity import Capacity, Request, Usage

if TYPE_CHECKING:
    from genos.orchestrator.records import Environment
    from genos.orchestrator.registry import Registry


class Plan(Protocol):
    """One admission pass's view of the hosts."""

    def place(self, cpus: float, memory_mb: int, avoid: frozenset[str] = frozenset()) -> str | None:
        """The host that takes a request of this size (counted as held from now), or None;
        never one in ``avoid`` (where a create of it just failed)."""
        ...


class Placer(Protocol):
    """Makes a :class:`Plan` for each admission pass."""

    def check_possible(self, request: Request, limits: Request) -> None:
        """Refuse what no host could ever take (see :meth:`Capacity.check_possible`).

        Raises:
            CapacityError: too big for every host.
        """
        ...

    async def plan(self, registry: Registry) -> tuple[Plan, list[Environment]]:
        """The plan, and the waiting environments in queue order (read together)."""
        ...


class SingleHost:
    """Everything goes to this host while it fits its capacity."""

    def __init__(self, host: str, capacity: Capacity) -> None:
        self.host, self.capacity = host, capacity

    def check_possible(self, request: Request, limits: Request) -> None:
        """Refuse what this host could never take."""
        self.capacity.check_possible(request, limits)

    async def plan(self, registry: Registry) -> tuple[Plan, list[Environment]]:
        """What this host holds, and the queue (one round trip)."""
        used, waiting = await registry.usage_and_queue(self.host)
        return _HostPlan(self.host, self.capacity, used), waiting


class _HostPlan:
    def __init__(self, host: str, capacity: Capacity, used: Usage) -> None:
        self.host, self.capacity, self.used = host, capacity, used

    def place(self, cpus: float, memory_mb: int, avoid: frozenset[str] = frozenset()) -> str | None:
        if self.host in avoid or not self.capacity.fits(self.used, cpus, memory_mb):
            return None
        self.used = self.used.plus(cpus, memory_mb)
        return self.host
