"""The capacity model: what an environment reserves, what a host offers, and who may take it.

An environment has two sizes. Its **limits** are the spec's ``resources``
(the cgroup ceiling: it may never use more). Its **request** is what it is
expected to need, and what a host reserves for it: the spec's
``resources.request`` when given, else a default for its tier and kind
(:class:`Requests`, measured; an operator overrides any of them). A host
offers its CPUs and memory less a reserve, each multiplied by an
**overcommit** ratio; a request is admitted when it fits beside the requests
already held. Limits never count against capacity: they only have to fit the
host itself (an environment allowed more memory than the host has could
never be given it).

Why these defaults (measured on a 2-core, 24 GiB host, BENCHMARKS.md):

- An idle desktop (Xvnc, openbox, xterm) holds 19-34 MiB of host memory and
  uses next to no CPU (6e-5 of a core in its cgroup); one with Firefox ESR
  230-280 MiB and about 0.05 of a core; a gVisor desktop 53 MiB; an idle
  microVM with a 1 GiB guest about 650 MiB and 0.25 of a core under TCG.
  Requests sit above those figures, so a host full of idle desktops is not
  short of anything.
- CPU overcommit 4 (as E2B places sandboxes): CPU time is compressible. A
  desktop is idle most of the time, and when every desktop is busy at once
  they share the cores and slow down; nothing is lost.
- Memory overcommit 1: memory is not compressible. A running desktop's
  memory cannot be taken back without stopping it, and the requests are
  already what environments are expected to use, not their limits; planning
  on more than the host has would plan on the memory-pressure action
  (:mod:`genos.orchestrator.pressure`) as the normal case.

Every environment that is provisioning, running or suspended holds its
request (a suspended one keeps its memory, and keeping its CPUs reserved
means a resume never waits for room). What does not fit waits in a queue
served strictly in order (priority, higher first, then age), so a large
request at the head is never starved by smaller ones behind it. A request
larger than the whole host is refused at once
(:class:`~genos.errors.CapacityError`), and per-user quotas (which count
requests too) are checked at request time (:class:`~genos.errors.QuotaError`).

The module is plain values and arithmetic: the one-host admission and a
cluster placer call the same :meth:`Capacity.fits`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from genos.composer.knowledge import HostLimits
from genos.errors import CapacityError, InputError, QuotaError
from genos.spec import EnvironmentSpec, Tier

DEFAULT_CPU_OVERCOMMIT = 4.0
DEFAULT_MEMORY_OVERCOMMIT = 1.0
# A VM's cgroup holds its guest plus QEMU itself (genos.runtime.qemu.driver.CGROUP_OVERHEAD_MB).
VM_OVERHEAD_MB = 512
_EPSILON = 1e-9


@dataclass(frozen=True)
class Request:
    """What one environment reserves on a host."""

    cpus: float
    memory_mb: int


@dataclass(frozen=True)
class RequestRule:
    """A default request: ``cpus``, and ``memory_mb`` plus a share of the memory limit.

    ``memory_share`` is for VMs, whose guests fill their memory over time:
    an idle microVM holds QEMU's own few hundred MiB plus about a third of
    its guest's memory.
    """

    cpus: float
    memory_mb: int
    memory_share: float = 0.0

    def apply(self, spec: EnvironmentSpec) -> Request:
        """This rule's request for ``spec``, never above what the environment may use."""
        limits = spec.resources
        ceiling = limits.memory_mb + (VM_OVERHEAD_MB if _is_vm(spec.tier) else 0)
        memory = self.memory_mb + round(self.memory_share * limits.memory_mb)
        return Request(min(self.cpus, limits.cpus), min(memory, ceiling))


def _is_vm(tier: Tier) -> bool:
    return tier in (Tier.MICROVM, Tier.VM)


def kind_of(spec: EnvironmentSpec) -> str:
    """The key of ``spec``'s default request: ``<tier>/desktop``, ``<tier>/apps``, or the VM tier.

    A container desktop with apps was measured with a browser, the heaviest
    app most people start; a VM's own memory is its guest's, whatever runs in it.
    """
    if _is_vm(spec.tier):
        return spec.tier.value
    return f"{spec.tier.value}/{'apps' if spec.apps else 'desktop'}"


