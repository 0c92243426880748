"""The registry's SQL for warm pools: the pools, their members, and the claim.

Like :mod:`genos.orchestrator.queries`, plain functions on a Session inside
one transaction. The claim is a compare-and-set: it takes a running member
``WHERE claimed IS NULL AND state = 'running'``, so two requests (or two
control planes) can never take the same environment, and on PostgreSQL
``FOR UPDATE SKIP LOCKED`` lets concurrent claims pass each other instead of
queueing on one row.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, Text, cast, delete, func, insert, select, update
from sqlalchemy.orm import Session

from genos import spec as spec_mod
from genos.errors import NotFoundError
from genos.orchestrator import queries
from genos.orchestrator.capacity import Quota
from genos.orchestrator.models import EnvironmentRow, PoolRow
from genos.orchestrator.records import Environment, EventType, Pool
from genos.orchestrator.states import LIVE, State

INSERT_POOL = insert(typing.cast(Table, PoolRow.__table__))
POOL_COLUMNS = (
    PoolRow.id, PoolRow.digest, cast(PoolRow.spec, Text).label("spec_json"),
    PoolRow.size, PoolRow.prompt, PoolRow.set_by, PoolRow.created, PoolRow.updated,
)  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """What a request brings to the environment it takes from a pool."""

    pool_id: str
    owner: str
    spec: spec_mod.EnvironmentSpec
    priority: int = 0
    request_id: str | None = None


def _pool(row: Any) -> Pool:
    return Pool(row.id, row.digest, row.spec_json, row.size, row.prompt, row.set_by,
                row.created, row.updated)  # fmt: skip


def put_pool(session: Session, new: Pool, now: datetime) -> Pool:
    """Create the pool for ``new.digest``, or set the size and prompt of the one there is."""
    found = (
        session.connection()
        .execute(select(PoolRow.id).where(PoolRow.digest == new.digest))
        .scalar_one_or_none()
    )
    if found is None:
        row = {"id": new.id, "digest": new.digest, "spec": json.loads(new.spec_json),
               "size": new.size, "prompt": new.prompt, "set_by": new.set_by,
               "created": now, "updated": now}  # fmt: skip
        session.connection().execute(INSERT_POOL, row)
        pool_id = new.id
    else:
        pool_id = found
        session.connection().execute(
            update(PoolRow)
            .where(PoolRow.id == found)
            .values(size=new.size, prompt=new.prompt, set_by=new.set_by, updated=now)
        )
    return get_pool(session, pool_id)


def get_pool(session: Session, pool_id: str) -> Pool:
    """One pool.

    Raises:
        NotFoundError: no such pool.
    """
    row = (
        session.connection()
        .execute(select(*POOL_COLUMNS).where(PoolRow.id == pool_id))
        .one_or_none()
    )
    if row is None:
        raise NotFoundError("pool", pool_id)
    return _pool(row)


def pools(session: Session) -> list[Pool]:
    """Every pool, oldest first."""
    rows = session.connection().execute(select(*POOL_COLUMNS).order_by(PoolRow.created))
    return [_pool(row) for row in rows]


def delete_pool(session: Session, pool_id: str) -> Pool:
    """Remove a pool (its unclaimed members are the caller's to end).

    Raises:
        NotFoundError: no such pool.
    """
    pool = get_pool(session, pool_id)
    session.connection().execute(delete(PoolRow).where(PoolRow.id == pool_id))
    return pool


def members(session: Session) -> dict[str, list[tuple[str, State]]]:
    """Each pool's unclaimed environments that are not over: pool id -> (env id, state), oldest
    first."""
    query = (
        select(EnvironmentRow.pool_id, EnvironmentRow.id, EnvironmentRow.state)
        .where(
            EnvironmentRow.pool_id.is_not(None),
            EnvironmentRow.claimed.is_(None),
            EnvironmentRow.state.in_([s.value for s in LIVE]),
        )
        .order_by(EnvironmentRow.created, EnvironmentRow.id)
    )
    found: dict[str, list[tuple[str, State]]] = {}
    for row in session.connection().execute(query):
        found.setdefault(row.pool_id, []).append((row.id, State(row.state)))
    return found


def claim(
    session: Session, wanted: Claim, quota: Quota | None, now: datetime
) -> Environment | None:
    """Give a running member of ``wanted.pool_id`` to ``wanted.owner`` (None: none is ready).

    The environment takes the requester's spec (same digest: only its name,
    provenance and lifetime differ), owner, request id and priority; its TTL
    and idle time count from now. A repeated request id returns the
    environment that request already has.

    Raises:
        NotFoundError: no such owner.
        ConflictError: the request id was used for a different spec.
        QuotaError: the owner would go over ``quota``.
    """
    existing = queries.prior_request(session, wanted.owner, wanted.request_id, lock=True)
    if existing is not None:
        return queries.load(session, queries.same_request(existing, wanted.spec))
    ready = (
        EnvironmentRow.pool_id == wanted.pool_id,
        EnvironmentRow.claimed.is_(None),
        EnvironmentRow.state == State.RUNNING.value,
    )
    pick = select(EnvironmentRow.id, EnvironmentRow.cpus, EnvironmentRow.memory_mb).where(*ready)
    pick = pick.order_by(EnvironmentRow.created, EnvironmentRow.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    candidate = session.connection().execute(pick).one_or_none()
    if candidate is None:
        return None
    if quota is not None:
        quota.check(queries.owner_usage(session, wanted.owner), candidate.cpus, candidate.memory_mb)
    values = {
        "owner_id": wanted.owner, "name": wanted.spec.name,
        "spec": json.loads(wanted.spec.model_dump_json()), "request_id": wanted.request_id,
        "priority": wanted.priority, "claimed": now, "started": now, "last_activity": now,
        "updated": now, "last_seq": EnvironmentRow.last_seq + 1,
    }  # fmt: skip
    taken = (
        update(EnvironmentRow)
        .where(EnvironmentRow.id == candidate.id, *ready)
        .values(**values)
        .returning(*queries.ENVIRONMENT_COLUMNS, EnvironmentRow.last_seq)
    )
    row = session.connection().execute(taken).one_or_none()
    if row is None:
        return None  # taken meanwhile (SQLite serialises writers, so only PostgreSQL gets here)
    note = (EventType.PROGRESS, State.RUNNING, f"claimed from warm pool {wanted.pool_id}")
    event = queries.event_row(row.id, row.last_seq, now, note, {"pool": wanted.pool_id})
    session.connection().execute(queries.INSERT_EVENT, event)
    return queries.to_environment(row)


def recent_failures(session: Session, since: datetime) -> dict[str, int]:
    """Unclaimed members of each pool that failed after ``since`` (a pool that keeps failing
    waits before it is refilled again)."""
    query = (
        select(EnvironmentRow.pool_id, func.count())
        .where(
            EnvironmentRow.pool_id.is_not(None),
            EnvironmentRow.claimed.is_(None),
            EnvironmentRow.state == State.FAILED.value,
            EnvironmentRow.updated > since,
        )
        .group_by(EnvironmentRow.pool_id)
    )
    return {str(row[0]): int(row[1]) for row in session.connection().execute(query)}


def retire(session: Session, env_id: str, now: datetime) -> bool:
    """Take an unclaimed member out of its pool so nobody can claim it (False: claimed already).

    The keeper retires a member before it ends it, so a claim and a trim
    can never both have the same environment.
    """
    taken = (
        update(EnvironmentRow)
        .where(EnvironmentRow.id == env_id, EnvironmentRow.claimed.is_(None))
        .values(claimed=now, updated=now)
    )
    return bool(session.connection().execute(taken).rowcount)
