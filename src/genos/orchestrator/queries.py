"""The registry's SQL, as plain functions on a Session inside a transaction.

:class:`~genos.orchestrator.registry.Registry` runs these in its worker
threads; each call is one transaction. A transition is a compare-and-set on
the environment's state (``UPDATE ... WHERE state = :from``), so two control
planes, or a cancelled task and a user's verb, can never both win.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Row,
    Select,
    Table,
    Text,
    Update,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from genos import spec as spec_mod
from genos.errors import ConflictError, GenOSError, NotFoundError, StateError
from genos.orchestrator import states
from genos.orchestrator.capacity import Quota, Request, Usage
from genos.orchestrator.models import (
    EnvironmentRow,
    EventRow,
    JsonType,
    TransitionRow,
    UserRow,
    UTCDateTime,
)
from genos.orchestrator.records import Clocks, Environment, Event, EventType, Transition
from genos.orchestrator.states import HOLDING, LIVE, WAITING, State

Note = tuple[EventType, str, dict[str, Any]]  # an event's kind, message and data


@dataclass(frozen=True)
class Move:
    """One transition to record (see :func:`transition`), for moves stored together."""

    env_id: str
    old: State
    new: State
    actor: str
    reason: str
    host: str | None = None
    before: Sequence[Note] = ()
    after: Sequence[Note] = ()


@dataclass(frozen=True)
class NewEnvironment:
    """What a request inserts."""

    env_id: str
    owner: str
    spec: spec_mod.EnvironmentSpec
    priority: int = 0
    request_id: str | None = None
    request: Request | None = None  # what it reserves; None: its limits
    pool_id: str | None = None  # made to wait in this warm pool
    replaces: str | None = None  # the lost environment it replaces

    @property
    def reserves(self) -> Request:
        """The request, or the spec's limits when none was worked out."""
        if self.request is not None:
            return self.request
        return Request(self.spec.resources.cpus, self.spec.resources.memory_mb)


ENVIRONMENT_COLUMNS = (
    EnvironmentRow.id,
    EnvironmentRow.owner_id,
    EnvironmentRow.name,
    EnvironmentRow.state,
    # The JSON as text: parsed only when someone reads ``Environment.spec``.
    cast(EnvironmentRow.spec, Text).label("spec_json"),
    EnvironmentRow.priority,
    EnvironmentRow.request_id,
    EnvironmentRow.created,
    EnvironmentRow.updated,
    EnvironmentRow.cpus,
    EnvironmentRow.memory_mb,
    EnvironmentRow.started,
    EnvironmentRow.last_activity,
    EnvironmentRow.failure_reason,
    EnvironmentRow.host,
    EnvironmentRow.pool_id,
    EnvironmentRow.claimed,
    EnvironmentRow.replaces,
    EnvironmentRow.replaced_by,
)
QUEUE_ORDER = (
    EnvironmentRow.priority.desc(),
    EnvironmentRow.created.asc(),
    EnvironmentRow.id.asc(),
)
IS_WAITING = EnvironmentRow.state.in_([s.value for s in WAITING])
# The hot writes are Core inserts of plain rows: no unit of work to flush.
INSERT_ENVIRONMENT = insert(typing.cast(Table, EnvironmentRow.__table__))
INSERT_TRANSITION = insert(typing.cast(Table, TransitionRow.__table__))
INSERT_EVENT = insert(typing.cast(Table, EventRow.__table__))
# The statements every create and admission pass runs, built once: SQLAlchemy
# then reuses their compiled form without working out a cache key each time.
FIND_REQUEST = select(EnvironmentRow.id, EnvironmentRow.request_id, EnvironmentRow.spec).where(
    EnvironmentRow.owner_id == bindparam("owner"),
    EnvironmentRow.request_id == bindparam("request_id"),
)
# The owner, with what its request id made already (NULLs: nothing), in one read.
OWNER_AND_REQUEST = (
    select(
        UserRow.id.label("owner"), EnvironmentRow.id, EnvironmentRow.request_id, EnvironmentRow.spec
    )
    .select_from(UserRow)
    .outerjoin(
        EnvironmentRow,
        (EnvironmentRow.owner_id == UserRow.id)
        & (EnvironmentRow.request_id == bindparam("request_id")),
    )
    .where(UserRow.id == bindparam("owner"))
)
OWNER_AND_REQUEST_LOCKED = OWNER_AND_REQUEST.with_for_update(of=UserRow)
REQUESTED = (EventType.STATE, State.REQUESTED, "requested")
QUEUE = select(*ENVIRONMENT_COLUMNS).where(IS_WAITING).order_by(*QUEUE_ORDER)
USAGE_BY_HOST = (
    select(
        EnvironmentRow.host,
        func.count(),
        func.coalesce(func.sum(EnvironmentRow.cpus), 0.0),
        func.coalesce(func.sum(EnvironmentRow.memory_mb), 0),
    )
    .where(EnvironmentRow.host.is_not(None), EnvironmentRow.state.in_([s.value for s in HOLDING]))
    .group_by(EnvironmentRow.host)
)


