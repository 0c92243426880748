"""Warm pools: environments started ahead of time, handed to the first matching request.

A pool is a spec and a size (``genos pool set``). The keeper keeps that many
of its environments started, owned by the system user ``genos-pool``, at
the lowest priority, and only when they fit beside what users hold: a pool
never queues ahead of a person, and is the first thing the memory-pressure
monitor frees. Pooled environments have no TTL or idle timeout until claimed.

A request whose spec has the pool's digest (:func:`pool_digest`: the spec
without its name, provenance and lifetime, which say who asked and for how
long, not what runs) takes a running member in one compare-and-set
(:func:`genos.orchestrator.poolstore.claim`): it becomes the requester's,
with their spec, request id and priority, and its TTL and idle time start
then. Display tokens are only ever minted for its owner, so nothing of the
pool's time exists for anyone. A claimed environment never returns to a
pool; when it ends, it ends, and the keeper starts another.

Pools live in the registry. After a restart the keeper finds them, reconcile
has adopted (or failed) their members, and the next refill tops them up. A
pool whose members keep failing waits :data:`FAILURE_PAUSE` before it is
refilled again, and nothing is refilled while the host is short of memory.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from genos.errors import GenOSError, InputError, NotFoundError, RegistryError, StateError
from genos.orchestrator.capacity import Quota
from genos.orchestrator.poolstore import Claim
from genos.orchestrator.records import Environment, Pool
from genos.orchestrator.states import WAITING, State
from genos.spec import EnvironmentSpec, PersistenceMode, dump

if TYPE_CHECKING:
    from genos.orchestrator.engine import Engine

log = logging.getLogger("genos.orchestrator.pools")
POOL_USER = "genos-pool"
POOL_USER_ID = "upool"
POOL_PRIORITY = -1000  # below any person's request
MAX_SIZE = 1000
REFILL_BURST = 8  # environments one refill starts per pool
FAILURE_PAUSE = timedelta(minutes=5)
FAILURES_TO_PAUSE = 3
IDENTITY_FIELDS = ("name", "provenance", "lifetime")


def pool_digest(spec: EnvironmentSpec) -> str:
    """The sha256 of ``spec`` without the fields that say who asked and for how long."""
    data = {k: v for k, v in dump(spec).items() if k not in IDENTITY_FIELDS}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_poolable(spec: EnvironmentSpec) -> None:
    """Refuse a spec that cannot be started before its owner is known.

    Raises:
        InputError: it mounts its owner's volume, or links to its owner's environments.
    """
    if spec.persistence.mode is not PersistenceMode.EPHEMERAL:
        raise InputError("a pool's environments are ephemeral: a volume belongs to its owner")
    if spec.network.links:
        raise InputError("a pool's environments cannot link to environments by name")


@dataclass(frozen=True)
class PoolStatus:
    """A pool and how many of its environments are ready and on the way."""

    pool: Pool
    ready: int
    starting: int


class PoolKeeper:
    """Keeps the engine's pools filled and serves claims (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._by_digest: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the pools from the registry (at start)."""
        pools = await self._engine.registry.pools()
        self._by_digest = {pool.digest: pool.id for pool in pools}

    async def _pool_user(self) -> None:
        """Make the system user pooled environments belong to, once (with the first pool)."""
        accounts = self._engine.registry.accounts
        try:
            await accounts.get_user(POOL_USER_ID)
        except NotFoundError:
            try:
                await accounts.add_user(POOL_USER, "user", user_id=POOL_USER_ID)
            except RegistryError:  # another control plane made it meanwhile
                await accounts.get_user(POOL_USER_ID)

    def match(self, spec: EnvironmentSpec) -> str | None:
        """The pool whose environments ``spec`` can take, if there is one."""
        if not self._by_digest:
            return None
        return self._by_digest.get(pool_digest(spec))

    async def set(
        self, spec: EnvironmentSpec, size: int, *, prompt: str | None, actor: str
    ) -> PoolStatus:
        """Create the pool of ``spec``, or set its size (the keeper fills or trims it now).

        Args:
            spec: what the pool's environments are.
            size: how many to keep ready (0 keeps the pool, empty).
            prompt: the words it was composed from, if any.
            actor: the user who set it.

        Raises:
            InputError: a size out of range, or a spec a pool cannot hold.
            CapacityError: one of its environments could never fit this host.
        """
        if not 0 <= size <= MAX_SIZE:
            raise InputError(f"a pool's size is 0 to {MAX_SIZE}, not {size}")
        check_poolable(spec)
        engine = self._engine
        engine.check_fits(spec)
        await self._pool_user()
        new = Pool(
            id=f"p{secrets.token_hex(5)}", digest=pool_digest(spec),
            spec_json=spec.model_dump_json(), size=size, prompt=prompt, set_by=actor,
            created=engine.clock.now(), updated=engine.clock.now(),
        )  # fmt: skip
        pool = await engine.registry.put_pool(new)
        self._by_digest[pool.digest] = pool.id
        await self.refill()
        return await self.status(pool.id)

    async def remove(self, pool_id: str, *, actor: str) -> Pool:
        """Remove a pool and end its unclaimed environments.

        Raises:
            NotFoundError: no such pool.
        """
        pool = await self._engine.registry.delete_pool(pool_id)
        self._by_digest.pop(pool.digest, None)
        members = (await self._engine.registry.pool_members()).get(pool_id, [])
        for env_id, _ in members:
            await self._end(env_id, f"pool {pool_id} removed by {actor}")
        return pool

    async def status(self, pool_id: str) -> PoolStatus:
        """One pool with its counts.

        Raises:
            NotFoundError: no such pool.
        """
        pool = await self._engine.registry.get_pool(pool_id)
        return (await self._statuses([pool]))[0]

    async def all(self) -> builtins.list[PoolStatus]:
        """Every pool with its counts, oldest first."""
        return await self._statuses(await self._engine.registry.pools())

    async def _statuses(self, pools: builtins.list[Pool]) -> builtins.list[PoolStatus]:
        members = await self._engine.registry.pool_members()
        out = []
        for pool in pools:
            states = [state for _, state in members.get(pool.id, [])]
            ready = sum(state is State.RUNNING for state in states)
            out.append(PoolStatus(pool, ready, len(states) - ready))
        return out

    async def claim(
        self,
        pool_id: str,
        owner: str,
        spec: EnvironmentSpec,
        *,
        request_id: str | None,
        priority: int,
        quota: Quota | None,
    ) -> Environment | None:
        """Hand a ready environment of ``pool_id`` to ``owner`` (None: none is ready).

        Raises:
            QuotaError: the owner would go over ``quota``.
            ConflictError: ``request_id`` was used for a different spec.
        """
        wanted = Claim(pool_id, owner, spec, priority, request_id)
        return await self._engine.registry.claim(wanted, quota)

    async def refill(self) -> None:
        """Start what each pool lacks (as far as it fits now), and end what it has too many of."""
        engine = self._engine
        if engine.pressure.short is not None:
            return
        async with self._lock:
            pools = await engine.registry.pools()
            if not pools:
                return
            members = await engine.registry.pool_members()
            failing = await engine.registry.pool_failures(engine.clock.now() - FAILURE_PAUSE)
            for pool in pools:
                have = members.get(pool.id, [])
                if len(have) > pool.size:
                    await self._trim(pool, have)
                elif failing.get(pool.id, 0) >= FAILURES_TO_PAUSE:
                    log.warning("pool %s: %d recent failures; not refilling for now", pool.id,
                                failing[pool.id])  # fmt: skip
                else:
                    await self._fill(pool, min(pool.size - len(have), REFILL_BURST))

    async def _fill(self, pool: Pool, missing: int) -> None:
        engine = self._engine
        request = engine.requests.for_spec(pool.spec)
        plan, _waiting = await engine.placer.plan(engine.registry)
        for _ in range(missing):
            if plan.place(request.cpus, request.memory_mb) is None:
                return  # a pool never waits in the queue: it fills when there is room
            try:
                await engine.request(POOL_USER_ID, pool.spec, priority=POOL_PRIORITY,
                                     pool_id=pool.id)  # fmt: skip
            except GenOSError as exc:
                log.warning("pool %s: cannot start an environment: %s", pool.id, exc)
                return

    async def _trim(self, pool: Pool, have: builtins.list[tuple[str, State]]) -> None:
        # Those still waiting or starting go first, then the newest ready ones.
        ranked = sorted(enumerate(have), key=lambda m: (m[1][1] is State.RUNNING, -m[0]))
        order = [member for _, member in ranked]
        for env_id, _ in order[: len(have) - pool.size]:
            await self._end(env_id, f"pool {pool.id} is now {pool.size}")

    async def _end(self, env_id: str, reason: str) -> None:
        engine = self._engine
        if not await engine.registry.retire(env_id):
            return  # a user claimed it meanwhile: it is theirs now
        try:
            env = await engine.get(env_id)
            if env.state in WAITING:
                await engine.cancel(env_id, reason=reason)
            else:
                await engine.terminate(env_id, reason=reason)
        except (StateError, NotFoundError):
            pass  # ended or claimed meanwhile
