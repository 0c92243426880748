"""Connecting to the registry database and bringing its schema up to date.

SQLite (the embedded default, ``data_dir()/genos.db``) runs in WAL mode with
``synchronous=FULL`` (a committed transition survives power loss), foreign
keys on and a busy timeout. Python's sqlite3 driver is told to stay out of
transaction handling so GenOS issues ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for
writes (the write lock is taken up front, so two writers queue on the busy
timeout instead of failing on a lock upgrade) and a plain ``BEGIN`` for reads.
PostgreSQL is reached by URL (``GENOS_DATABASE_URL``, e.g.
``postgresql+psycopg://user@host/db``). A pooled connection that sat unused
for more than :data:`IDLE_PING` seconds is checked with a ``SELECT 1`` before
it is handed out, and replaced when that fails (the server restarted, a
firewall dropped it); one in steady use is not (a ping per transaction was
a fifth of the statements a create costs). When the server goes away under
load, the first failure marks every older connection stale, so the
transactions after it reconnect.

Migrations ship in ``migrations/`` and run at start (``upgrade head``) inside
one transaction; on PostgreSQL an advisory lock keeps concurrent starts from
migrating twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from genos.paths import data_dir

MIGRATIONS = Path(__file__).parent / "migrations"
WRITE = "genos_write"
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)
IDLE_PING = 2.0  # seconds a PostgreSQL connection may sit unused before it is checked


def database_url(url: str | None = None) -> str:
    """The registry's URL: ``url``, else ``GENOS_DATABASE_URL``, else SQLite in the data dir.

    Args:
        url: an explicit SQLAlchemy URL.

    Returns:
        The URL to connect to.
    """
    chosen = url or os.environ.get("GENOS_DATABASE_URL", "").strip()
    return chosen or f"sqlite:///{data_dir() / 'genos.db'}"


def connect(url: str, pool_size: int = 8) -> Engine:
    """A SQLAlchemy engine for ``url`` with GenOS's durability settings.

    Args:
        url: a ``sqlite:///path`` or ``postgresql+psycopg://`` URL.
        pool_size: connections kept open (one per registry worker thread).

    Returns:
        The engine; writes should go through ``engine.execution_options(genos_write=True)``.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_size=pool_size, max_overflow=0)
        _check_when_idle(engine)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Password and token hashes live here: root only (SQLite gives its -wal
        # and -shm files the database file's mode).
        os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT, 0o600))
        Path(parsed.database).chmod(0o600)
    engine = create_engine(url, pool_size=pool_size, max_overflow=0)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _check_when_idle(engine: Engine) -> None:
    """Ping a connection on checkout when it sat unused over :data:`IDLE_PING` seconds."""

    def used(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["used"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry,
                 _proxy: PoolProxiedConnection) -> None:  # fmt: skip
        if time.monotonic() - record.info.get("used", 0.0) <= IDLE_PING:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure: the pool connects anew
            raise DisconnectionError(f"an idle registry connection is gone: {exc}") from exc
        record.info["used"] = time.monotonic()

    event.listen(engine, "connect", used)
    event.listen(engine, "checkin", used)
    event.listen(engine, "checkout", checkout)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # GenOS issues BEGIN itself (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get(WRITE) else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the migrations shipped in the package.

    Args:
        engine: from :func:`connect`.
        revision: an Alembic revision; ``head`` is the newest.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    with engine.execution_options(**{WRITE: True}).begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
