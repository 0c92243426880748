"""The registry on SQLite and PostgreSQL: schema, durability, idempotency, history, accounts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from genos.errors import (
    ClosedError,
    ConflictError,
    NotFoundError,
    QuotaError,
    RegistryError,
    StateError,
)
from genos.ids import new_env_id
from genos.orchestrator import EventType, FakeClock, Quota, Registry, State, User, database
from genos.orchestrator.database import database_url
from genos.orchestrator.models import Base
from genos.orchestrator.queries import Move, NewEnvironment
from genos.orchestrator.signins import Limits
from tests.databases import create_database, drop_database
from tests.orchestrator.doubles import make_spec

pytestmark = pytest.mark.anyio


def new(owner: str, request_id: str | None = None, **spec: object) -> NewEnvironment:
    """A request to insert."""
    return NewEnvironment(new_env_id(), owner, make_spec(**spec), 0, request_id)  # type: ignore[arg-type]


async def test_migrations_create_exactly_the_models(registry: Registry) -> None:
    """After `upgrade head` the database has every table and no difference from the models."""

    def diff() -> tuple[list[str], list[object]]:
        with registry.engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
            return tables, compare_metadata(MigrationContext.configure(conn), Base.metadata)

    tables, changes = await asyncio.to_thread(diff)
    assert tables == [
        "alembic_version",
        "api_tokens",
        "environments",
        "events",
        "pools",
        "signin_failures",
        "transitions",
        "users",
    ]
    assert changes == []


async def test_migration_0004_adds_sign_in_counts_to_a_0003_registry_and_goes_back(
    db_url: str,
) -> None:
    """A registry at 0003 with a user opens at head with ``signin_failures`` and the user kept;
    downgrading to 0003 drops the table again."""

    def tables(engine: Engine) -> list[str]:
        with engine.connect() as conn:
            return sorted(inspect(conn).get_table_names())

    engine = database.connect(db_url)
    try:
        await asyncio.to_thread(database.migrate, engine, "0003")
        assert "signin_failures" not in await asyncio.to_thread(tables, engine)
    finally:
        engine.dispose()
    registry = await Registry.open(db_url)
    try:
        await registry.accounts.add_user("kept")
        limits = Limits(free=1)
        assert (await registry.signins.admit([("account:kept", limits)])).retry_after == 0
        assert (await registry.signins.admit([("account:kept", limits)])).retry_after == 1
    finally:
        await registry.aclose()
    engine = database.connect(db_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(database.MIGRATIONS))
        config.set_main_option("path_separator", "os")
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            await asyncio.to_thread(command.downgrade, config, "0003")
        left = await asyncio.to_thread(tables, engine)
    finally:
        engine.dispose()
    assert "signin_failures" not in left
    assert "users" in left


async def test_opening_again_migrates_nothing(db_url: str, registry: Registry) -> None:
    """A second start finds the schema at head and keeps the data."""
    await registry.accounts.add_user("bob")
    again = await Registry.open(db_url)
    try:
        assert (await again.accounts.user_by_name("bob")).name == "bob"
    finally:
        await again.aclose()


async def test_sqlite_runs_durable(tmp_path: Path) -> None:
    """SQLite uses WAL, synchronous=FULL, foreign keys and a busy timeout."""
    registry = await Registry.open(f"sqlite:///{tmp_path / 'genos.db'}")

    def pragmas() -> list[object]:
        with registry.engine.connect() as conn:
            names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            return [conn.execute(text(f"PRAGMA {n}")).scalar() for n in names]

    try:
        assert await asyncio.to_thread(pragmas) == ["wal", 2, 1, 30000]
    finally:
        await registry.aclose()


async def test_default_url_is_sqlite_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No URL: data_dir()/genos.db, unless GENOS_DATABASE_URL names another database."""
    monkeypatch.setenv("GENOS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("GENOS_DATABASE_URL", raising=False)
    assert database_url() == f"sqlite:///{tmp_path / 'data' / 'genos.db'}"
    monkeypatch.setenv("GENOS_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/g")
    assert database_url() == "postgresql+psycopg://u@127.0.0.1/g"
    monkeypatch.delenv("GENOS_DATABASE_URL")
    registry = await Registry.open()
    try:
        assert (tmp_path / "data" / "genos.db").is_file()
    finally:
        await registry.aclose()


async def test_create_stores_a_requested_environment(registry: Registry, alice: User) -> None:
    """A new environment is `requested`, with its spec, reservation and a first event."""
    env, created = await registry.create(new(alice.id, cpus=2, memory_mb=4096))
    assert created is True
    got = await registry.get(env.id)
    assert (got.state, got.owner, got.cpus, got.memory_mb) == (State.REQUESTED, alice.id, 2, 4096)
    assert got.spec == make_spec(cpus=2, memory_mb=4096)
    assert got.created == datetime(2030, 1, 1, tzinfo=UTC)
    assert got.queue_position == 1
    events = await registry.events(env.id)
    assert [(e.seq, e.type, e.state, e.message) for e in events] == [
        (1, EventType.STATE, State.REQUESTED, "requested")
    ]


async def test_unknown_owner_is_not_found(registry: Registry) -> None:
    """Only existing users own environments."""
    with pytest.raises(NotFoundError) as caught:
        await registry.create(new("nobody"))
    assert (caught.value.kind, caught.value.name) == ("user", "nobody")


async def test_concurrent_requests_with_one_id_make_one_environment(
    registry: Registry, alice: User
) -> None:
    """Twenty concurrent inserts with one request id yield one row and twenty equal answers."""
    results = await asyncio.gather(*(registry.create(new(alice.id, "req-1")) for _ in range(20)))
    ids = {env.id for env, _ in results}
    assert len(ids) == 1
    assert [created for _, created in results].count(True) == 1
    assert [e.id for e in await registry.list(alice.id)] == list(ids)


async def test_a_request_id_is_scoped_to_its_owner(registry: Registry, alice: User) -> None:
    """Two owners may use the same request id for different environments."""
    bob = await registry.accounts.add_user("bob")
    first, _ = await registry.create(new(alice.id, "same"))
    second, created = await registry.create(new(bob.id, "same"))
    assert created is True
    assert first.id != second.id


async def test_a_reused_request_id_with_another_spec_conflicts(
    registry: Registry, alice: User
) -> None:
    """Retrying is safe; reusing a request id for something else is a ConflictError."""
    await registry.create(new(alice.id, "r", cpus=1))
    with pytest.raises(ConflictError):
        await registry.create(new(alice.id, "r", cpus=2))


async def test_quota_is_checked_in_the_insert(registry: Registry, alice: User) -> None:
    """A quota counts live environments and refuses the one that would exceed it."""
    await registry.create(new(alice.id), Quota(environments=1))
    with pytest.raises(QuotaError) as caught:
        await registry.create(new(alice.id), Quota(environments=1))
    assert (caught.value.limit, caught.value.allowed, caught.value.requested) == (
        "environments",
        1,
        2,
    )


async def test_transition_records_row_and_event_together(
    registry: Registry, alice: User, clock: FakeClock
) -> None:
    """A transition updates the state and writes a transition and an event with one seq."""
    env, _ = await registry.create(new(alice.id))
    clock.advance(5)
    moved, event = await registry.transition(
        env.id, State.REQUESTED, State.PROVISIONING, actor="system", reason="admitted", host="h1"
    )
    assert (moved.state, moved.host, moved.updated) == (
        State.PROVISIONING, "h1", datetime(2030, 1, 1, 0, 0, 5, tzinfo=UTC)
    )  # fmt: skip
    [step] = await registry.transitions(env.id)
    assert (step.seq, step.from_state, step.to_state, step.actor, step.reason) == (
        2, State.REQUESTED, State.PROVISIONING, "system", "admitted"
    )  # fmt: skip
    assert (event.seq, event.type, event.state, event.message) == (
        2, EventType.STATE, State.PROVISIONING, "provisioning: admitted"
    )  # fmt: skip
    assert event.data == {"from": "requested", "to": "provisioning", "actor": "system",
                          "reason": "admitted"}  # fmt: skip


async def test_a_move_stores_the_notes_around_it_in_order_with_one_seq_each(
    registry: Registry, alice: User, clock: FakeClock
) -> None:
    """Notes stored before a move carry the old state, those after it the new one; with
    the state event and the transitions row they are numbered in order from the
    environment's last seq, with the move's time and their own data, and the next event
    follows them (on PostgreSQL all of it is one statement)."""
    env, _ = await registry.create(new(alice.id))
    await registry.transition(env.id, State.REQUESTED, State.PROVISIONING, actor="system",
                              reason="admitted", host="n1")  # fmt: skip
    clock.advance(7)
    before = [
        (EventType.PROGRESS, "sandbox ready", {}),
        (EventType.PROGRESS, "display ready", {"port": 5900, "nested": {"a": [1, 2]}}),
    ]
    after = [(EventType.WARNING, "slow start", {"seconds": 3.5})]
    moved, event = await registry.transition(
        env.id, State.PROVISIONING, State.RUNNING, actor="system", reason="provisioned",
        around=(before, after),
    )  # fmt: skip
    at = datetime(2030, 1, 1, 0, 0, 7, tzinfo=UTC)
    assert (moved.state, moved.host, moved.started, moved.updated) == (
        State.RUNNING, "n1", at, at)  # fmt: skip
    assert (event.seq, event.state, event.message) == (5, State.RUNNING, "running: provisioned")
    stored = [(e.seq, e.type, e.state, e.message, e.data, e.time)
              for e in await registry.events(env.id)][2:]  # fmt: skip
    assert stored == [
        (3, EventType.PROGRESS, State.PROVISIONING, "sandbox ready", {}, at),
        (4, EventType.PROGRESS, State.PROVISIONING, "display ready",
         {"port": 5900, "nested": {"a": [1, 2]}}, at),
        (5, EventType.STATE, State.RUNNING, "running: provisioned",
         {"from": "provisioning", "to": "running", "actor": "system", "reason": "provisioned"},
         at),
        (6, EventType.WARNING, State.RUNNING, "slow start", {"seconds": 3.5}, at),
    ]  # fmt: skip
    steps = [(t.seq, t.from_state, t.to_state, t.actor, t.reason, t.time)
             for t in await registry.transitions(env.id)]  # fmt: skip
    assert steps[1:] == [(5, State.PROVISIONING, State.RUNNING, "system", "provisioned", at)]
    assert (await registry.add_event(env.id, EventType.PROGRESS, "next")).seq == 7


async def test_transition_is_compare_and_set(registry: Registry, alice: User) -> None:
    """A transition from a state the environment has left raises StateError and writes nothing."""
    env, _ = await registry.create(new(alice.id))
    await registry.transition(env.id, State.REQUESTED, State.QUEUED, actor="a", reason="r")
    with pytest.raises(StateError) as caught:
        await registry.transition(
            env.id, State.REQUESTED, State.PROVISIONING, actor="b", reason="r"
        )
    assert (caught.value.current, caught.value.required) == ("queued", ("requested",))
    assert [t.to_state for t in await registry.transitions(env.id)] == [State.QUEUED]


async def test_transition_each_stores_moves_together_and_refuses_one_alone(
    registry: Registry, alice: User
) -> None:
    """Moves stored together: one whose state changed meanwhile, or that names no
    environment, comes back as its error and writes nothing; the others are stored
    with their events."""
    first, _ = await registry.create(new(alice.id))
    moved_away, _ = await registry.create(new(alice.id))
    third, _ = await registry.create(new(alice.id))
    await registry.transition(moved_away.id, State.REQUESTED, State.QUEUED, actor="a", reason="r")
    creating = (EventType.PROGRESS, "creating sandbox", {"driver": "fake"})
    done = await registry.transition_each([
        Move(first.id, State.REQUESTED, State.PROVISIONING, "system", "admitted to n1", "n1",
             after=(creating,)),
        Move(moved_away.id, State.REQUESTED, State.PROVISIONING, "system", "admitted", "n1"),
        Move("env-nosuch", State.REQUESTED, State.QUEUED, "system", "waiting"),
        Move(third.id, State.REQUESTED, State.QUEUED, "system", "waiting for capacity"),
    ])  # fmt: skip
    assert isinstance(done[1], StateError)
    assert done[1].current == "queued"
    assert isinstance(done[2], NotFoundError)
    assert not isinstance(done[0], Exception)
    env_one, state_one = done[0]
    assert (env_one.state, env_one.host) == (State.PROVISIONING, "n1")
    assert state_one.message == "provisioning: admitted to n1"
    assert [(e.type, e.message) for e in await registry.events(first.id)][1:] == [
        (EventType.STATE, "provisioning: admitted to n1"),
        (EventType.PROGRESS, "creating sandbox"),
    ]
    assert [t.to_state for t in await registry.transitions(moved_away.id)] == [State.QUEUED]
    assert (await registry.get(third.id)).state is State.QUEUED


async def test_illegal_transition_is_refused_before_sql(registry: Registry, alice: User) -> None:
    """A transition outside the table raises StateError."""
    env, _ = await registry.create(new(alice.id))
    with pytest.raises(StateError):
        await registry.transition(env.id, State.REQUESTED, State.RUNNING, actor="a", reason="r")


async def test_failed_keeps_its_reason(registry: Registry, alice: User) -> None:
    """Entering failed stores the reason as the failure reason."""
    env, _ = await registry.create(new(alice.id))
    failed, _ = await registry.transition(
        env.id, State.REQUESTED, State.FAILED, actor="system", reason="boom"
    )
    assert (failed.state, failed.failure_reason) == (State.FAILED, "boom")


async def test_events_are_numbered_and_read_after_a_seq(registry: Registry, alice: User) -> None:
    """Events get consecutive seqs and can be read from any point."""
    env, _ = await registry.create(new(alice.id))
    for n in range(3):
        await registry.add_event(env.id, EventType.PROGRESS, f"step {n}", {"n": n})
    after = await registry.events(env.id, after_seq=2)
    assert [(e.seq, e.message, e.data) for e in after] == [
        (3, "step 1", {"n": 1}),
        (4, "step 2", {"n": 2}),
    ]
    assert [e.state for e in after] == [State.REQUESTED, State.REQUESTED]


async def test_queue_orders_by_priority_then_age(
    registry: Registry, alice: User, clock: FakeClock
) -> None:
    """The queue serves higher priority first, then older first."""
    made = []
    for priority in (0, 5, 0, 5):
        env, _ = await registry.create(
            NewEnvironment(new_env_id(), alice.id, make_spec(), priority, None)
        )
        made.append(env.id)
        clock.advance(1)
    expected = [made[1], made[3], made[0], made[2]]
    assert [e.id for e in await registry.queue()] == expected
    assert [e.queue_position for e in await registry.queue()] == [1, 2, 3, 4]
    assert (await registry.get(made[2])).queue_position == 4
    assert {e.id: e.queue_position for e in await registry.list()} == {
        env_id: n for n, env_id in enumerate(expected, 1)
    }


async def test_get_of_unknown_environment(registry: Registry) -> None:
    """An unknown id is a NotFoundError naming it."""
    with pytest.raises(NotFoundError) as caught:
        await registry.get("0000000000")
    assert caught.value.name == "0000000000"


async def test_accounts_round_trip(registry: Registry, clock: FakeClock) -> None:
    """Users and tokens are stored, found, touched and revoked."""
    admin = await registry.accounts.add_user("root", "admin", password_hash="$argon2id$x")
    await registry.accounts.set_totp(admin.id, "JBSWY3DPEHPK3PXP")
    token = await registry.accounts.add_token(admin.id, "laptop", "abc123", "$argon2id$y")
    clock.advance(10)
    await registry.accounts.touch_token("abc123")
    await registry.accounts.revoke_token("abc123")
    user = await registry.accounts.user_by_name("root")
    assert (user.role, user.password_hash, user.totp_secret) == (
        "admin",
        "$argon2id$x",
        "JBSWY3DPEHPK3PXP",
    )
    [stored] = await registry.accounts.tokens(admin.id)
    assert (stored.id, stored.name, stored.revoked) == ("abc123", "laptop", True)
    assert stored.last_used == datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert token.created == datetime(2030, 1, 1, tzinfo=UTC)


async def test_sql_failures_become_registry_errors(registry: Registry) -> None:
    """A unique-constraint violation surfaces as RegistryError, never a SQLAlchemy error."""
    await registry.accounts.add_user("dup")
    with pytest.raises(RegistryError) as caught:
        await registry.accounts.add_user("dup")
    assert caught.value.code == "registry"


async def test_a_closed_registry_refuses_work(db_url: str) -> None:
    """Using the registry after aclose raises ClosedError."""
    registry = await Registry.open(db_url)
    await registry.aclose()
    with pytest.raises(ClosedError):
        await registry.list()


async def test_an_idle_connection_the_server_dropped_is_checked_and_replaced(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL ends every registry connection (a restart, a firewall). A connection
    idle longer than IDLE_PING is pinged before use and replaced: nothing fails. Without
    that check, the first transaction on a dropped connection fails, and the next one
    connects anew."""
    name = f"genos_{new_env_id()}"
    url = create_database(postgres_server, name)
    registry = await Registry.open(url)

    def drop_connections() -> None:
        dsn = postgres_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s", (name,),
            ).fetchone()  # fmt: skip
        assert ended is not None
        assert ended[0] >= 1

    try:
        await registry.accounts.add_user("alice", "user")
        monkeypatch.setattr(database, "IDLE_PING", 0.1)
        drop_connections()
        await asyncio.sleep(0.3)
        assert [u.name for u in await registry.accounts.users()] == ["alice"]
        monkeypatch.setattr(database, "IDLE_PING", 3600.0)
        drop_connections()
        with pytest.raises(RegistryError):
            await registry.accounts.users()
        assert [u.name for u in await registry.accounts.users()] == ["alice"]
    finally:
        await registry.aclose()
        drop_database(postgres_server, name)


async def test_an_unreachable_database_is_a_registry_error() -> None:
    """A PostgreSQL URL nobody answers raises RegistryError at open, not a driver error."""
    with pytest.raises(RegistryError) as caught:
        await Registry.open("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    assert caught.value.fault == "outside"
