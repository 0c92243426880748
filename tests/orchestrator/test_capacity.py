"""Capacity, quotas and the fake clock as plain values."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from genos.errors import CapacityError, QuotaError
from genos.orchestrator import Capacity, FakeClock, Quota, Usage


def test_capacity_from_host_keeps_a_reserve() -> None:
    """The host's capacity is its CPUs and MemTotal less the reserve."""
    lines = Path("/proc/meminfo").read_text(encoding="ascii").splitlines()
    total_mb = next(int(line.split()[1]) // 1024 for line in lines if line.startswith("MemTotal:"))
    capacity = Capacity.from_host(reserve_mb=512)
    assert capacity.cpus == os.cpu_count()
    assert capacity.memory_mb == total_mb - 512


def test_fits_counts_what_is_used() -> None:
    """A request fits only beside what is already held."""
    capacity = Capacity(cpus=4, memory_mb=4096)
    assert capacity.fits(Usage(2, 3.0, 2048), 1.0, 2048) is True
    assert capacity.fits(Usage(2, 3.0, 2048), 1.5, 1024) is False
    assert capacity.fits(Usage(2, 3.0, 2048), 0.5, 2049) is False


def test_a_request_larger_than_the_host_is_impossible() -> None:
    """check_possible refuses what an empty host could not hold either."""
    Capacity(cpus=4, memory_mb=4096).check_possible(4, 4096)
    with pytest.raises(CapacityError) as caught:
        Capacity(cpus=4, memory_mb=4096).check_possible(4, 4097)
    assert caught.value.fault == "host"


def test_quota_names_the_first_limit_crossed() -> None:
    """A quota error carries the limit, what is allowed and what was asked in total."""
    quota = Quota(environments=3, cpus=4, memory_mb=4096)
    quota.check(Usage(2, 3.0, 3072), 1.0, 1024)
    with pytest.raises(QuotaError) as caught:
        quota.check(Usage(2, 3.0, 3072), 1.0, 2048)
    assert (caught.value.limit, caught.value.allowed, caught.value.requested) == (
        "memory_mb", 4096, 5120
    )  # fmt: skip
    assert str(caught.value) == "quota exceeded: memory_mb would be 5120, the limit is 4096"


def test_fake_clock_wakes_sleepers_when_passed() -> None:
    """Sleepers wake when advance() reaches their deadline, not before."""

    async def scenario() -> list[str]:
        clock = FakeClock(datetime(2031, 5, 1, tzinfo=UTC))
        woke: list[str] = []

        async def nap(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append(name)

        tasks = [asyncio.create_task(nap("short", 10)), asyncio.create_task(nap("long", 60))]
        await asyncio.wait_for(clock.sleeping(2), 10)
        clock.advance(30)
        await tasks[0]
        assert woke == ["short"]
        clock.advance(30)
        await tasks[1]
        assert clock.now() == datetime(2031, 5, 1, tzinfo=UTC) + timedelta(seconds=60)
        return woke

    assert asyncio.run(scenario()) == ["short", "long"]
    with pytest.raises(ValueError, match="does not go back"):
        FakeClock().advance(-1)
