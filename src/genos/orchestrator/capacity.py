"""What the host can give, what each user may take, and the queue in between.

The host's capacity is its CPUs and memory less a reserve for GenOS and the
system. Every environment that is provisioning, running or suspended holds its
spec's cpus and memory (a suspended one keeps its memory, and keeping its CPUs
reserved means a resume never waits for room). A request that does not fit
right now is queued; the queue is served strictly in order (priority, higher
first, then age), so a large request at the head is never starved by smaller
ones behind it. A request larger than the whole host is refused at once
(:class:`~genos.errors.CapacityError`), and per-user quotas are checked at
request time (:class:`~genos.errors.QuotaError`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from genos.composer.knowledge import HostLimits
from genos.errors import CapacityError, QuotaError


@dataclass(frozen=True)
class Capacity:
    """What environments on this host may hold in total."""

    cpus: float
    memory_mb: int

    @classmethod
    def from_host(cls, reserve_mb: int = 1024, reserve_cpus: float = 0.0) -> Capacity:
        """This host's CPUs and memory (``/proc/meminfo``) less a reserve.

        Args:
            reserve_mb: memory kept for the host and GenOS itself.
            reserve_cpus: CPUs kept back.

        Returns:
            The capacity environments may share.
        """
        limits = HostLimits.from_host(reserve_mb=reserve_mb)
        return cls(cpus=max(0.25, limits.cpus - reserve_cpus), memory_mb=limits.memory_mb)

    def fits(self, used: Usage, cpus: float, memory_mb: int) -> bool:
        """True if ``cpus``/``memory_mb`` fit beside what is ``used`` already."""
        return used.cpus + cpus <= self.cpus + 1e-9 and used.memory_mb + memory_mb <= self.memory_mb

    def check_possible(self, cpus: float, memory_mb: int) -> None:
        """Refuse what could never fit, even on an empty host.

        Raises:
            CapacityError: ``cpus`` or ``memory_mb`` exceeds the whole capacity.
        """
        if cpus > self.cpus + 1e-9 or memory_mb > self.memory_mb:
            raise CapacityError(
                f"needs {cpus:g} cpus and {memory_mb} MB; this host has at most "
                f"{self.cpus:g} cpus and {self.memory_mb} MB for environments"
            )


@dataclass(frozen=True)
class Usage:
    """A sum of reservations: how many environments and what they hold."""

    environments: int = 0
    cpus: float = 0.0
    memory_mb: int = 0

    def plus(self, cpus: float, memory_mb: int) -> Usage:
        """This usage with one more environment holding ``cpus`` and ``memory_mb``."""
        return Usage(self.environments + 1, self.cpus + cpus, self.memory_mb + memory_mb)


@dataclass(frozen=True)
class Quota:
    """The most one user may hold across live environments; None means no limit."""

    environments: int | None = None
    cpus: float | None = None
    memory_mb: int | None = None

    def check(self, used: Usage, cpus: float, memory_mb: int) -> None:
        """Refuse a request that would take the user over a limit.

        Args:
            used: what the user's live environments hold now.
            cpus: what the request asks for.
            memory_mb: what the request asks for.

        Raises:
            QuotaError: naming the first limit exceeded.
        """
        wanted = (
            ("environments", self.environments, used.environments + 1),
            ("cpus", self.cpus, used.cpus + cpus),
            ("memory_mb", self.memory_mb, used.memory_mb + memory_mb),
        )
        for limit, allowed, total in wanted:
            if allowed is not None and total > allowed + 1e-9:
                raise QuotaError(
                    f"quota exceeded: {limit} would be {total:g}, the limit is {allowed:g}",
                    limit,
                    allowed,
                    total,
                )


QuotaPolicy = Callable[[str], Quota | None]
"""Maps an owner (user id) to their quota; None means unlimited."""


def no_quota(_owner: str) -> Quota | None:
    """The default policy: nobody has a quota."""
    return None


@dataclass(frozen=True)
class QueueEntry:
    """A waiting request and its 1-based place in the queue."""

    env_id: str
    owner: str
    position: int
    priority: int
    cpus: float
    memory_mb: int
    since: datetime


@dataclass(frozen=True)
class HostStatus:
    """What :meth:`Engine.host` reports: capacity, what is used, what waits."""

    name: str
    capacity: Capacity
    used: Usage
    queue: list[QueueEntry] = field(default_factory=list)

    @property
    def free(self) -> Usage:
        """Capacity not held by any environment."""
        return Usage(
            0,
            max(0.0, self.capacity.cpus - self.used.cpus),
            max(0, self.capacity.memory_mb - self.used.memory_mb),
        )
