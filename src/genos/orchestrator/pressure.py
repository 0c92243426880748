"""Memory pressure: act before the kernel's OOM killer picks a process at random.

Every maintenance tick the monitor reads the host (``/proc/meminfo``,
``/proc/pressure/memory``) and each holding environment's cgroup (its
working set, through :meth:`Driver.usage`, which runs nothing). The host is
short of memory for real when any of these holds:

- ``MemAvailable`` is under :attr:`PressurePolicy.min_available_mb`
  (default: 3 % of the host's memory, at least 256 MiB);
- the kernel reports tasks stalled on memory (PSI ``full avg10``) above
  :attr:`PressurePolicy.psi_full_avg10` percent;
- the environments' working sets add up to more than
  :attr:`PressurePolicy.environments_share` of the memory GenOS was given
  (``genos serve --memory-mb``): the operator's share is used up, whatever
  the rest of the host does.

Then it frees memory, one environment per :attr:`PressurePolicy.cooldown`,
until the pressure is gone. Never an environment a person is using right
now (a viewer connected, or activity in the last
:attr:`PressurePolicy.busy_seconds`; starting counts as activity, since the
person who launched it is on the way). Among the others: the lowest priority
first (an unclaimed warm-pool environment has the lowest of all); within a
priority, those using more memory than they requested first (they are what
the host is short of), then the most idle. A VM is suspended to disk (QEMU
ends, its memory is free, it resumes later as it was); a container is
stopped, because freezing it keeps its memory. Each gets a warning event and
a transition whose reason says why. When only environments in use are left,
the monitor says so in the log and does nothing more: their owners are
there, and it is theirs to close something.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from genos.orchestrator.capacity import Capacity, Measured
from genos.orchestrator.lifecycle import Lifecycle
from genos.orchestrator.records import Environment, EventType
from genos.orchestrator.states import HOLDING, State
from genos.runtime.driver import Usage

log = logging.getLogger("genos.orchestrator.pressure")
MEMINFO = Path("/proc/meminfo")
PSI_MEMORY = Path("/proc/pressure/memory")

Presence = Callable[[str], bool]
"""Whether a person is connected to an environment right now (a live viewer)."""
Relieve = Callable[[Environment, str], Awaitable[str]]
"""Frees an environment's memory (suspend to disk or stop); returns what it did."""


def nobody(_env_id: str) -> bool:
    """The default presence: no viewer is known to be connected."""
    return False


@dataclass(frozen=True)
class PressurePolicy:
    """When the host counts as short of memory, and how the monitor acts on it."""

    min_available_mb: int | None = None  # None: 3 % of MemTotal, at least 256 MiB
    psi_full_avg10: float = 10.0
    environments_share: float = 0.95
    busy_seconds: float = 120.0
    cooldown: float = 10.0
    enabled: bool = True


@dataclass(frozen=True)
class HostMemory:
    """The host's memory as the kernel reports it."""

    total_mb: int
    available_mb: int
    psi_full_avg10: float | None  # None: the kernel has no PSI

    @classmethod
    def read(cls) -> HostMemory:
        """``/proc/meminfo`` and, where the kernel has it, ``/proc/pressure/memory``."""
        fields = {}
        for line in MEMINFO.read_text(encoding="ascii").splitlines():
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0]) // 1024
        return cls(fields["MemTotal"], fields["MemAvailable"], _psi_full())


def _psi_full() -> float | None:
    try:
        text = PSI_MEMORY.read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("full "):
            pairs = dict(part.split("=") for part in line.split()[1:])
            return float(pairs["avg10"])
    return None


@dataclass(frozen=True)
class Sample:
    """One reading: the host, each holding environment's usage, and the totals."""

    at: float  # time.monotonic()
    host: HostMemory
    usage: dict[str, Usage]
    measured: Measured


