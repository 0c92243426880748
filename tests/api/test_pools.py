"""``/v1/pools`` and claims through ``POST /v1/environments`` (in-process, fake runtime)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.api.conftest import Api, AsUser

pytestmark = pytest.mark.anyio
PROMPT = "a debian desktop with firefox"


async def ready(api: httpx.AsyncClient, pool_id: str, count: int) -> dict[str, object]:
    """Poll the pool until ``count`` of its environments are ready."""
    async with asyncio.timeout(10):
        while True:
            pools = (await api.get("/v1/pools")).json()
            pool = next(p for p in pools if p["id"] == pool_id)
            if pool["ready"] == count and pool["starting"] == 0:
                return dict(pool)
            await asyncio.sleep(0.02)


async def test_a_pool_from_words_serves_the_same_words_at_once(
    api: httpx.AsyncClient, api_app: Api, as_user: AsUser
) -> None:
    """An admin sets a pool of two from a prompt; a user asking the same words gets a running
    environment from it at once (201, ``pool`` and ``claimed`` set, audited with the pool),
    the pool starts another, and the user cannot manage pools."""
    made = await api.put("/v1/pools", json={"prompt": PROMPT, "size": 2})
    assert made.status_code == 200, made.text
    pool = made.json()
    assert (pool["size"], pool["prompt"]) == (2, PROMPT)
    assert pool["summary"] == "Firefox ESR; network internet; container"
    await ready(api, pool["id"], 2)

    bob = await as_user("bob")
    created = await bob.post("/v1/environments", json={"prompt": PROMPT})
    assert created.status_code == 201, created.text
    env = created.json()
    assert env["state"] == "running"
    assert env["pool"] == pool["id"]
    assert env["claimed"] is not None
    assert env["owner"] != "upool"
    await ready(api, pool["id"], 2)
    records = list(api_app.service.audit_log.records())
    create = [r for r in records if r.get("action") == "create" and r.get("env_id") == env["id"]]
    assert create[0]["pool"] == pool["id"]
    assert create[0]["user"] == "bob"

    assert (await bob.get("/v1/pools")).status_code == 403
    assert (await bob.put("/v1/pools", json={"prompt": PROMPT, "size": 1})).status_code == 403
    assert (await bob.delete(f"/v1/pools/{pool['id']}")).status_code == 403


async def test_setting_the_same_spec_again_resizes_and_removing_ends_the_members(
    api: httpx.AsyncClient,
) -> None:
    """PUT with the same words sets the size of the existing pool; DELETE ends its members."""
    first = (await api.put("/v1/pools", json={"prompt": PROMPT, "size": 2})).json()
    again = (await api.put("/v1/pools", json={"prompt": PROMPT, "size": 1})).json()
    assert again["id"] == first["id"]
    await ready(api, first["id"], 1)
    removed = await api.delete(f"/v1/pools/{first['id']}")
    assert removed.status_code == 200
    assert (await api.get("/v1/pools")).json() == []
    envs = (await api.get("/v1/environments", params={"state": "running"})).json()["items"]
    assert [e for e in envs if e["pool"] == first["id"] and e["claimed"] is None] == []


async def test_bad_pool_requests_are_clear_4xx(api: httpx.AsyncClient) -> None:
    """Sizes out of range, both or neither of spec and prompt, an unknown pool, a volume
    spec, and words that need answers: 4xx or the composer's question, nothing set."""
    for body in ({"prompt": PROMPT, "size": -1}, {"prompt": PROMPT, "size": 1001},
                 {"size": 1}, {"prompt": PROMPT}):  # fmt: skip
        assert (await api.put("/v1/pools", json=body)).status_code == 422, body
    assert (await api.delete("/v1/pools/pnothere")).status_code == 404
    volume = {"persistence": {"mode": "volume", "volume": "home"}}
    refused = await api.put("/v1/pools", json={"spec": volume, "size": 1})
    assert refused.status_code == 422
    assert "volume belongs to its owner" in refused.json()["error"]["message"]
    asked = await api.put("/v1/pools", json={"prompt": "a browser", "size": 1})
    assert asked.status_code == 200
    assert asked.json()["outcome"] == "clarify"
    assert (await api.get("/v1/pools")).json() == []