def to_environment(row: Row[*tuple[Any, ...]], position: int | None = None) -> Environment:
    """An immutable :class:`Environment` from a row of :data:`ENVIRONMENT_COLUMNS`."""
    return Environment(
        id=row.id,
        owner=row.owner_id,
        name=row.name,
        state=State(row.state),
        spec_json=row.spec_json,
        priority=row.priority,
        request_id=row.request_id,
        created=row.created,
        updated=row.updated,
        cpus=row.cpus,
        memory_mb=row.memory_mb,
        started=row.started,
        last_activity=row.last_activity,
        failure_reason=row.failure_reason,
        host=row.host,
        queue_position=position,
        pool_id=row.pool_id,
        claimed=row.claimed,
        replaces=row.replaces,
        replaced_by=row.replaced_by,
    )


def environments(
    session: Session, *where: Any, limit: int | None = None, after: str | None = None
) -> list[Environment]:
    """Environments matching ``where``, oldest first, waiting ones with their position.

    ``after`` (an environment id) and ``limit`` page through them: the page
    starts after that environment in (created, id) order.
    """
    query = select(*ENVIRONMENT_COLUMNS).where(*where)
    if after is not None:
        mark = (
            session.connection()
            .execute(select(EnvironmentRow.created).where(EnvironmentRow.id == after))
            .scalar_one_or_none()
        )
        if mark is None:
            raise NotFoundError("cursor", after)
        key = tuple_(EnvironmentRow.created, EnvironmentRow.id)
        query = query.where(key > tuple_(literal(mark, UTCDateTime()), literal(after)))
    query = query.order_by(EnvironmentRow.created, EnvironmentRow.id)
    rows = session.connection().execute(query if limit is None else query.limit(limit)).all()
    positions: dict[str, int] = {}
    if any(State(row.state) in WAITING for row in rows):
        order = select(EnvironmentRow.id).where(IS_WAITING).order_by(*QUEUE_ORDER)
        positions = {env_id: n for n, env_id in enumerate(session.connection().scalars(order), 1)}
    return [to_environment(row, positions.get(row.id)) for row in rows]


def load(session: Session, env_id: str) -> Environment:
    """One environment, with its queue position while it waits.

    Raises:
        NotFoundError: no such environment.
    """
    query = select(*ENVIRONMENT_COLUMNS).where(EnvironmentRow.id == env_id)
    row = session.connection().execute(query).first()
    if row is None:
        raise NotFoundError("environment", env_id)
    if State(row.state) not in WAITING:
        return to_environment(row)
    key = (row.priority, row.created, row.id)
    ahead = tuple_(-EnvironmentRow.priority, EnvironmentRow.created, EnvironmentRow.id) < tuple_(
        -key[0], key[1], key[2]
    )
    count = session.connection().execute(select(func.count()).where(IS_WAITING, ahead)).scalar_one()
    return to_environment(row, int(count) + 1)


