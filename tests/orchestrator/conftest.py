"""Fixtures for orchestrator tests: a registry on SQLite and on a real PostgreSQL 15.

The PostgreSQL server is a throwaway cluster made for the session: ``initdb``
into a temporary directory (as the ``postgres`` user when running as root,
since the server refuses to run as root), listening on 127.0.0.1 at a free
port and on a unix socket inside that directory; it is stopped and deleted
at the end. Every test gets its own database on it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from genos.orchestrator import Capacity, Engine, FakeClock, Quota, Registry, User
from genos.runtime.fake import FakeDriver
from tests.orchestrator.doubles import HookedDriver

PG_BIN = Path(os.environ.get("GENOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

MakeEngine = Callable[..., Awaitable[Engine]]


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A running throwaway PostgreSQL 15 cluster; yields its base URL (no database)."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL not installed in {PG_BIN} (apt install postgresql)")
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


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so."""
    return FakeClock()


@pytest.fixture
async def registry(db_url: str, clock: FakeClock) -> AsyncIterator[Registry]:
    """An open, migrated registry on the test's backend."""
    opened = await Registry.open(db_url, clock=clock)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def alice(registry: Registry) -> User:
    """An ordinary user."""
    return await registry.accounts.add_user("alice", "user")


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[HookedDriver]:
    """The package's FakeDriver (display sockets under tmp_path) behind test hooks."""
    hooked = HookedDriver(FakeDriver(tmp_path / "fake"))
    try:
        yield hooked
    finally:
        await hooked.aclose()


@pytest.fixture
async def make_engine(registry: Registry, driver: HookedDriver) -> AsyncIterator[MakeEngine]:
    """Build started engines (no background maintenance) and close them at the end."""
    made: list[Engine] = []

    async def make(
        capacity: Capacity | None = None,
        quota: Quota | None = None,
        *,
        start: bool = True,
        maintenance: bool = False,
        **options: object,
    ) -> Engine:
        engine = Engine(
            registry,
            driver,
            capacity or Capacity(cpus=8, memory_mb=16384),
            quotas=lambda _owner: quota,
            host_name="test-host",
            **options,  # type: ignore[arg-type]
        )
        made.append(engine)
        if start:
            await engine.start(maintenance=maintenance)
        return engine

    try:
        yield make
    finally:
        for engine in made:
            await engine.aclose()


@pytest.fixture
async def engine(make_engine: MakeEngine) -> Engine:
    """A started engine on an 8-CPU, 16 GiB host, without quotas."""
    return await make_engine()
