"""Sign-in throttling: a growing delay, a lockout, 429 + Retry-After, and no account enumeration."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from genos.api.app import create_app
from genos.api.security import hash_secret, verify_secret
from genos.api.service import Service
from genos.audit import AuditLog
from genos.gateway.tokens import MemoryRevocations, TokenAuthority
from genos.node.local import DemoDriver
from genos.orchestrator import Capacity, Engine, Registry
from genos.orchestrator.clock import FakeClock
from genos.orchestrator.signins import Limits, SigninPolicy
from tests.api.conftest import Api

pytestmark = pytest.mark.anyio

POLICY = SigninPolicy(
    account=Limits(free=2, base=1.0, ceiling=4.0, lock_after=6, lockout=60.0, window=300.0),
    client=Limits(free=5, base=1.0, ceiling=4.0, lock_after=9, lockout=120.0, window=300.0),
)
PASSWORD = "long enough pw"


class Throttled(Api):
    """The app, its service, and the fake clock its registry keeps time with."""

    clock: FakeClock
    db_url: str


@pytest.fixture
async def throttled(db_url: str, tmp_path: Path) -> AsyncIterator[Throttled]:
    """A started service with :data:`POLICY` on a fake clock, and the user ``dave``."""
    clock = FakeClock()
    registry = await Registry.open(db_url, clock=clock)
    driver = DemoDriver(tmp_path / "displays")
    engine = Engine(registry, driver, Capacity(cpus=1, memory_mb=1024), host_name="test-host")
    gateway = TokenAuthority(secrets.token_bytes(32), revocations=MemoryRevocations())
    service = Service(engine, tmp_path / "data", gateway, signin=POLICY)
    await service.start()
    token = await service.bootstrap_admin()
    assert token is not None
    await service.add_user("dave", PASSWORD, "user")
    made = Throttled(create_app(service, web_dir=tmp_path / "no-web"), service, token, tmp_path)
    made.clock = clock
    made.db_url = db_url
    try:
        yield made
    finally:
        await service.aclose()
        await driver.aclose()
        await registry.aclose()


def from_address(api: Api, address: str) -> httpx.AsyncClient:
    """An anonymous in-process client whose requests come from ``address``."""
    transport = httpx.ASGITransport(app=api.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://genos.test")


async def attempt(client: httpx.AsyncClient, name: str, password: str = "wrong!") -> httpx.Response:
    """One password sign-in."""
    return await client.post("/v1/login", json={"username": name, "password": password})


def answer(response: httpx.Response) -> tuple[int, str | None, str]:
    """What an attacker sees: the status, Retry-After and the error code."""
    code = response.json()["error"]["code"]
    return response.status_code, response.headers.get("retry-after"), code


async def run_of_failures(api: Throttled, client: httpx.AsyncClient, name: str) -> list[object]:
    """Wrong passwords for ``name``, each made when the last Retry-After said, until locked out."""
    seen: list[object] = []
    for _ in range(20):
        response = await attempt(client, name)
        seen.append(answer(response))
        if response.status_code == 429:
            wait = int(response.headers["retry-after"])
            if wait >= POLICY.account.lockout:
                break
            api.clock.advance(wait)
    return seen


async def test_wrong_passwords_get_a_growing_delay_then_a_lockout(throttled: Throttled) -> None:
    """Two free failures, then 429s whose Retry-After doubles, then a 60 s lockout that even the
    right password cannot pass; the lockout is audited, and after it the right password works."""
    async with from_address(throttled, "192.0.2.10") as client:
        seen = await run_of_failures(throttled, client, "dave")
        refused = answer(await attempt(client, "dave", PASSWORD))
        throttled.clock.advance(60)
        ok = await attempt(client, "dave", PASSWORD)
    bad = (401, None, "invalid_credentials")
    wait = [(429, str(n), "too_many_attempts") for n in (1, 2, 4, 4, 60)]
    assert seen == [bad, bad, wait[0], bad, wait[1], bad, wait[2], bad, wait[3], bad, wait[4]]
    assert refused == (429, "60", "too_many_attempts")
    assert ok.status_code == 200
    locks = [r for r in AuditLog(throttled.root / "data" / "audit" / "api.jsonl").records()
             if r["action"] == "login_lockout"]  # fmt: skip
    assert [(r["user"], r["client"], r["locked"]) for r in locks] == [
        ("dave", "192.0.2.10", ["account"])
    ]


async def test_a_real_and_a_made_up_account_get_the_same_answers(throttled: Throttled) -> None:
    """The same run of wrong passwords gets the same statuses, Retry-Afters and codes for a real
    and an unknown name, and locked answers of both come without a password check (faster than
    one argon2 verification, and alike in time)."""
    async with (
        from_address(throttled, "192.0.2.20") as one,
        from_address(throttled, "192.0.2.21") as other,
    ):
        real = await run_of_failures(throttled, one, "dave")
        made_up = await run_of_failures(throttled, other, "nobody-here")
        assert real == made_up
        times: dict[str, list[float]] = {"dave": [], "nobody-here": []}
        for _ in range(15):
            for name, client in (("dave", one), ("nobody-here", other)):
                began = time.perf_counter()
                locked = await attempt(client, name, PASSWORD)
                times[name].append(time.perf_counter() - began)
                assert answer(locked)[0] == 429
    stored = hash_secret("x" * 16)
    began = time.perf_counter()
    verify_secret(stored, "y" * 16)
    argon2 = time.perf_counter() - began
    real_median, fake_median = (statistics.median(t) for t in times.values())
    assert max(real_median, fake_median) < argon2
    assert max(real_median, fake_median) < 3 * min(real_median, fake_median)


async def test_parallel_attempts_cannot_slip_past_the_count(throttled: Throttled) -> None:
    """Twelve wrong passwords sent at once: only the two free ones reach a password check."""
    async with from_address(throttled, "192.0.2.25") as client:
        answers = await asyncio.gather(*(attempt(client, "dave") for _ in range(12)))
    assert sorted(a.status_code for a in answers) == [401] * 2 + [429] * 10
    assert await throttled.service.signins.failures("account:dave") == 2


async def test_one_address_trying_many_names_is_throttled(throttled: Throttled) -> None:
    """Spraying names from one address hits the address's limits; another address is unaffected."""
    async with (
        from_address(throttled, "192.0.2.30") as sprayer,
        from_address(throttled, "192.0.2.31") as someone,
    ):
        statuses = [(await attempt(sprayer, f"user{i}")).status_code for i in range(6)]
        assert statuses == [401] * 5 + [429]
        assert (await attempt(someone, "dave", PASSWORD)).status_code == 200


