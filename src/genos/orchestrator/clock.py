"""Time, injectable: the engine asks a :class:`Clock`, tests pass a :class:`FakeClock`.

Every timestamp the orchestrator stores and every timer it runs (TTL, idle,
the maintenance loop) goes through one clock, so a test moves time forward
with :meth:`FakeClock.advance` instead of sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time (aware, UTC) and sleeping on it."""

    def now(self) -> datetime:
        """The current time, timezone-aware in UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware in UTC."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to; sleepers wake when it passes them."""

    def __init__(self, start: datetime | None = None) -> None:
        """Start at ``start`` (default 2030-01-01 00:00 UTC).

        Args:
            start: the first time :meth:`now` returns; must be timezone-aware.
        """
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until :meth:`advance` moves the clock ``seconds`` past now."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self._now + timedelta(seconds=seconds)
        if seconds <= 0:
            future.set_result(None)
        else:
            self._sleepers.append((deadline, future))
            self._notify()
        await future

    async def sleeping(self, count: int = 1) -> None:
        """Return once at least ``count`` coroutines are asleep on this clock.

        Args:
            count: how many sleepers to wait for.
        """
        if len(self._sleepers) >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((count, future))
        await future

    def _notify(self) -> None:
        waiting = []
        for count, future in self._watchers:
            if len(self._sleepers) >= count:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((count, future))
        self._watchers = waiting

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come.

        Args:
            seconds: how far to move; must not be negative.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += timedelta(seconds=seconds)
        waiting = []
        for deadline, future in self._sleepers:
            if deadline <= self._now:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((deadline, future))
        self._sleepers = waiting
