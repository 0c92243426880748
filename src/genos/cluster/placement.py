"""Which node takes an environment: its request against each node's free capacity.

A node is a candidate when it is alive (its lease holds), not cordoned (or
draining), and its capacity (announced with the node record, the model of
:mod:`genos.orchestrator.capacity`) fits the request beside the requests
the registry says its environments hold. Among the candidates:

- ``spread`` (the default): the node with the largest share of its capacity
  left after this request, so load and the cost of losing a node are spread;
- ``pack``: the smallest share left, so whole nodes stay empty (to drain,
  or to power off).

A node whose clock is more than :data:`MAX_SKEW` seconds off the control
plane's (from the clock it writes into its record) is left alone: its leases
and timers would not mean what they say. Ties go to the node whose name sorts
first, so a placement is reproducible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from genos.errors import CapacityError
from genos.orchestrator.capacity import Capacity, Request, Usage

if TYPE_CHECKING:
    from genos.cluster.store import NodeInfo
    from genos.orchestrator.records import Environment
    from genos.orchestrator.registry import Registry

Strategy = Literal["spread", "pack"]
MAX_SKEW = 60.0  # seconds; a node's record is rewritten every 10 s


@dataclass
class Candidate:
    """A node as placement sees it."""

    name: str
    capacity: Capacity
    used: Usage = field(default_factory=Usage)
    excluded: bool = False  # cordoned, draining

    def left_after(self, cpus: float, memory_mb: int) -> float:
        """The smaller of the CPU and memory shares left after a request of this size."""
        cap = self.capacity
        cpu = (cap.allocatable_cpus - self.used.cpus - cpus) / max(cap.allocatable_cpus, 1e-9)
        mem = (cap.allocatable_memory_mb - self.used.memory_mb - memory_mb) / max(
            cap.allocatable_memory_mb, 1
        )
        return min(cpu, mem)


def choose(
    candidates: list[Candidate], cpus: float, memory_mb: int, strategy: Strategy = "spread"
) -> Candidate | None:
    """The node that takes a request (see the module docstring), or None if none can."""
    fit = [c for c in candidates if not c.excluded and c.capacity.fits(c.used, cpus, memory_mb)]
    if not fit:
        return None
    sign = -1.0 if strategy == "spread" else 1.0
    return min(fit, key=lambda c: (sign * c.left_after(cpus, memory_mb), c.name))


class ClusterPlan:
    """One admission pass's candidates; what it places counts against them."""

    def __init__(self, candidates: list[Candidate], strategy: Strategy) -> None:
        self.candidates, self.strategy = candidates, strategy

    def place(self, cpus: float, memory_mb: int, avoid: frozenset[str] = frozenset()) -> str | None:
        """The node for a request of this size (counted as held from now), or None; never
        one in ``avoid``."""
        allowed = [c for c in self.candidates if c.name not in avoid]
        found = choose(allowed, cpus, memory_mb, self.strategy)
        if found is None:
            return None
        found.used = found.used.plus(cpus, memory_mb)
        return found.name


class ClusterPlacer:
    """Plans over the live nodes (``nodes()``), their cordons and the registry's requests."""

    def __init__(
        self,
        nodes: Callable[[], Mapping[str, NodeInfo]],
        cordoned: Callable[[], set[str]],
        strategy: Strategy = "spread",
    ) -> None:
        self._nodes, self._cordoned, self.strategy = nodes, cordoned, strategy

    def check_possible(self, request: Request, limits: Request) -> None:
        """Refuse what no live node could take; with no node up yet, it waits for one.

        Raises:
            CapacityError: the largest node is too small (its message names that node's size).
        """
        capacities = sorted(
            (capacity_of(info) for info in self._nodes().values()),
            key=lambda c: (c.allocatable_memory_mb, c.allocatable_cpus),
        )
        if not capacities:
            return
        errors: list[CapacityError] = []
        for capacity in capacities:
            try:
                capacity.check_possible(request, limits)
            except CapacityError as exc:
                errors.append(exc)
            else:
                return
        raise errors[-1]

    async def plan(self, registry: Registry) -> tuple[ClusterPlan, list[Environment]]:
        """The candidates now, and the queue (one registry read)."""
        used, waiting = await registry.usage_by_host_and_queue()
        return ClusterPlan(self.candidates(used), self.strategy), waiting

    def candidates(self, used: Mapping[str, Usage]) -> list[Candidate]:
        """Every live node with what its environments hold."""
        cordoned = self._cordoned()
        now = time.time()
        return [
            Candidate(
                name,
                capacity_of(info),
                used.get(name, Usage()),
                name in cordoned or abs(info.clock - now) > MAX_SKEW,
            )
            for name, info in sorted(self._nodes().items())
        ]


def capacity_of(info: NodeInfo) -> Capacity:
    """The capacity a node announced."""
    return Capacity(**info.capacity)