def clocks(session: Session, states: list[str], host: str | None) -> list[Clocks]:
    """:class:`Clocks` of the environments in ``states`` placed on ``host`` (None: any)."""
    query = select(
        EnvironmentRow.id, EnvironmentRow.state, EnvironmentRow.started,
        EnvironmentRow.last_activity, EnvironmentRow.pool_id, EnvironmentRow.claimed,
    ).where(EnvironmentRow.state.in_(states))  # fmt: skip
    if host is not None:
        query = query.where(EnvironmentRow.host == host)
    rows = session.connection().execute(query.order_by(EnvironmentRow.created))
    return [Clocks(row.id, State(row.state), row.started, row.last_activity,
                   row.pool_id is not None and row.claimed is None) for row in rows]  # fmt: skip


def lifetimes(session: Session, ids: list[str]) -> dict[str, spec_mod.Lifetime]:
    """The ``lifetime`` part of each spec among ``ids`` (only that part is validated)."""
    out: dict[str, spec_mod.Lifetime] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        query = select(EnvironmentRow.id, cast(EnvironmentRow.spec, Text).label("spec_json"))
        for row in session.connection().execute(query.where(EnvironmentRow.id.in_(chunk))):
            data = json.loads(row.spec_json).get("lifetime") or {}
            out[row.id] = spec_mod.Lifetime.model_validate(data)
    return out


def queue(session: Session) -> list[Environment]:
    """Waiting environments in the order they will be served, with their positions."""
    rows = session.connection().execute(QUEUE)
    return [to_environment(row, n) for n, row in enumerate(rows, 1)]


def to_event(row: EventRow) -> Event:
    """An immutable :class:`Event` from its row."""
    return Event(
        row.env_id, row.seq, row.time, EventType(row.type), State(row.state), row.message, row.data
    )


def to_transition(row: TransitionRow) -> Transition:
    """An immutable :class:`Transition` from its row."""
    return Transition(
        row.env_id,
        row.seq,
        State(row.from_state),
        State(row.to_state),
        row.actor,
        row.reason,
        row.time,
    )


def insert_environment(
    session: Session, new: NewEnvironment, quota: Quota | None, now: datetime
) -> tuple[Environment, bool]:
    """Insert a ``requested`` environment, or find the one its request id made.

    Returns:
        The environment and whether this call created it.

    Raises:
        NotFoundError: no such owner.
        ConflictError: the request id was used for a different spec.
        QuotaError: the owner would go over ``quota``.
    """
    # Only a quota locks the owner's row (see prior_request): without one, nothing
    # is counted, and two requests with one request id meet on the unique
    # (owner, request id) instead (Registry.create).
    reserves = new.reserves
    spec_json = new.spec.model_dump_json()
    row = _new_row(new, now, json.loads(spec_json))
    connection = session.connection()
    if quota is None and connection.dialect.name == "postgresql":
        params = {"owner": new.owner, "request_id": new.request_id}
        params |= {f"n_{key}": value for key, value in row.items()}
        found = connection.execute(_create_statement(tuple(row)), params).first()
        if found is None:
            raise NotFoundError("user", new.owner)
        if found.made is None:
            return load(session, same_request(found, new.spec)), False
    else:
        found = prior_request(session, new.owner, new.request_id, lock=quota is not None)
        if found is not None:
            return load(session, same_request(found, new.spec)), False
        if quota is not None:
            quota.check(owner_usage(session, new.owner), reserves.cpus, reserves.memory_mb)
        connection.execute(INSERT_ENVIRONMENT, row)
        connection.execute(INSERT_EVENT, event_row(new.env_id, 1, now, REQUESTED, {}))
    # What was just written, without reading it back (a new request waits
    # behind everything already waiting; its position is found on reads).
    env = Environment(
        id=new.env_id, owner=new.owner, name=new.spec.name, state=State.REQUESTED,
        spec_json=spec_json, priority=new.priority, request_id=new.request_id,
        created=now, updated=now, cpus=row["cpus"], memory_mb=row["memory_mb"],
        pool_id=new.pool_id, replaces=new.replaces,
    )  # fmt: skip
    return env, True