DEFAULT_RULES: Mapping[str, RequestRule] = {
    "container/desktop": RequestRule(cpus=0.02, memory_mb=64),
    "container/apps": RequestRule(cpus=0.05, memory_mb=320),
    "gvisor/desktop": RequestRule(cpus=0.03, memory_mb=96),
    "gvisor/apps": RequestRule(cpus=0.06, memory_mb=384),
    "microvm": RequestRule(cpus=0.25, memory_mb=320, memory_share=0.35),
    "vm": RequestRule(cpus=0.25, memory_mb=352, memory_share=0.35),
}


@dataclass(frozen=True)
class Requests:
    """The request of every environment: the spec's own, else the rule for its kind."""

    rules: Mapping[str, RequestRule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    from_limits: bool = False  # reserve the limits themselves (no rules): the old, strict model

    @classmethod
    def limits(cls) -> Requests:
        """A policy that reserves every environment's limits (nothing is overcommitted)."""
        return cls({}, from_limits=True)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Requests:
        """These rules with some replaced (an operator's file: ``kind: {cpus, memory_mb, ...}``).

        Raises:
            InputError: an unknown kind, or a rule that is not positive numbers.
        """
        rules = dict(self.rules)
        for kind, value in overrides.items():
            if kind not in DEFAULT_RULES:
                known = ", ".join(sorted(DEFAULT_RULES))
                raise InputError(f"unknown kind {kind!r} in the requests (known: {known})")
            rules[kind] = _rule(kind, value, rules[kind])
        return replace(self, rules=rules)

    def for_spec(self, spec: EnvironmentSpec) -> Request:
        """What ``spec`` reserves: its explicit request, filled in from the rule for its kind."""
        limits = spec.resources
        if self.from_limits:
            return Request(limits.cpus, limits.memory_mb)
        default = self.rules[kind_of(spec)].apply(spec)
        own = limits.request
        if own is None:
            return default
        return Request(
            own.cpus if own.cpus is not None else default.cpus,
            own.memory_mb if own.memory_mb is not None else default.memory_mb,
        )


def _rule(kind: str, value: Any, base: RequestRule) -> RequestRule:
    if not isinstance(value, Mapping) or not set(value) <= {"cpus", "memory_mb", "memory_share"}:
        raise InputError(f"requests.{kind}: give cpus, memory_mb and/or memory_share")
    try:
        rule = RequestRule(
            cpus=float(value.get("cpus", base.cpus)),
            memory_mb=int(value.get("memory_mb", base.memory_mb)),
            memory_share=float(value.get("memory_share", base.memory_share)),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"requests.{kind}: numbers only") from exc
    if rule.cpus <= 0 or rule.memory_mb <= 0 or not 0 <= rule.memory_share <= 1:
        raise InputError(f"requests.{kind}: cpus and memory_mb must be positive, share 0..1")
    return rule


@dataclass(frozen=True)
class Capacity:
    """What environments on one host may reserve in total.

    ``cpus`` and ``memory_mb`` are what GenOS gives environments (the host's
    own less a reserve, or what the operator set); requests may add up to them
    times the overcommit ratios. An environment's limits must fit the machine
    itself (``host_cpus``/``host_memory_mb``): a limit no host could reach
    says nothing, but one beyond the operator's share is allowed, since only
    requests are reserved. Constructed directly, nothing is overcommitted; :meth:`from_host`
    applies the defaults an operator of desktop hosts would choose.
    """

    cpus: float
    memory_mb: int
    cpu_overcommit: float = 1.0
    memory_overcommit: float = 1.0
    host_cpus: float | None = None  # the machine's own (limits must fit it); None: ``cpus``
    host_memory_mb: int | None = None  # the same for memory; None: ``memory_mb``

    @classmethod
    def from_host(
        cls,
        reserve_mb: int = 1024,
        reserve_cpus: float = 0.0,
        *,
        cpu_overcommit: float = DEFAULT_CPU_OVERCOMMIT,
        memory_overcommit: float = DEFAULT_MEMORY_OVERCOMMIT,
    ) -> Capacity:
        """This host's CPUs and memory (``/proc/meminfo``) less a reserve, with overcommit.

        Args:
            reserve_mb: memory kept for the host and GenOS itself.
            reserve_cpus: CPUs kept back.
            cpu_overcommit: how many times its CPUs the host's requests may add up to.
            memory_overcommit: the same for memory.

        Returns:
            The capacity environments may share.
        """
        limits = HostLimits.from_host(reserve_mb=reserve_mb)
        whole = HostLimits.from_host(reserve_mb=0)
        return cls(
            cpus=max(0.25, limits.cpus - reserve_cpus),
            memory_mb=limits.memory_mb,
            cpu_overcommit=cpu_overcommit,
            memory_overcommit=memory_overcommit,
            host_cpus=whole.cpus,
            host_memory_mb=whole.memory_mb,
        )

    @property
    def allocatable_cpus(self) -> float:
        """What requests may add up to in CPUs."""
        return self.cpus * self.cpu_overcommit

    @property
    def allocatable_memory_mb(self) -> int:
        """What requests may add up to in MiB."""
        return int(self.memory_mb * self.memory_overcommit)

    def fits(self, used: Usage, cpus: float, memory_mb: int) -> bool:
        """True if a request of ``cpus``/``memory_mb`` fits beside the requests ``used``."""
        return (
            used.cpus + cpus <= self.allocatable_cpus + _EPSILON
            and used.memory_mb + memory_mb <= self.allocatable_memory_mb
        )

    def check_possible(self, request: Request, limits: Request | None = None) -> None:
        """Refuse what could never run here, even on an empty host.

        Args:
            request: what the environment would reserve.
            limits: what it may use at most; None checks the request alone.

        Raises:
            CapacityError: the request exceeds what the whole host offers, or the
                limits exceed the host itself.
        """
        if (
            request.cpus > self.allocatable_cpus + _EPSILON
            or request.memory_mb > self.allocatable_memory_mb
        ):
            raise CapacityError(
                f"needs {request.cpus:g} cpus and {request.memory_mb} MB reserved; this host "
                f"offers at most {self.allocatable_cpus:g} cpus and "
                f"{self.allocatable_memory_mb} MB to environments"
            )
        host_cpus = self.host_cpus if self.host_cpus is not None else self.cpus
        host_mb = self.host_memory_mb if self.host_memory_mb is not None else self.memory_mb
        if limits is not None and (
            limits.cpus > host_cpus + _EPSILON or limits.memory_mb > host_mb
        ):
            raise CapacityError(
                f"may use up to {limits.cpus:g} cpus and {limits.memory_mb} MB; this host has "
                f"{host_cpus:g} cpus and {host_mb} MB"
            )


@dataclass(frozen=True)
class Usage:
    """A sum over environments: how many, and their CPUs and memory (requests or limits)."""

    environments: int = 0
    cpus: float = 0.0
    memory_mb: int = 0

    def plus(self, cpus: float, memory_mb: int) -> Usage:
        """This usage with one more environment holding ``cpus`` and ``memory_mb``."""
        return Usage(self.environments + 1, self.cpus + cpus, self.memory_mb + memory_mb)


@dataclass(frozen=True)
class Measured:
    """What environments really use now, read from their cgroups."""

    cpus: float  # cores busy, averaged since the previous reading
    memory_mb: int


@dataclass(frozen=True)
class Quota:
    """The most one user's live environments may reserve; None means no limit."""

    environments: int | None = None
    cpus: float | None = None
    memory_mb: int | None = None

    def check(self, used: Usage, cpus: float, memory_mb: int) -> None:
        """Refuse a request that would take the user over a limit.

        Args:
            used: what the user's live environments reserve now.
            cpus: what the request reserves.
            memory_mb: what the request reserves.

        Raises:
            QuotaError: naming the first limit exceeded.
        """
        wanted = (
            ("environments", self.environments, used.environments + 1),
            ("cpus", self.cpus, used.cpus + cpus),
            ("memory_mb", self.memory_mb, used.memory_mb + memory_mb),
        )
        for limit, allowed, total in wanted:
            if allowed is not None and total > allowed + _EPSILON:
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
    """A waiting request and its 1-based place in the queue (with what it would reserve)."""

    env_id: str
    owner: str
    position: int
    priority: int
    cpus: float
    memory_mb: int
    since: datetime


@dataclass(frozen=True)
class HostStatus:
    """What :meth:`Engine.host` reports: capacity, requests, limits, real use, and the queue.

    ``used`` is the sum of the holding environments' requests (what admission
    counts); ``limits`` the sum of their limits; ``measured`` what they really
    use now (None until the first reading); ``pressure`` why the host is short
    of memory at the last check (None: it is not).
    """

    name: str
    capacity: Capacity
    used: Usage
    queue: list[QueueEntry] = field(default_factory=list)
    limits: Usage = Usage()
    measured: Measured | None = None
    pressure: str | None = None  # why the host is short of memory, if it is

    @property
    def free(self) -> Usage:
        """What requests may still reserve."""
        return Usage(
            0,
            max(0.0, self.capacity.allocatable_cpus - self.used.cpus),
            max(0, self.capacity.allocatable_memory_mb - self.used.memory_mb),
        )
