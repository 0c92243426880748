"""The registry: environments, their transitions and events, users and tokens, in SQL.

Access is sync SQLAlchemy run in the registry's own small thread pool (one
connection per thread) and awaited from asyncio. That keeps one code path for
SQLite and PostgreSQL with their mature sync drivers, and lets SQLite's
``BEGIN IMMEDIATE`` and busy timeout do the locking. A registry call is never
split by cancellation: a cancelled caller waits for the thread's transaction
to commit or roll back before the cancellation goes through, so "recorded
before the side effect" holds even for cancelled tasks. SQL failures are
raised as :class:`~genos.errors.RegistryError`.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from genos.errors import ClosedError, GenOSError, RegistryError
from genos.orchestrator import database, poolstore, queries
from genos.orchestrator.accounts import Accounts
from genos.orchestrator.capacity import Quota, Usage
from genos.orchestrator.clock import Clock, SystemClock
from genos.orchestrator.groupcommit import GroupWriter
from genos.orchestrator.models import EnvironmentRow, EventRow, TransitionRow
from genos.orchestrator.queries import NewEnvironment
from genos.orchestrator.records import Clocks, Environment, Event, EventType, Pool, Transition
from genos.orchestrator.signins import Signins
from genos.orchestrator.states import HOLDING, State
from genos.spec import Lifetime

T = TypeVar("T")


class Registry:
    """The orchestrator's durable state, behind async methods."""

    def __init__(self, engine: Engine, *, clock: Clock | None = None, workers: int = 8) -> None:
        """Wrap a connected engine (see :meth:`open`, which also migrates).

        Args:
            engine: from :func:`genos.orchestrator.database.connect`.
            clock: where timestamps come from.
            workers: threads (and connections) used for queries.
        """
        self.engine = engine
        self.clock: Clock = clock or SystemClock()
        self.accounts = Accounts(self)
        self.signins = Signins(self)
        self._writer = engine.execution_options(**{database.WRITE: True})
        # SQLite has one writer at a time: batch writers into group commits.
        self._group = (
            GroupWriter(self._writer, _translated) if engine.dialect.name == "sqlite" else None
        )
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="genos-registry")
        self._closed = False

    @classmethod
    async def open(
        cls, url: str | None = None, *, clock: Clock | None = None, workers: int = 8
    ) -> Registry:
        """Connect to the registry and migrate its schema to the newest revision.

        Args:
            url: SQLAlchemy URL; default ``GENOS_DATABASE_URL`` or SQLite in the data dir.
            clock: where timestamps come from.
            workers: threads (and connections) used for queries.

        Returns:
            The open registry; close it with :meth:`aclose`.

        Raises:
            RegistryError: the database is unreachable or the migration failed.
        """
        engine = database.connect(database.database_url(url), pool_size=workers)
        try:
            await asyncio.to_thread(_translated, lambda: database.migrate(engine))
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, clock=clock, workers=workers)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    async def aclose(self) -> None:
        """Wait for running queries, then close every connection."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        if self._group is not None:
            await asyncio.to_thread(self._group.close)
        self.engine.dispose()

    async def run(self, work: Callable[[Session], T], *, write: bool) -> T:
        """Run ``work`` in one transaction on a worker thread.

        Args:
            work: gets the session; its return value is returned.
            write: take the write lock up front (SQLite ``BEGIN IMMEDIATE``).

        Returns:
            What ``work`` returned, after the commit.

        Raises:
            ClosedError: the registry is closed.
            RegistryError: the database failed.
        """
        if self._closed:
            raise ClosedError("the registry is closed")
        future: asyncio.Future[T]
        if write and self._group is not None:
            future = asyncio.wrap_future(self._group.submit(work))
        else:
            call: Callable[[], T] = functools.partial(self._transaction, work, write)
            future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])  # the transaction ends before cancellation goes on
            raise

    def _transaction(self, work: Callable[[Session], T], write: bool) -> T:
        return _translated(lambda: self._commit(work, write))

    def _commit(self, work: Callable[[Session], T], write: bool) -> T:
        return self._session(work, self._writer if write else self.engine)

    @staticmethod
    def _session(work: Callable[[Session], T], bind: Engine) -> T:
        with Session(bind, expire_on_commit=False) as session, session.begin():
            return work(session)

    async def create(
        self, new: NewEnvironment, quota: Quota | None = None
    ) -> tuple[Environment, bool]:
        """Insert a ``requested`` environment, unless its request id already made one.

        Args:
            new: the environment to insert.
            quota: the owner's quota, checked in the same transaction.

        Returns:
            The environment and True if this call created it.

        Raises:
            NotFoundError: no such owner.
            ConflictError: the request id was used for a different spec.
            QuotaError: the owner would go over ``quota``.
        """
        now = self.clock.now()
        try:
            return await self.run(
                lambda s: queries.insert_environment(s, new, quota, now), write=True
            )
        except RegistryError as exc:
            if not isinstance(exc.__cause__, IntegrityError) or new.request_id is None:
                raise
        # Lost a race on (owner, request_id): the winner's row is the answer.
        request_id = new.request_id

        def find(session: Session) -> Environment:
            row = queries.find_request(session, new.owner, request_id)
            if row is None:
                raise RegistryError(f"request {request_id!r} conflicted but is not stored")
            return queries.load(session, queries.same_request(row, new.spec))

        return await self.run(find, write=False), False

    async def get(self, env_id: str) -> Environment:
        """One environment, with its queue position while it waits.

        Raises:
            NotFoundError: no such environment.
        """
        return await self.run(lambda s: queries.load(s, env_id), write=False)

    async def list(
        self,
        owner: str | None = None,
        states: Iterable[State] | None = None,
        host: str | None = None,
        *,
        limit: int | None = None,
        after: str | None = None,
    ) -> builtins.list[Environment]:
        """Environments, oldest first, optionally of one owner, in some states, on one host.

        Args:
            owner: only this user's.
            states: only these states.
            host: only those placed on this host.
            limit: at most this many.
            after: start after this environment id (the previous page's last).

        Returns:
            The matching environments (queued ones with their queue position).

        Raises:
            NotFoundError: ``after`` names no environment.
        """
        where = []
        if owner is not None:
            where.append(EnvironmentRow.owner_id == owner)
        if states is not None:
            where.append(EnvironmentRow.state.in_([s.value for s in states]))
        if host is not None:
            where.append(EnvironmentRow.host == host)
        return await self.run(
            lambda s: queries.environments(s, *where, limit=limit, after=after), write=False
        )

    async def queue(self) -> builtins.list[Environment]:
        """Waiting (requested or queued) environments, in the order they will be served."""
        return await self.run(queries.queue, write=False)

    async def clocks(self, states: Iterable[State], host: str | None) -> builtins.list[Clocks]:
        """State, start and last activity of the environments in ``states`` on ``host``
        (None: on any host)."""
        wanted = [s.value for s in states]
        return await self.run(lambda s: queries.clocks(s, wanted, host), write=False)

    async def lifetimes(self, ids: Iterable[str]) -> dict[str, Lifetime]:
        """The spec's ``lifetime`` of each of ``ids`` that exists."""
        wanted = builtins.list(ids)
        return await self.run(lambda s: queries.lifetimes(s, wanted), write=False)

    async def usage_and_queue(self, host: str) -> tuple[Usage, builtins.list[Environment]]:
        """:meth:`host_usage` and :meth:`queue` read together (one snapshot, one round trip)."""
        return await self.run(
            lambda s: (queries.host_usage(s, host), queries.queue(s)), write=False
        )

    async def usage_by_host_and_queue(
        self,
    ) -> tuple[dict[str, Usage], builtins.list[Environment]]:
        """What every host holds and the queue, read together (a cluster's admission pass)."""
        return await self.run(lambda s: (queries.usage_by_host(s), queries.queue(s)), write=False)

    async def host_usage(self, host: str) -> Usage:
        """What environments placed on ``host`` hold (provisioning, running, suspended)."""
        return await self.run(lambda s: queries.host_usage(s, host), write=False)

    # -- warm pools (see genos.orchestrator.pools) --

    async def put_pool(self, pool: Pool) -> Pool:
        """Create the pool of ``pool.digest``, or set the size and prompt of the existing one."""
        now = self.clock.now()
        return await self.run(lambda s: poolstore.put_pool(s, pool, now), write=True)

    async def pools(self) -> builtins.list[Pool]:
        """Every pool, oldest first."""
        return await self.run(poolstore.pools, write=False)

    async def get_pool(self, pool_id: str) -> Pool:
        """One pool.

        Raises:
            NotFoundError: no such pool.
        """
        return await self.run(lambda s: poolstore.get_pool(s, pool_id), write=False)

    async def delete_pool(self, pool_id: str) -> Pool:
        """Remove a pool; its unclaimed members stay for the caller to end.

        Raises:
            NotFoundError: no such pool.
        """
        return await self.run(lambda s: poolstore.delete_pool(s, pool_id), write=True)

    async def pool_members(self) -> dict[str, builtins.list[tuple[str, State]]]:
        """Each pool's live, unclaimed environments with their states, oldest first."""
        return await self.run(poolstore.members, write=False)

    async def retire(self, env_id: str) -> bool:
        """Take an unclaimed pool member out of reach of claims (False: it was claimed)."""
        now = self.clock.now()
        return await self.run(lambda s: poolstore.retire(s, env_id, now), write=True)

    async def pool_failures(self, since: datetime) -> dict[str, int]:
        """How many unclaimed members of each pool failed after ``since``."""
        return await self.run(lambda s: poolstore.recent_failures(s, since), write=False)

    async def claim(self, wanted: poolstore.Claim, quota: Quota | None) -> Environment | None:
        """Give a ready member of a pool to a user (None: none is ready).

        Raises:
            NotFoundError: no such owner.
            ConflictError: the request id was used for a different spec.
            QuotaError: the owner would go over ``quota``.
        """
        now = self.clock.now()
        return await self.run(lambda s: poolstore.claim(s, wanted, quota, now), write=True)

    async def link_replacement(self, lost: str, replacement: str) -> None:
        """Record that ``replacement`` was made for the lost environment ``lost``."""

        def link(session: Session) -> None:
            row = queries.get_row(session, lost)
            row.replaced_by = replacement

        await self.run(link, write=True)

    async def host_totals(self, host: str) -> tuple[Usage, Usage]:
        """The requests and the limits of the environments holding ``host``, in one read."""
        return await self.run(
            lambda s: (queries.host_usage(s, host), queries.host_limits(s, host)), write=False
        )

    async def transition(
        self,
        env_id: str,
        old: State,
        new: State,
        *,
        actor: str,
        reason: str,
        host: str | None = None,
        around: tuple[Sequence[queries.Note], Sequence[queries.Note]] = ((), ()),
    ) -> tuple[Environment, Event]:
        """Record ``old -> new`` (compare-and-set) with its event, in one transaction.

        Args:
            env_id: the environment.
            old: the state it must be in now.
            new: the state it moves to.
            actor: who asked (a user id, ``system``, ``reconcile``).
            reason: why, in words; for ``failed`` it becomes the failure reason.
            host: the host it is placed on (given when entering ``provisioning``).
            around: events to store with it, before and after its own (one commit).

        Returns:
            The environment after the move and the event announcing it.

        Raises:
            StateError: not a lifecycle transition, or the state is no longer ``old``.
            NotFoundError: no such environment.
        """
        now = self.clock.now()
        change, why = (old, new), (actor, reason)
        return await self.run(
            lambda s: queries.transition(
                s, env_id, change=change, why=why, now=now, host=host, around=around
            ),
            write=True,
        )

    async def transition_each(
        self, moves: Sequence[queries.Move]
    ) -> builtins.list[tuple[Environment, Event] | GenOSError]:
        """Record several moves in one transaction (one commit), each as :meth:`transition`
        does. A move that is refused (``StateError``, ``NotFoundError``) writes nothing and
        comes back as its error, in its place; the others are stored."""
        now = self.clock.now()
        return await self.run(lambda s: queries.transition_each(s, moves, now), write=True)

    async def rehost(self, env_id: str, old: str, new: str, reason: str) -> Event:
        """Place a provisioning environment on ``new`` instead of ``old`` (a create failed
        there), with a warning event giving ``reason``.

        Raises:
            StateError: it is no longer provisioning on ``old`` (cancelled meanwhile).
            NotFoundError: no such environment.
        """
        now = self.clock.now()
        message = f"retrying on {new}: {reason}"
        data = {"from_host": old, "to_host": new, "reason": reason}
        return await self.run(
            lambda s: queries.rehost(
                s, env_id, hosts=(old, new), message=message, data=data, now=now
            ),
            write=True,
        )

    async def relocate(self, env_id: str, old: str, new: str, message: str) -> Event:
        """Record that a provisioning, running or suspended environment now lives on
        ``new`` instead of ``old`` (a drain moved it), with a progress event.

        Raises:
            StateError: it is no longer held on ``old`` (ended meanwhile).
            NotFoundError: no such environment.
        """
        now = self.clock.now()
        data = {"from_host": old, "to_host": new}
        return await self.run(
            lambda s: queries.rehost(
                s, env_id, hosts=(old, new), message=message, data=data, now=now,
                states=tuple(HOLDING), kind=EventType.PROGRESS,
            ),
            write=True,
        )  # fmt: skip

    async def add_event(
        self, env_id: str, kind: EventType, message: str, data: dict[str, Any] | None = None
    ) -> Event:
        """Append an event to an environment's history.

        Raises:
            NotFoundError: no such environment.
        """
        now = self.clock.now()
        payload = data or {}
        return await self.run(
            lambda s: queries.add_event(
                s, env_id, kind=kind, message=message, data=payload, now=now
            ),
            write=True,
        )

    async def events(
        self, env_id: str, after_seq: int = 0, limit: int | None = None
    ) -> builtins.list[Event]:
        """An environment's events with ``seq > after_seq``, in order."""
        query = select(EventRow).where(EventRow.env_id == env_id, EventRow.seq > after_seq)
        query = query.order_by(EventRow.seq).limit(limit)
        return await self.run(
            lambda s: [queries.to_event(r) for r in s.scalars(query)], write=False
        )

    async def transitions(self, env_id: str) -> builtins.list[Transition]:
        """An environment's transitions, in order."""
        query = select(TransitionRow).where(TransitionRow.env_id == env_id)
        query = query.order_by(TransitionRow.seq)
        return await self.run(
            lambda s: [queries.to_transition(r) for r in s.scalars(query)], write=False
        )

    async def touch(self, env_id: str, when: datetime) -> None:
        """Store the time of the latest user activity in an environment."""

        def work(session: Session) -> None:
            queries.get_row(session, env_id).last_activity = when

        await self.run(work, write=True)


def _translated(work: Callable[[], T]) -> T:
    try:
        return work()
    except GenOSError:
        raise
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RegistryError(f"registry: {first}") from exc