@functools.cache
def _create_statement(names: tuple[str, ...]) -> Select[Any]:
    """A create as one PostgreSQL statement (built once): the owner and a repeated
    request id as :data:`OWNER_AND_REQUEST` reads them; the environment's row (``n_``
    and its column's name for each value) and its ``requested`` event are inserted
    only when the owner exists and the request id made nothing yet; ``names``: the
    row's columns (:func:`_new_row`'s keys), built once per set. Its row: the
    owner, the repeated request's ``id``, ``request_id`` and ``spec`` (NULLs when
    none), and ``made``, the new environment's id (NULL when nothing was made)."""
    prior = OWNER_AND_REQUEST.cte("prior")
    table = typing.cast(Table, EnvironmentRow.__table__)
    values = [bindparam(f"n_{name}", type_=table.c[name].type) for name in names]
    made = (
        insert(EnvironmentRow)
        .from_select(list(names), select(*values).select_from(prior).where(prior.c.id.is_(None)))
        .returning(EnvironmentRow.id)
        .cte("made")
    )
    kind, state, message = REQUESTED
    event = select(made.c.id, literal(1), bindparam("n_created", type_=UTCDateTime()),
                   literal(kind.value), literal(state.value), literal(message),
                   literal({}, JsonType))  # fmt: skip
    cols = ["env_id", "seq", "time", "type", "state", "message", "data"]
    logged = insert(EventRow).from_select(cols, event.select_from(made)).cte("logged")
    return (
        select(*prior.c, made.c.id.label("made"))
        .select_from(prior.outerjoin(made, literal(True)))
        .add_cte(logged)
    )


def prior_request(
    session: Session, owner: str, request_id: str | None, *, lock: bool
) -> Row[Any] | None:
    """What ``owner``'s ``request_id`` made already (its id, request id and spec), if
    anything, read with the owner in one statement; ``lock``: the owner's row is
    locked too, so that owner's requests are counted one at a time, across control
    planes too (SQLite's ``BEGIN IMMEDIATE`` already serialises).

    Raises:
        NotFoundError: no such owner.
    """
    statement = OWNER_AND_REQUEST_LOCKED if lock else OWNER_AND_REQUEST
    found = session.connection().execute(statement, {"owner": owner, "request_id": request_id})
    row = found.first()
    if row is None:
        raise NotFoundError("user", owner)
    return row if row.id is not None else None


def _new_row(new: NewEnvironment, now: datetime, spec: dict[str, Any]) -> dict[str, Any]:
    reserves = new.reserves
    return {
        "id": new.env_id,
        "owner_id": new.owner,
        "name": new.spec.name,
        "state": State.REQUESTED.value,
        "spec": spec,  # what spec.dump gives
        "priority": new.priority,
        "request_id": new.request_id,
        "cpus": reserves.cpus,
        "memory_mb": reserves.memory_mb,
        "created": now,
        "updated": now,
        "last_seq": 1,
        "pool_id": new.pool_id,
        "replaces": new.replaces,
    }


def find_request(session: Session, owner: str, request_id: str) -> Row[Any] | None:
    """The environment ``owner`` made with ``request_id`` (its id, request id and spec), if any."""
    found = session.connection().execute(FIND_REQUEST, {"owner": owner, "request_id": request_id})
    return found.one_or_none()


def same_request(row: Row[Any], spec: spec_mod.EnvironmentSpec) -> str:
    """The environment id of a repeated request, if the repeat asks for the same spec.

    Raises:
        ConflictError: the request id was first used for another spec.
    """
    if row.spec != spec_mod.dump(spec):
        raise ConflictError(
            f"request id {row.request_id!r} was used for another spec (environment {row.id})"
        )
    return str(row.id)


