"""Admission: start what fits on the host, in queue order; provision it in the background.

The queue is served strictly in order (priority, then age): when the head does
not fit, nothing behind it starts, and every ``requested`` environment behind
it becomes ``queued``. An admitted environment is recorded ``provisioning``
(with this host's name) before its provisioning task exists, under the
admission lock that reconcile also takes, so reconcile never mistakes a fresh
admission for one abandoned by a dead control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

from genos.errors import (
    CapabilityError,
    ClusterUnavailableError,
    ExternalError,
    GenOSError,
    StateError,
)
from genos.orchestrator import provision
from genos.orchestrator.lifecycle import SYSTEM, Lifecycle
from genos.orchestrator.placing import Placer
from genos.orchestrator.queries import Move, Note
from genos.orchestrator.records import Environment, EventType
from genos.orchestrator.states import State

CREATE_TRIES = 3  # hosts a create is tried on before the environment fails


class Admission:
    """The queue's server and the provisioning tasks it starts."""

    def __init__(self, life: Lifecycle, placer: Placer) -> None:
        self.lock = asyncio.Lock()
        self.closed = False
        self._asked = 0  # admission passes asked for
        self._served = 0  # asks covered by a finished pass
        self._life = life
        self.placer = placer
        # Whether this process may admit (a cluster's follower replica may not):
        # when it may not, ``defer`` passes the ask on (to the leader).
        self.allowed: Callable[[], bool] = lambda: True
        self.defer: Callable[[], Awaitable[None]] | None = None
        # Requests waiting for a pass, and what the pass made of theirs (so a
        # request answers with its admitted environment without reading it back).
        self.wanted: set[str] = set()
        self.admitted: dict[str, Environment] = {}

    async def admit(self) -> None:
        """Start what fits, in queue order; mark the rest ``queued``.

        Concurrent callers share passes: a pass that began after a caller's
        ask read the registry after that caller's writes, so it serves them
        too (many simultaneous requests cost a few passes, not one each).
        """
        if self.closed:
            return
        if not self.allowed():
            if self.defer is not None:
                await self.defer()
            return
        self._asked += 1
        mine = self._asked
        async with self.lock:
            if self._served >= mine:
                return
            covers = self._asked
            await self._pass()
            self._served = max(self._served, covers)

    async def _pass(self) -> None:
        plan, waiting = await self.placer.plan(self._life.registry)
        admit: list[tuple[Environment, str]] = []
        wait: list[Environment] = []
        for env in waiting:
            host = None if wait else plan.place(env.cpus, env.memory_mb)
            if host is not None:
                admit.append((env, host))
            elif env.state is State.REQUESTED or not wait:
                wait.append(env)  # strict order: nothing overtakes the head of the queue
        # Decided in queue order, stored together: one transaction (one commit)
        # for the whole pass. One that was cancelled meanwhile is refused alone,
        # and frees its place for the next pass.
        life = self._life
        creating: Note = (EventType.PROGRESS, "creating sandbox", {"driver": life.driver.name})
        moves = [self._admission(env, host, creating) for env, host in admit]
        moves += [
            Move(env.id, env.state, State.QUEUED, SYSTEM, _waiting(env))
            for env in wait
            if env.state is State.REQUESTED
        ]
        for result in (await life.move_each(moves))[: len(admit)]:
            if isinstance(result, Environment):  # else cancelled, or admitted elsewhere
                self._started(result)

    def _admission(self, env: Environment, host: str, creating: Note) -> Move:
        reason = "admitted" if host == self._life.host_name else f"admitted to {host}"
        return Move(env.id, env.state, State.PROVISIONING, SYSTEM, reason, host, after=(creating,))

    def _started(self, env: Environment) -> None:
        """Provision ``env``, just recorded ``provisioning``, in a task of its own."""
        life = self._life
        if env.id in self.wanted:
            self.admitted[env.id] = env
        task = asyncio.create_task(self._provision(env), name=f"genos-provision-{env.id}")
        life.tasks[env.id] = task
        task.add_done_callback(lambda done: self._forget(env.id, done))

    def _forget(self, env_id: str, task: asyncio.Task[None]) -> None:
        if self._life.tasks.get(env_id) is task:
            del self._life.tasks[env_id]

    async def _provision(self, env: Environment) -> None:
        life = self._life
        async with life.lock(env.id):
            try:
                await self._steps(env)
            except Exception as exc:  # noqa: BLE001 - any failure fails the env, not the engine
                reason = provision.describe(exc)
                life.logger(env.id).warning("provisioning failed: %s", reason)
                with contextlib.suppress(StateError):  # terminated meanwhile
                    await life.fail(env.id, State.PROVISIONING, reason)
            else:
                return  # running holds what provisioning held: nothing new fits
        await self.admit()  # a failure freed its share of the host

    async def _create(self, env: Environment, progress: provision.Progress) -> Environment:
        """Create it where it was placed; when that fails and another host could take it
        (a cluster's other nodes), clear the failed attempt and try there, up to
        :data:`CREATE_TRIES` hosts. The environment as placed at last."""
        life = self._life
        spec = life.spec_of(env)
        tried: set[str] = set()
        while True:
            try:
                await life.call("create", provision.create(
                    life.driver, env.id, spec, progress, env.owner, node=env.host))  # fmt: skip
            except ClusterUnavailableError:
                raise  # no node can take it now: another try would fail the same way
            except (ExternalError, CapabilityError) as exc:
                tried.add(env.host or "")
                other = await self._elsewhere(env, frozenset(tried))
                if other is None or len(tried) >= CREATE_TRIES:
                    raise
                reason = provision.describe(exc)
                with contextlib.suppress(GenOSError):  # the failed node cleans up what is left
                    await life.call("destroy", life.driver.destroy(env.id))
                await life.registry.rehost(env.id, env.host or "", other, reason)
                life.logger(env.id).warning("create failed on %s, retrying on %s: %s",
                                            env.host, other, reason)  # fmt: skip
                life.bus.publish(env.id)
                env = dataclasses.replace(env, host=other)
            else:
                return env

    async def _elsewhere(self, env: Environment, avoid: frozenset[str]) -> str | None:
        """Another host that takes ``env`` now, none of ``avoid`` (None: no other).

        Without the admission lock (this runs under the environment's lock, which
        reconcile takes under the admission lock): a pass at the same moment may
        count the same free room once more, as a request admitted a moment later would.
        """
        plan, _ = await self.placer.plan(self._life.registry)
        return plan.place(env.cpus, env.memory_mb, avoid)

    async def _steps(self, env: Environment) -> None:
        life = self._life
        driver = life.driver

        async def report(message: str, data: dict[str, object]) -> None:
            await life.emit(env.id, EventType.PROGRESS, message, data)

        # "creating sandbox" was stored with the move to provisioning.
        async with provision.Progress(report) as progress:
            env = await self._create(env, progress)
        before: list[Note] = [(EventType.PROGRESS, "display ready", {})]
        if getattr(driver, "starts_on_create", False):
            # Its create started it already (a cluster's node does both): nothing
            # happens between the two steps, so both go with the move.
            before.insert(0, (EventType.PROGRESS, "sandbox ready", {}))
        else:
            await report("sandbox ready", {})
        await life.call("start", driver.start(env.id))
        await life.move(
            env.id, State.PROVISIONING, State.RUNNING, actor=SYSTEM, reason="provisioned",
            before=before,  # stored with the move: one commit
        )  # fmt: skip


def _waiting(env: Environment) -> str:
    return f"waiting for capacity ({env.cpus:g} cpus, {env.memory_mb} MB)"