class PressureMonitor:
    """Reads memory each tick and frees some when the host is short (see the module docstring)."""

    def __init__(
        self,
        life: Lifecycle,
        capacity: Capacity,
        policy: PressurePolicy,
        presence: Presence,
        relieve: Relieve,
        *,
        read_host: Callable[[], HostMemory] = HostMemory.read,
    ) -> None:
        self._life = life
        self._capacity = capacity
        self.policy = policy
        self._presence = presence
        self._relieve = relieve
        self.read_host = read_host
        self.last: Sample | None = None
        self.short: str | None = None  # why the host was short at the last check
        self._acted_at = float("-inf")
        self._previous_cpu: tuple[float, float] | None = None  # (when, cpu seconds in total)

    async def sample(self) -> Sample:
        """Read the host and every holding environment's cgroup now."""
        clocks = await self._life.registry.clocks(list(HOLDING), self._life.scope)
        usage: dict[str, Usage] = {}
        for env in clocks:
            found = self._life.driver.usage(env.id)
            if found is not None:
                usage[env.id] = found
        now = time.monotonic()
        cpu_total = sum(u.cpu_seconds for u in usage.values())
        busy = 0.0
        if self._previous_cpu is not None and now > self._previous_cpu[0]:
            busy = max(0.0, cpu_total - self._previous_cpu[1]) / (now - self._previous_cpu[0])
        self._previous_cpu = (now, cpu_total)
        memory = sum(u.memory_bytes for u in usage.values()) >> 20
        self.last = Sample(now, self.read_host(), usage, Measured(round(busy, 4), memory))
        return self.last

    def why_short(self, sample: Sample) -> str | None:
        """Why the host is short of memory in ``sample`` (None: it is not)."""
        host, policy = sample.host, self.policy
        floor = policy.min_available_mb
        if floor is None:
            floor = max(256, host.total_mb * 3 // 100)
        if host.available_mb < floor:
            return f"the host has {host.available_mb} MiB available (under {floor} MiB)"
        if host.psi_full_avg10 is not None and host.psi_full_avg10 > policy.psi_full_avg10:
            return f"tasks stalled on memory {host.psi_full_avg10:g}% of the last 10 s"
        share = policy.environments_share * self._capacity.memory_mb
        if sample.measured.memory_mb > share:
            return (
                f"environments use {sample.measured.memory_mb} MiB of the "
                f"{self._capacity.memory_mb} MiB they were given"
            )
        return None

    async def check(self, now: datetime) -> str | None:
        """Sample, and when the host is short, free one environment's memory.

        Args:
            now: the engine clock's time (activity is compared with it).

        Returns:
            The environment acted on, or None.
        """
        sample = await self.sample()
        self.short = self.why_short(sample) if self.policy.enabled else None
        if self.short is None or sample.at - self._acted_at < self.policy.cooldown:
            return None
        mine = await self._life.registry.list(None, [State.RUNNING], self._life.scope)
        order = self.victims(mine, sample.usage, now)
        if not order:
            log.warning("memory pressure (%s): every environment is in use; not acting", self.short)
            return None
        victim = order[0]
        reason = self._reason(victim, sample, now)
        await self._life.emit(victim.id, EventType.WARNING, reason, {"pressure": self.short})
        done = await self._relieve(victim, reason)
        log.warning("%s: %s (%s)", victim.id, done, reason)
        self._acted_at = sample.at
        return victim.id

    def victims(
        self, envs: list[Environment], usage: dict[str, Usage], now: datetime
    ) -> list[Environment]:
        """The environments that may be acted on, first choice first (see the module docstring)."""

        def over(env: Environment) -> bool:
            found = usage.get(env.id)
            return found is not None and found.memory_bytes >> 20 > env.memory_mb

        idle = [env for env in envs if not self.in_use(env, now)]
        return sorted(idle, key=lambda env: (env.priority, not over(env), _last_used(env)))

    def in_use(self, env: Environment, now: datetime) -> bool:
        """Whether a person is using ``env`` now: a viewer connected, or recent activity."""
        if env.pooled:
            return False  # it waits in a warm pool: nobody has it
        if self._presence(env.id):
            return True
        last = env.last_activity
        return last is not None and (now - last).total_seconds() < self.policy.busy_seconds

    def _reason(self, env: Environment, sample: Sample, now: datetime) -> str:
        used = sample.usage.get(env.id)
        used_mb = used.memory_bytes >> 20 if used is not None else 0
        since = env.last_activity
        idle = f"idle {round((now - since).total_seconds() / 60)} min" if since else "never used"
        return (
            f"memory pressure: {self.short}; freed this environment first "
            f"(priority {env.priority}, {idle}, using {used_mb} MiB of the "
            f"{env.memory_mb} MiB it requested)"
        )


def _last_used(env: Environment) -> datetime:
    return env.last_activity or env.started or env.created
