"""Registry databases for tests: SQLite, and a real throwaway PostgreSQL 15 server.

The PostgreSQL server is a cluster made for the session: ``initdb`` into a
temporary directory (as the ``postgres`` user when running as root, since the
server refuses to run as root), listening on 127.0.0.1 at a free port and on
a unix socket inside that directory; it is stopped and deleted at the end.
Every test gets its own database on it. Loaded by ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PG_BIN = Path(os.environ.get("GENOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
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


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Run a throwaway PostgreSQL 15 cluster; yields its base URL (no database).

    Raises:
        FileNotFoundError: PostgreSQL is not installed in ``PG_BIN``.
    """
    if not (PG_BIN / "initdb").exists():
        raise FileNotFoundError(f"PostgreSQL not installed in {PG_BIN} (apt install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="genos-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            _as_server_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                             "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True,
        )  # fmt: skip
        start = [*pg_ctl, "-l", str(root / "server.log"), "-o", options, "-w", "start"]
        subprocess.run(_as_server_user(start), check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        if (data / "postmaster.pid").exists():
            stop = [*pg_ctl, "-m", "fast", "-w", "stop"]
            subprocess.run(_as_server_user(stop), check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A running throwaway PostgreSQL 15 cluster for the session; yields its base URL."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL not installed in {PG_BIN} (apt install postgresql)")
    with postgres_cluster() as url:
        yield url


def create_database(base: str, name: str) -> str:
    """Create database ``name`` on the cluster at ``base``; its URL."""
    _admin(base, f"CREATE DATABASE {name}")
    return f"{base}/{name}"


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