def owner_usage(session: Session, owner: str) -> Usage:
    """What ``owner``'s live environments hold."""
    return _usage(session, EnvironmentRow.owner_id == owner, LIVE)


def host_usage(session: Session, host: str) -> Usage:
    """What the environments placed on ``host`` hold."""
    return _usage(session, EnvironmentRow.host == host, HOLDING)


def usage_by_host(session: Session) -> dict[str, Usage]:
    """What the environments placed on each host hold (requests), host by host."""
    rows = session.connection().execute(USAGE_BY_HOST)
    return {str(row[0]): Usage(int(row[1]), float(row[2]), int(row[3])) for row in rows}


def host_limits(session: Session, host: str) -> Usage:
    """The limits (``spec.resources``) of the environments placed on ``host``."""
    resources = EnvironmentRow.spec["resources"]
    query = select(
        func.count(),
        func.coalesce(func.sum(resources["cpus"].as_float()), 0.0),
        func.coalesce(func.sum(resources["memory_mb"].as_integer()), 0),
    ).where(EnvironmentRow.host == host, EnvironmentRow.state.in_([s.value for s in HOLDING]))
    count, cpus, memory = session.connection().execute(query).one()
    return Usage(int(count), float(cpus), int(memory))


def _usage(session: Session, where: Any, in_states: Iterable[State]) -> Usage:
    query = select(
        func.count(),
        func.coalesce(func.sum(EnvironmentRow.cpus), 0.0),
        func.coalesce(func.sum(EnvironmentRow.memory_mb), 0),
    ).where(where, EnvironmentRow.state.in_([s.value for s in in_states]))
    count, cpus, memory = session.connection().execute(query).one()
    return Usage(int(count), float(cpus), int(memory))


def get_row(session: Session, env_id: str) -> EnvironmentRow:
    """The row of ``env_id``.

    Raises:
        NotFoundError: no such environment.
    """
    row = session.get(EnvironmentRow, env_id)
    if row is None:
        raise NotFoundError("environment", env_id)
    return row


def transition(
    session: Session,
    env_id: str,
    *,
    change: tuple[State, State],
    why: tuple[str, str],
    now: datetime,
    host: str | None = None,
    around: tuple[Sequence[Note], Sequence[Note]] = ((), ()),
) -> tuple[Environment, Event]:
    """Move ``env_id`` from ``change[0]`` to ``change[1]`` and record it (actor, reason).

    ``around``: events stored in the same transaction just before the state
    event (in the old state) and just after it (in the new one), so a step's
    progress and the move it ends cost one commit.

    Raises:
        StateError: the transition is not in the lifecycle, or the environment
            is no longer in ``change[0]`` (someone else moved it).
        NotFoundError: no such environment.
    """
    old, new = change
    actor, reason = why
    states.check(old, new)
    before, after = around
    events = 1 + len(before) + len(after)
    params: dict[str, Any] = {"p_id": env_id, "p_old": old.value, "p_new": new.value,
                              "p_now": now, "p_events": events, "p_reason": reason,
                              "p_host": host}  # fmt: skip
    said = (EventType.STATE, new, f"{new.value}: {reason}")
    data = {"from": old.value, "to": new.value, "actor": actor, "reason": reason}
    ended = new in (State.FAILED, State.LOST)  # the reason is what a person reads first
    shape = (new is State.RUNNING, ended, host is not None)
    whole = session.get_bind().dialect.name == "postgresql"
    if whole:  # the move, its transition and its events in one statement
        params["p_actor"] = actor
        notes = [(kind, old, text, extra) for kind, text, extra in before]
        notes.append((*said, data))
        notes += [(kind, new, text, extra) for kind, text, extra in after]
        for n, (kind, state, text, extra) in enumerate(notes):
            params |= {f"e{n}_type": kind.value, f"e{n}_state": state.value,
                       f"e{n}_message": text, f"e{n}_data": extra}  # fmt: skip
        statement: Select[Any] | Update = _whole_move_statement(*shape, len(before), len(after))
    else:
        statement = _move_statement(*shape)
    moved = session.connection().execute(statement, params).first()
    if moved is None:
        current = State(get_row(session, env_id).state)
        raise StateError(current.value, [old.value], f"move to {new.value}")
    seq = moved.last_seq - len(after)
    event = event_row(env_id, seq, now, said, data)
    if not whole:
        step = {"env_id": env_id, "seq": seq, "from_state": old.value, "to_state": new.value,
                "actor": actor, "reason": reason, "time": now}  # fmt: skip
        rows = [event_row(env_id, seq - len(before) + n, now, (kind, old, text), extra)
                for n, (kind, text, extra) in enumerate(before)]  # fmt: skip
        rows.append(event)
        rows += [event_row(env_id, seq + 1 + n, now, (kind, new, text), extra)
                 for n, (kind, text, extra) in enumerate(after)]  # fmt: skip
        session.connection().execute(INSERT_TRANSITION, step)
        session.connection().execute(INSERT_EVENT, rows)
    env = load(session, env_id) if new in WAITING else to_environment(moved)
    return env, _to_event(event)


