"""Fixtures for orchestrator tests: engines over a registry on each backend.

The registry database (``db_url``: SQLite, or a real PostgreSQL 15) comes from
``tests/databases.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from genos.orchestrator import Capacity, Engine, FakeClock, Quota, Registry, User
from genos.runtime.fake import FakeDriver
from tests.orchestrator.doubles import HookedDriver

MakeEngine = Callable[..., Awaitable[Engine]]


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
