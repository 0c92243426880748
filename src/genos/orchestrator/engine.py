"""The orchestration engine: the async API the HTTP layer and the CLI call.

One :class:`Engine` runs per host. ``request`` stores the environment and
returns at once; admission (capacity, then the queue) and provisioning run in
the background, and clients follow along with ``wait`` or ``events``. Every
verb writes its transition to the registry before touching the driver.
Admission and reconcile never run at the same time (one lock), and nothing
holding an environment's lock ever waits for that admission lock.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

from genos.errors import ClosedError, GenOSError, StateError
from genos.ids import new_env_id
from genos.orchestrator.admission import Admission
from genos.orchestrator.capacity import (
    Capacity,
    HostStatus,
    QueueEntry,
    QuotaPolicy,
    Request,
    Requests,
    no_quota,
)
from genos.orchestrator.events import EventBus
from genos.orchestrator.lifecycle import SYSTEM, Lifecycle, log
from genos.orchestrator.placing import Placer, SingleHost
from genos.orchestrator.pools import PoolKeeper
from genos.orchestrator.pressure import Presence, PressureMonitor, PressurePolicy, nobody
from genos.orchestrator.queries import NewEnvironment
from genos.orchestrator.reads import Reads
from genos.orchestrator.reconcile import ReconcileReport, reconcile
from genos.orchestrator.records import Environment, EventType
from genos.orchestrator.registry import Registry
from genos.orchestrator.states import HOLDING, State
from genos.orchestrator.timers import Timers
from genos.orchestrator.verbs import Verbs
from genos.runtime.driver import Driver
from genos.spec import EnvironmentSpec

STALE_SAMPLE = 2.0  # seconds a usage reading is shown before a fresh one is taken
REFILL_DELAY = 1.0  # seconds between a claim and the refill it starts


class Engine(Verbs, Reads):
    """Lifecycle, queue, timers and reconcile for the environments of one host.

    The verbs on an existing environment (suspend, resume, terminate,
    cancel) are in :class:`~genos.orchestrator.verbs.Verbs`; reading them (get, list,
    wait, events) in :class:`~genos.orchestrator.reads.Reads`."""

    def __init__(
        self,
        registry: Registry,
        driver: Driver,
        capacity: Capacity | None = None,
        *,
        quotas: QuotaPolicy = no_quota,
        requests: Requests | None = None,
        pressure: PressurePolicy | None = None,
        presence: Presence = nobody,
        host_name: str | None = None,
        warning_lead: float = 60.0,
        tick_interval: float = 5.0,
        reconcile_interval: float = 60.0,
        activity_interval: float = 30.0,
        event_poll: float = 2.0,
    ) -> None:
        """Set the engine up; :meth:`start` (or ``async with``) brings it to life.

        Args:
            registry: the open registry; its clock is the engine's clock.
            driver: the runtime driver of this host.
            capacity: what environments may hold here; default the host less 1 GiB.
            quotas: each owner's quota (None: unlimited).
            requests: what each environment reserves (default: the measured defaults).
            pressure: when the host is short of memory and how to act (default policy).
            presence: whether a viewer is connected to an environment now (the gateway's).
            host_name: this host's name in the registry; default the hostname.
            warning_lead: seconds between a TTL/idle warning event and the action.
            tick_interval: seconds between timer checks.
            reconcile_interval: seconds between periodic reconciles.
            activity_interval: store user activity at most this often (seconds).
            event_poll: seconds between registry re-reads of a quiet event stream.
        """
        self.registry = registry
        self.driver = driver
        self.capacity = capacity or Capacity.from_host()
        self.clock = registry.clock
        self.quotas = quotas
        self.requests = requests or Requests()
        self.host_name = host_name or socket.gethostname()
        self._intervals = (tick_interval, reconcile_interval, event_poll)
        self._life = Lifecycle(registry, driver, EventBus(), self.host_name)
        self._timers = Timers(self._life, warning_lead, activity_interval)
        self.placer: Placer = SingleHost(self.host_name, self.capacity)
        self._admission = Admission(self._life, self.placer)
        self.pools = PoolKeeper(self)
        # Called before a request is stored; raises when nothing new can be taken (a
        # cluster whose etcd has no quorum).
        self.precheck: Callable[[], Awaitable[None]] | None = None
        self.pressure = PressureMonitor(
            self._life, self.capacity, pressure or PressurePolicy(), presence, self._relieve
        )
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self, *, maintenance: bool = True) -> ReconcileReport:
        """Reconcile with the host, admit what waits, and start the maintenance loop.

        Args:
            maintenance: run timers and periodic reconcile in the background
                (tests call :meth:`tick` and :meth:`reconcile` themselves).

        Returns:
            What the first reconcile did.
        """
        await self.pools.load()
        report = ReconcileReport(complete=False)
        if self.leading():
            report = await self.reconcile()
            await self.pools.refill()
        if maintenance:
            self._spawn(self._maintain())
        return report

    def leading(self) -> bool:
        """Whether this engine runs the singletons (always on one host; the leader in a cluster)."""
        return self._admission.allowed()

    def use_placer(self, placer: Placer, *, every_host: bool = False) -> None:
        """Place admitted environments with ``placer``; ``every_host``: this engine answers for
        the environments of every host (a cluster's control plane), not only its own."""
        self.placer = self._admission.placer = placer
        self._life.every_host = every_host

    async def admit(self) -> None:
        """Serve the queue now (a pass; what fits starts)."""
        await self._admit()

    async def lose(self, env: Environment, reason: str, *, actor: str = SYSTEM) -> bool:
        """Record that ``env``'s host is gone with it (``lost``); False if it ended meanwhile."""
        try:
            await self._life.move(env.id, env.state, State.LOST, actor=actor, reason=reason)
        except StateError:
            return False
        return True

    async def note(self, env_id: str, kind: EventType, message: str, data: dict[str, Any]) -> None:
        """Add an event to an environment's history (and wake its followers)."""
        await self._life.emit(env_id, kind, message, data)

    async def relocate(
        self, env_id: str, old: str, new: str, move: Callable[[], Awaitable[object]], note: str
    ) -> None:
        """Under ``env_id``'s lock (no verb meanwhile): ``move()`` it from host ``old`` to
        ``new`` (a drain), then record where it lives now with ``note`` as the event.

        Raises:
            StateError: it is no longer held on ``old``.
            GenOSError: ``move`` failed (it is where it was, or ended: the caller says).
        """
        async with self._life.lock(env_id):
            env = await self.registry.get(env_id)
            if env.host != old or env.state not in HOLDING:
                raise StateError(env.state.value, [s.value for s in HOLDING], f"move from {old}")
            await self._life.call("relocate", move())
            await self.registry.relocate(env_id, old, new, note)
        self._life.bus.publish(env_id)

    def when_ended(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(env_id)`` as each environment ends here (its final state is
        recorded by this process: failed, lost or terminated), or another replica of a
        cluster tells of its end (:meth:`ended_elsewhere`). A listener may hear of one
        environment more than once."""
        self._life.on_end.append(listener)

    def ended_elsewhere(self, env_id: str) -> None:
        """An environment left every node (a cluster's other replica ended it): let go of
        what this process kept of it, as when it ends here."""
        self._life.ended(env_id)

    def lead(self, leading: Callable[[], bool], defer: Callable[[], Awaitable[None]]) -> None:
        """Run the singletons (admission, timers, reconcile, pools) only while ``leading()``;
        otherwise admission asks are passed on by ``defer`` (a cluster's follower replica)."""
        self._admission.allowed = leading
        self._admission.defer = defer

    async def aclose(self) -> None:
        """Stop background work; the registry and the driver stay open (their owner closes them).

        Provisioning in flight is cancelled: the registry still says
        ``provisioning``, and the next start's reconcile adopts or fails it.
        """
        self._closed = self._admission.closed = True
        tasks = [*self._background, *self._life.tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def request(
        self,
        owner: str,
        spec: EnvironmentSpec,
        *,
        request_id: str | None = None,
        priority: int = 0,
        pool_id: str | None = None,
        replaces: str | None = None,
    ) -> Environment:
        """Ask for an environment; returns at once, provisioning goes on in the background.

        A spec that matches a warm pool takes one of its ready environments
        instead (``running`` at once); when none is ready, it is made as usual.

        Args:
            owner: the user id the environment belongs to.
            spec: what to build.
            request_id: the client's idempotency key: the same owner and key
                always return the same environment.
            priority: higher is served first from the queue.
            pool_id: make it to wait in this warm pool (the pool keeper's own requests).
            replaces: the lost environment it replaces (a cluster's leader).

        Returns:
            The environment, ``provisioning`` or ``queued`` (with its position),
            ``running`` from a pool, or whatever state a repeated request's environment is in.

        Raises:
            CapacityError: the spec needs more than this host has in total.
            QuotaError: the owner would go over their quota.
            ConflictError: ``request_id`` was used for a different spec.
            NotFoundError: no such owner.
        """
        self._check_open()
        if self.precheck is not None:
            await self.precheck()
        reserves = self.check_fits(spec)
        pool = self.pools.match(spec) if pool_id is None and replaces is None else None
        if pool is not None:
            claimed = await self._claim(pool, owner, spec, request_id, priority)
            if claimed is not None:
                return claimed
        new = NewEnvironment(
            new_env_id(), owner, spec, priority, request_id, reserves, pool_id, replaces
        )
        env, created = await self.registry.create(new, self.quotas(owner))
        if not created:
            return await self.registry.get(env.id)
        self._life.keep_spec(env.id, spec)
        self._life.logger(env.id).info("requested by %s", owner)
        self._life.bus.publish(env.id)
        self._admission.wanted.add(env.id)
        try:
            await self._admit()
        finally:
            self._admission.wanted.discard(env.id)
            admitted = self._admission.admitted.pop(env.id, None)
        return admitted if admitted is not None else await self.registry.get(env.id)

    def check_fits(self, spec: EnvironmentSpec) -> Request:
        """What ``spec`` reserves here, refused if it could never run on this host.

        Raises:
            CapacityError: its request exceeds what the host offers, or its limits the host.
        """
        reserves = self.requests.for_spec(spec)
        self.placer.check_possible(reserves, Request(spec.resources.cpus, spec.resources.memory_mb))
        return reserves

    async def _claim(
        self, pool_id: str, owner: str, spec: EnvironmentSpec, request_id: str | None, priority: int
    ) -> Environment | None:
        env = await self.pools.claim(
            pool_id, owner, spec, request_id=request_id, priority=priority, quota=self.quotas(owner)
        )
        if env is None:
            return None
        self._life.logger(env.id).info("claimed from pool %s by %s", pool_id, owner)
        self._life.bus.publish(env.id)
        self._spawn(self._refill_soon())
        return env

    async def _refill_soon(self) -> None:
        # Starting the pool's next environment takes the host's CPU for a moment:
        # not while the claimant's viewer connects and draws its first frame.
        await asyncio.sleep(REFILL_DELAY)
        await self.pools.refill()

    async def host(self) -> HostStatus:
        """This host's capacity, what environments reserve and may use, their real use, and
        the queue."""
        used, limits = await self.registry.host_totals(self.host_name)
        last = self.pressure.last
        if last is None or time.monotonic() - last.at > STALE_SAMPLE:
            last = await self.pressure.sample()
        queue = [
            QueueEntry(
                e.id, e.owner, e.queue_position or n, e.priority, e.cpus, e.memory_mb, e.created
            )
            for n, e in enumerate(await self.registry.queue(), 1)
        ]
        return HostStatus(
            self.host_name, self.capacity, used, queue, limits, last.measured, self.pressure.short
        )

    async def reconcile(self) -> ReconcileReport:
        """Compare the registry with the host and repair the difference (see ``reconcile``).

        Returns:
            What was adopted, failed, destroyed and repaired.
        """
        async with self._admission.lock:
            report = await reconcile(self._life, set(self._life.tasks))
        await self._admit()
        return report

    async def tick(self) -> None:
        """Check TTL and idle deadlines, then memory pressure (the maintenance loop calls this)."""
        await self._timers.tick(self.clock.now(), self._timed)
        await self.pressure.check(self.clock.now())
        await self.pools.refill()

    async def _admit(self) -> None:
        await self._admission.admit()

    async def _maintain(self) -> None:
        tick, every, _ = self._intervals
        since = 0.0
        while True:
            await self.clock.sleep(tick)
            since += tick
            due = since >= every
            if due:
                since = 0.0
                self._life.forget_late()  # every replica: each keeps its own loggers
            if not self.leading():
                continue
            try:
                await self.tick()
                if due:
                    await self.reconcile()
            except GenOSError as exc:
                log.warning("maintenance failed: %s", exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the engine is closed")
