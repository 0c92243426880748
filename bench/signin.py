"""Sign-in throttling: what 30 wrong passwords get with it on, and with it off, in the same run.

The app runs in-process (httpx's ASGI transport, no socket) on a real SQLite
registry, with the real argon2id hashes; the account ``victim`` exists.

1. Off (:meth:`SigninPolicy.off`, what GenOS did before): 30 wrong
   passwords as fast as they go; every one is a password check.
2. On (the defaults): the same 30, as fast as they go: how many reach a
   password check (401) and how many are refused (429) with which
   Retry-After.
3. On, an attacker who waits exactly what each Retry-After says (the
   clock is moved forward instead of sleeping): guesses until the lockout,
   the time they cost, and the lockout itself. Then the same against a name
   that does not exist: the answers must be the same.

The figure is the guessing rate against one account: guesses per hour with
throttling off (measured) over guesses per hour with it on (the wait the
server imposes, lockouts included), printed as a ratio.

Run: .venv/bin/python bench/signin.py
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from genos.api.app import create_app
from genos.api.service import Service
from genos.gateway.tokens import MemoryRevocations, TokenAuthority
from genos.node.local import DemoDriver
from genos.orchestrator import Capacity, Engine, Registry
from genos.orchestrator.clock import FakeClock
from genos.orchestrator.signins import SigninPolicy

ATTEMPTS = 30
TMP = Path(tempfile.mkdtemp(prefix="genos-bench-signin-"))


async def service(name: str, policy: SigninPolicy, clock: FakeClock | None = None) -> Service:
    """A started service on its own SQLite registry, with the account ``victim``."""
    registry = await Registry.open(f"sqlite:///{TMP / name}.db", clock=clock)
    engine = Engine(registry, DemoDriver(TMP / name / "displays"), Capacity(cpus=1, memory_mb=512))
    authority = TokenAuthority(secrets.token_bytes(32), revocations=MemoryRevocations())
    made = Service(engine, TMP / name, authority, signin=policy)
    await made.start()
    await made.add_user("victim", "the real password", "user")
    return made


def client(svc: Service, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(
        app=create_app(svc, web_dir=TMP / "no-web"), client=(address, 1)
    )
    return httpx.AsyncClient(transport=transport, base_url="http://genos.bench")


async def guess(http: httpx.AsyncClient, name: str, n: int) -> httpx.Response:
    return await http.post("/v1/login", json={"username": name, "password": f"guess {n}"})


async def burst(svc: Service, address: str) -> tuple[float, Counter[str]]:
    """30 wrong passwords back to back: seconds taken, and the answers."""
    seen: Counter[str] = Counter()
    async with client(svc, address) as http:
        began = time.perf_counter()
        for n in range(ATTEMPTS):
            response = await guess(http, "victim", n)
            seen[f"{response.status_code} {response.headers.get('retry-after', '')}".strip()] += 1
    return time.perf_counter() - began, seen


async def patient(svc: Service, clock: FakeClock, name: str, address: str) -> list[str]:
    """Wrong passwords made when each Retry-After allows, until a lockout; the answers."""
    answers: list[str] = []
    policy = svc.signin.account
    async with client(svc, address) as http:
        for n in range(ATTEMPTS):
            response = await guess(http, name, n)
            wait = int(response.headers.get("retry-after", "0"))
            answers.append(f"{response.status_code}" + (f" wait {wait}s" if wait else ""))
            if wait >= policy.lockout:
                break
            clock.advance(wait)
    return answers


async def main() -> None:
    off = await service("off", SigninPolicy.off())
    took_off, seen_off = await burst(off, "198.51.100.1")
    print(f"off: {ATTEMPTS} wrong passwords in {took_off:.2f} s: {dict(seen_off)}")
    rate_off = ATTEMPTS / took_off * 3600

    on = await service("on", SigninPolicy())
    took_on, seen_on = await burst(on, "198.51.100.2")
    print(f"on:  {ATTEMPTS} wrong passwords in {took_on:.2f} s: {dict(seen_on)}")

    clock = FakeClock()
    paced = await service("paced", SigninPolicy(), clock)
    real = await patient(paced, clock, "victim", "198.51.100.3")
    made_up = await patient(paced, clock, "no-such-user", "198.51.100.4")
    checks = sum(1 for a in real if a == "401")
    policy = paced.signin.account
    waits = [int(a.split()[2].rstrip("s")) for a in real if "wait" in a]
    waited = sum(w for w in waits if w < policy.lockout)
    print(f"on, waiting as told: {' | '.join(real)}")
    print(f"  {checks} password checks, then locked for {policy.lockout:g} s; "
          f"the waits before the lockout add up to {waited} s")  # fmt: skip
    print(f"  a made-up name gets the same answers: {real == made_up}")
    cycle = waited + policy.lockout  # one round of guesses, lockout included
    rate_on = checks / cycle * 3600
    print(f"guesses per hour against one account: off {rate_off:,.0f}, on {rate_on:,.1f} "
          f"(ratio {rate_off / rate_on:,.0f}x)")  # fmt: skip
    for svc in (off, on, paced):
        await svc.aclose()
        await svc.engine.registry.aclose()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
