"""Capacity, quotas and the fake clock as plain values."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from genos.errors import CapacityError, InputError, QuotaError, SpecError
from genos.orchestrator import Capacity, FakeClock, Quota, Usage
from genos.orchestrator.capacity import Request, Requests, kind_of
from genos.spec import EnvironmentSpec, parse_spec


def test_capacity_from_host_keeps_a_reserve_and_overcommits_cpu() -> None:
    """The host's capacity is its CPUs and MemTotal less the reserve; requests may add up
    to four times its CPUs and once its memory."""
    lines = Path("/proc/meminfo").read_text(encoding="ascii").splitlines()
    total_mb = next(int(line.split()[1]) // 1024 for line in lines if line.startswith("MemTotal:"))
    capacity = Capacity.from_host(reserve_mb=512)
    assert capacity.cpus == os.cpu_count()
    assert capacity.memory_mb == total_mb - 512
    assert capacity.allocatable_cpus == 4 * capacity.cpus
    assert capacity.allocatable_memory_mb == capacity.memory_mb


def test_fits_counts_what_is_reserved_against_the_overcommitted_host() -> None:
    """A request fits only beside what is already reserved, up to the host times its ratios."""
    capacity = Capacity(cpus=4, memory_mb=4096)
    assert capacity.fits(Usage(2, 3.0, 2048), 1.0, 2048) is True
    assert capacity.fits(Usage(2, 3.0, 2048), 1.5, 1024) is False
    assert capacity.fits(Usage(2, 3.0, 2048), 0.5, 2049) is False
    dense = Capacity(cpus=2, memory_mb=4096, cpu_overcommit=4, memory_overcommit=1.5)
    assert (dense.allocatable_cpus, dense.allocatable_memory_mb) == (8.0, 6144)
    assert dense.fits(Usage(399, 7.98, 6000), 0.02, 144) is True
    assert dense.fits(Usage(400, 8.0, 6000), 0.02, 64) is False


def test_a_request_larger_than_the_host_is_impossible() -> None:
    """check_possible refuses a request an empty host could not reserve, and limits the
    host itself does not have, whatever the overcommit."""
    capacity = Capacity(cpus=4, memory_mb=4096, cpu_overcommit=4)
    capacity.check_possible(Request(16, 4096), Request(4, 4096))
    with pytest.raises(CapacityError, match="reserved") as caught:
        capacity.check_possible(Request(0.5, 4097))
    assert caught.value.fault == "host"
    with pytest.raises(CapacityError, match="may use up to 8 cpus"):
        capacity.check_possible(Request(0.5, 64), Request(8, 1024))


def _spec(**fields: object) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({"name": "t", **fields})


def test_requests_come_from_the_kind_of_environment() -> None:
    """A plain desktop, a desktop with apps, a gVisor desktop and VMs get their measured
    defaults; a VM's memory request grows with its guest and stops at what it may use."""
    requests = Requests()
    firefox = [{"name": "Firefox", "packages": ["firefox-esr"]}]
    assert requests.for_spec(_spec()) == Request(0.02, 64)
    assert requests.for_spec(_spec(apps=firefox)) == Request(0.05, 320)
    assert requests.for_spec(_spec(tier="gvisor")) == Request(0.03, 96)
    micro = _spec(tier="microvm", resources={"cpus": 1, "memory_mb": 1024})
    assert requests.for_spec(micro) == Request(0.25, 320 + round(0.35 * 1024))
    small = _spec(tier="vm", resources={"cpus": 0.25, "memory_mb": 256})
    assert requests.for_spec(small) == Request(0.25, 352 + round(0.35 * 256))
    tiny = _spec(resources={"cpus": 0.25, "memory_mb": 256})
    assert requests.for_spec(tiny.model_copy(update={"apps": []})) == Request(0.02, 64)
    assert kind_of(micro) == "microvm"
    assert kind_of(_spec(tier="gvisor", apps=firefox)) == "gvisor/apps"


def test_a_spec_states_its_own_request_within_its_limits() -> None:
    """An explicit request wins field by field; one above the limit is refused by the spec."""
    requests = Requests()
    spec = _spec(resources={"cpus": 2, "memory_mb": 4096, "request": {"memory_mb": 1000}})
    assert requests.for_spec(spec) == Request(0.02, 1000)
    with pytest.raises(SpecError, match=r"request\.cpus 3 is more than the limit 2"):
        parse_spec({"resources": {"cpus": 2, "request": {"cpus": 3}}})
    with pytest.raises(SpecError, match=r"request\.memory_mb 4096 is more than the limit 2048"):
        parse_spec({"resources": {"request": {"memory_mb": 4096}}})


def test_operators_override_rules_and_bad_overrides_are_refused() -> None:
    """An override replaces the named fields of one kind; unknown kinds and nonsense fail."""
    requests = Requests().with_overrides({"container/desktop": {"memory_mb": 100}})
    assert requests.for_spec(_spec()) == Request(0.02, 100)
    assert Requests.limits().for_spec(_spec()) == Request(1.0, 2048)
    with pytest.raises(InputError, match="unknown kind 'container/games'"):
        Requests().with_overrides({"container/games": {"cpus": 1}})
    with pytest.raises(InputError, match="positive"):
        Requests().with_overrides({"microvm": {"cpus": -1}})
    with pytest.raises(InputError, match="numbers only"):
        Requests().with_overrides({"microvm": {"cpus": "lots"}})


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
