"""Registry databases for tests: SQLite, and a real throwaway PostgreSQL 15 server.

The PostgreSQL server is a cluster made for the session: ``initdb`` into a
temporary directory (as the ``postgres`` user when running as root, since the
server refuses to run as root), listening on 127.0.0.1 at a free port and on
a unix socket inside that directory; it is stopped and deleted at the end.
Every test gets its own database on it. Loaded by ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from genos.cluster import localpg

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the engine is asyncio)."""
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Run a throwaway PostgreSQL 15 cluster; yields its base URL (no database)."""
    with localpg.server(Path(tempfile.mkdtemp(prefix="genos-pg-")), _free_port()) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A running throwaway PostgreSQL 15 cluster for the session; yields its base URL."""
    if not (localpg.PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL not installed in {localpg.PG_BIN} (apt install postgresql)")
    with postgres_cluster() as url:
        yield url


def create_database(base: str, name: str) -> str:
    """Create database ``name`` on the cluster at ``base``; its URL."""
    _admin(base, f"CREATE DATABASE {name}")
    return f"{base}/{name}"


def drop_database(base: str, name: str) -> None:
    """Drop database ``name`` (and its connections) from the cluster at ``base``."""
    _admin(base, f"DROP DATABASE {name} WITH (FORCE)")


def _admin(base: str, sql: str) -> None:
    dsn = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.encode())


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty registry database: SQLite in a temp dir, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'genos.db'}"
        return
    base: str = request.getfixturevalue("postgres_server")
    name = f"genos_{secrets.token_hex(4)}"
    _admin(base, f"CREATE DATABASE {name}")
    try:
        yield f"{base}/{name}"
    finally:
        _admin(base, f"DROP DATABASE {name} WITH (FORCE)")