def transition_each(
    session: Session, moves: Sequence[Move], now: datetime
) -> list[tuple[Environment, Event] | GenOSError]:
    """Each of ``moves`` as :func:`transition`, in this one transaction. A refused
    move (its state changed meanwhile, or it is gone) has written nothing: its
    error comes back in its place and the others still count."""
    done: list[tuple[Environment, Event] | GenOSError] = []
    for move in moves:
        try:
            done.append(transition(session, move.env_id, change=(move.old, move.new),
                                   why=(move.actor, move.reason), now=now, host=move.host,
                                   around=(move.before, move.after)))  # fmt: skip
        except (StateError, NotFoundError) as exc:
            done.append(exc)
    return done


@functools.cache
def _move_statement(running: bool, failed: bool, placed: bool) -> Update:
    """The compare-and-set ``UPDATE`` of a move, built once per shape (it is hot).

    Parameters: ``p_id``, ``p_old``, ``p_new``, ``p_now``, ``p_events`` (how many
    events the move stores), ``p_reason``, ``p_host``. The new row comes back
    whole, so the move needs no second read (unless it waits in the queue).
    """
    now = bindparam("p_now", type_=UTCDateTime())
    values: dict[str, Any] = {
        "state": bindparam("p_new"),
        "updated": now,
        "last_seq": EnvironmentRow.last_seq + bindparam("p_events", type_=Integer()),
    }
    if running:  # TTL counts from the first start; idle from now
        values["started"] = func.coalesce(EnvironmentRow.started, now)
        values["last_activity"] = now
    if failed:
        values["failure_reason"] = bindparam("p_reason")
    if placed:
        values["host"] = bindparam("p_host")
    return (
        update(EnvironmentRow)
        .where(EnvironmentRow.id == bindparam("p_id"), EnvironmentRow.state == bindparam("p_old"))
        .values(**values)
        .returning(EnvironmentRow.last_seq, *ENVIRONMENT_COLUMNS)
    )