async def test_ipv6_addresses_count_per_64(throttled: Throttled) -> None:
    """Addresses of one IPv6 /64 share a count: rotating them does not buy more tries."""
    statuses = []
    for i in range(6):
        async with from_address(throttled, f"2001:db8:1:2::{i + 1:x}") as client:
            statuses.append((await attempt(client, f"user{i}")).status_code)
    assert statuses == [401] * 5 + [429]
    assert await throttled.service.signins.failures("client:2001:db8:1:2::/64") == 5


async def test_a_good_sign_in_clears_the_account_count(throttled: Throttled) -> None:
    """Two failures, the wait, then the right password: the account starts again from nothing
    (the address keeps its count)."""
    async with from_address(throttled, "192.0.2.40") as client:
        assert [(await attempt(client, "dave")).status_code for _ in range(2)] == [401, 401]
        throttled.clock.advance(1)
        assert (await attempt(client, "dave", PASSWORD)).status_code == 200
        assert await throttled.service.signins.failures("account:dave") == 0
        assert await throttled.service.signins.failures("client:192.0.2.40") == 2
        assert [(await attempt(client, "dave")).status_code for _ in range(2)] == [401, 401]


async def test_counts_are_kept_in_the_registry(throttled: Throttled) -> None:
    """A lockout outlives the process: a registry opened afresh on the database still has it."""
    async with from_address(throttled, "192.0.2.50") as client:
        await run_of_failures(throttled, client, "dave")
    again = await Registry.open(throttled.db_url, clock=throttled.clock)
    try:
        verdict = await again.signins.admit([("account:dave", POLICY.account)])
    finally:
        await again.aclose()
    assert verdict.retry_after == 60


async def test_sign_in_links_are_throttled_per_address(throttled: Throttled) -> None:
    """Guessing link codes from one address gets 429 with Retry-After after the free failures."""
    async with from_address(throttled, "192.0.2.60") as client:
        answers = [await client.post("/v1/login", json={"link": f"guess{i}"}) for i in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert answers[-1].headers["retry-after"] == "1"


async def test_throttling_can_be_turned_off(api_app: Api, tmp_path: Path) -> None:
    """With the policy off, every wrong password is a plain 401 (what bench/signin.py compares)."""
    service = Service(api_app.service.engine, tmp_path / "off", api_app.service.gateway,
                      signin=SigninPolicy.off())  # fmt: skip
    app = create_app(service, web_dir=tmp_path / "no-web")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("192.0.2.70", 1)), base_url="http://t"
    ) as client:
        statuses = {(await attempt(client, "admin")).status_code for _ in range(12)}
    assert statuses == {401}
