"""Sign-in throttling in the registry: failures per key, a growing delay, a temporary lockout.

A key is what an attempt is counted against: ``account:<name>`` (whether or
not such an account exists, so the answers never tell the two apart) and
``client:<address>``. Every attempt is charged up front, in the same
transaction that checks whether it may be made at all, so parallel attempts
cannot slip past the count; a sign-in that succeeds is refunded
(:meth:`Signins.refund`).

After ``free`` failures in a row, the next attempt must wait ``base``
seconds, doubling per further failure up to ``ceiling``; at ``lock_after``
failures the key is locked for ``lockout`` seconds. An attempt made too
early, or while locked, is not charged (it never reaches a password check).
A key's count is forgotten ``window`` seconds after its last failure, and
when its lockout ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from genos.orchestrator.models import SigninRow

if TYPE_CHECKING:
    from genos.orchestrator.registry import Registry

KEY_LENGTH = 200


@dataclass(frozen=True)
class Limits:
    """How many failures a key gets, and what follows them (see the module docstring)."""

    free: int = 3
    base: float = 1.0
    ceiling: float = 60.0
    lock_after: int = 10
    lockout: float = 900.0
    window: float = 900.0

    def delay(self, failures: int) -> float:
        """Seconds the next attempt must wait after ``failures`` failures in a row."""
        if failures < self.free:
            return 0.0
        return min(self.base * 2.0 ** (failures - self.free), self.ceiling)


@dataclass(frozen=True)
class SigninPolicy:
    """The limits per account name and per client address; ``enabled=False`` turns them off."""

    account: Limits = Limits()
    client: Limits = Limits(free=10, lock_after=30)
    enabled: bool = True

    @classmethod
    def off(cls) -> SigninPolicy:
        """No throttling (benchmarks compare against it)."""
        return cls(enabled=False)


@dataclass(frozen=True)
class Verdict:
    """What :meth:`Signins.admit` decided.

    ``retry_after`` > 0: refused, try again in that many seconds (nothing was
    charged). Otherwise the attempt was charged; ``locked`` names the keys
    this attempt locked, should it fail, until ``until``.
    """

    retry_after: int
    locked: tuple[str, ...] = ()
    until: datetime | None = None


class Signins:
    """Failure counts per key (``registry.signins``)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def admit(self, keys: list[tuple[str, Limits]]) -> Verdict:
        """Refuse an attempt that comes too early or while locked; otherwise charge it.

        Args:
            keys: each key the attempt counts against, with its limits.

        Returns:
            The verdict (see :class:`Verdict`).

        Raises:
            RegistryError: the database failed.
        """
        now = self._registry.clock.now()
        dialect = self._registry.dialect
        return await self._registry.run(lambda s: _admit(s, dialect, now, keys), write=True)

    async def refund(self, keys: list[tuple[str, Limits]], *, forget: tuple[str, ...]) -> None:
        """Take back a charged attempt that succeeded.

        Args:
            keys: the keys it was charged to.
            forget: keys whose count starts again from nothing (the account signed in).
        """

        def work(session: Session) -> None:
            for key, limits in keys:
                row = session.get(SigninRow, key[:KEY_LENGTH], with_for_update=True)
                if row is None:
                    continue
                if key in forget:
                    session.delete(row)
                    continue
                row.failures = max(row.failures - 1, 0)
                if row.failures < limits.lock_after:
                    row.locked_until = None

        await self._registry.run(work, write=True)

    async def failures(self, key: str) -> int:
        """The current count of ``key`` (0 when it has none)."""
        row = await self._registry.run(lambda s: s.get(SigninRow, key[:KEY_LENGTH]), write=False)
        return 0 if row is None else row.failures


def _admit(
    session: Session, dialect: str, now: datetime, keys: list[tuple[str, Limits]]
) -> Verdict:
    oldest = now - timedelta(seconds=max(limits.window for _, limits in keys))
    session.execute(
        delete(SigninRow).where(
            SigninRow.last < oldest,
            or_(SigninRow.locked_until.is_(None), SigninRow.locked_until < now),
        )
    )
    names = sorted({key[:KEY_LENGTH] for key, _ in keys})  # one order: no lock cycles
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(SigninRow)
        .values([{"key": k, "failures": 0, "last": now, "locked_until": None} for k in names])
        .on_conflict_do_nothing(index_elements=["key"])
    )
    query = select(SigninRow).where(SigninRow.key.in_(names)).order_by(SigninRow.key)
    rows = {row.key: row for row in session.scalars(query.with_for_update())}
    wait = 0.0
    for key, limits in keys:
        row = rows[key[:KEY_LENGTH]]
        _expire(row, limits, now)
        ready = row.locked_until or row.last + timedelta(seconds=limits.delay(row.failures))
        wait = max(wait, (ready - now).total_seconds())
    if wait > 0:
        return Verdict(retry_after=math.ceil(wait))
    locked: list[str] = []
    until: datetime | None = None
    for key, limits in keys:
        row = rows[key[:KEY_LENGTH]]
        row.failures += 1
        row.last = now
        if row.failures >= limits.lock_after:
            row.locked_until = now + timedelta(seconds=limits.lockout)
            locked.append(key)
            until = max(until or row.locked_until, row.locked_until)
    return Verdict(retry_after=0, locked=tuple(locked), until=until)


def _expire(row: SigninRow, limits: Limits, now: datetime) -> None:
    """Forget a count whose lockout is over or whose last failure is out of the window."""
    over = row.locked_until is not None and row.locked_until <= now
    stale = row.last + timedelta(seconds=limits.window) <= now and row.locked_until is None
    if over or stale:
        row.failures = 0
        row.locked_until = None