@functools.cache
def _whole_move_statement(
    running: bool, failed: bool, placed: bool, before: int, after: int
) -> Select[Any]:
    """A move as one PostgreSQL statement, built once per shape: the compare-and-set
    ``UPDATE`` of :func:`_move_statement`, its ``transitions`` row and its events
    (``before`` notes, the state event, ``after`` notes, numbered from the new
    ``last_seq``), each an ``INSERT ... SELECT`` from the update's row, so nothing
    is written when the update matched nothing. Three statements a move cost a
    round trip each, and a create makes two moves.

    Parameters: those of :func:`_move_statement`, ``p_actor``, and for each event
    ``n`` in order ``e<n>_type``, ``e<n>_state``, ``e<n>_message``, ``e<n>_data``.
    """
    moved = _move_statement(running, failed, placed).cte("moved")
    now = bindparam("p_now", type_=UTCDateTime())
    env_id = bindparam("p_id", type_=Text())
    state_seq = moved.c.last_seq - after
    step_row = select(
        env_id, state_seq, bindparam("p_old", type_=Text()), bindparam("p_new", type_=Text()),
        bindparam("p_actor", type_=Text()), bindparam("p_reason", type_=Text()), now,
    )  # fmt: skip
    step = insert(TransitionRow).from_select(
        ["env_id", "seq", "from_state", "to_state", "actor", "reason", "time"], step_row
    )
    writes = [step.cte("step")]
    for n in range(before + 1 + after):
        row = select(env_id, state_seq - before + n, now,
                     bindparam(f"e{n}_type", type_=Text()), bindparam(f"e{n}_state", type_=Text()),
                     bindparam(f"e{n}_message", type_=Text()),
                     bindparam(f"e{n}_data", type_=JsonType))  # fmt: skip
        cols = ["env_id", "seq", "time", "type", "state", "message", "data"]
        writes.append(insert(EventRow).from_select(cols, row).cte(f"event{n}"))
    return select(*moved.c).add_cte(*writes)


def add_event(
    session: Session,
    env_id: str,
    *,
    kind: EventType,
    message: str,
    data: dict[str, Any],
    now: datetime,
) -> Event:
    """Append an event (its state is the environment's current one).

    Raises:
        NotFoundError: no such environment.
    """
    statement = (
        update(EnvironmentRow)
        .where(EnvironmentRow.id == env_id)
        .values(last_seq=EnvironmentRow.last_seq + 1)
        .returning(EnvironmentRow.last_seq, EnvironmentRow.state)
        .execution_options(synchronize_session=False)
    )
    found = session.connection().execute(statement).one_or_none()
    if found is None:
        raise NotFoundError("environment", env_id)
    row = event_row(env_id, found[0], now, (kind, State(found[1]), message), data)
    session.connection().execute(INSERT_EVENT, row)
    return _to_event(row)


def rehost(
    session: Session,
    env_id: str,
    *,
    hosts: tuple[str, str],
    message: str,
    data: dict[str, Any],
    now: datetime,
    states: Sequence[State] = (State.PROVISIONING,),
    kind: EventType = EventType.WARNING,
) -> Event:
    """Move an environment in one of ``states`` from ``hosts[0]`` to ``hosts[1]``
    (compare-and-set), with an event saying why, in one transaction.

    Raises:
        StateError: it is no longer in ``states`` on ``hosts[0]``.
        NotFoundError: no such environment.
    """
    old, new = hosts
    statement = (
        update(EnvironmentRow)
        .where(
            EnvironmentRow.id == env_id,
            EnvironmentRow.state.in_([s.value for s in states]),
            EnvironmentRow.host == old,
        )
        .values(host=new)
        .execution_options(synchronize_session=False)
    )
    if session.connection().execute(statement).rowcount != 1:
        current = State(get_row(session, env_id).state)
        raise StateError(current.value, [s.value for s in states], f"move to {new}")
    return add_event(session, env_id, kind=kind, message=message, data=data, now=now)


def event_row(
    env_id: str, seq: int, now: datetime, what: tuple[EventType, State, str], data: dict[str, Any]
) -> dict[str, Any]:
    """An ``events`` row: ``what`` is the event's type, state and message."""
    kind, state, message = what
    return {"env_id": env_id, "seq": seq, "time": now, "type": kind.value,
            "state": state.value, "message": message, "data": data}  # fmt: skip


def _to_event(row: dict[str, Any]) -> Event:
    return Event(row["env_id"], row["seq"], row["time"], EventType(row["type"]),
                 State(row["state"]), row["message"], row["data"])  # fmt: skip
