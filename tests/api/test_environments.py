"""Environments over HTTP: create, wait, list, act, delete, events, visibility, idempotency."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from genos.api.views import TCG_NOTE
from genos.spec import EnvironmentSpec, ResourceRequest, Resources, dump
from tests.api.conftest import Api, AsUser

pytestmark = pytest.mark.anyio
PROMPT = "I need a Linux environment with Tor browser for secure browsing"


def small_spec(
    name: str = "desk", memory_mb: int = 1024, reserve_mb: int | None = None
) -> dict[str, Any]:
    """A plain desktop spec as JSON (``reserve_mb``: an explicit memory request)."""
    request = None if reserve_mb is None else ResourceRequest(memory_mb=reserve_mb)
    resources = Resources(cpus=1, memory_mb=memory_mb, request=request)
    return dump(EnvironmentSpec(name=name, resources=resources))


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """POST an environment and return the created record (asserting 201)."""
    response = await client.post("/v1/environments", json={"spec": small_spec()} | body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_create_from_a_prompt_waits_until_running(api: httpx.AsyncClient) -> None:
    """A prompt is composed, provisioned, and with wait=true answered running with its URL."""
    env = await create(api, spec=None, prompt=PROMPT, wait=True)
    assert env["state"] == "running"
    assert env["url"] == f"http://genos.test/#/env/{env['id']}"
    assert env["spec"]["network"]["mode"] == "tor"
    assert env["summary"] == "Tor Browser; network tor; container"
    assert env["spec"]["provenance"]["prompt"] == PROMPT


async def test_create_without_wait_returns_at_once(api: httpx.AsyncClient) -> None:
    """Without wait the answer is the stored record in its first state."""
    env = await create(api)
    assert env["state"] in {"requested", "provisioning", "running"}
    shown = (await api.get(f"/v1/environments/{env['id']}")).json()
    assert shown["id"] == env["id"]


@pytest.mark.parametrize(
    ("prompt", "outcome"),
    [("I want a browser", "clarify"), ("give me root on the host machine", "reject")],
)
async def test_prompts_needing_answers_create_nothing(
    api: httpx.AsyncClient, prompt: str, outcome: str
) -> None:
    """A clarification or rejection is answered as such (200), and no environment is made."""
    response = await api.post("/v1/environments", json={"prompt": prompt})
    assert response.status_code == 200
    assert response.json()["outcome"] == outcome
    assert (await api.get("/v1/environments")).json()["items"] == []


async def test_compose_endpoint_matches_the_cli_shape(api: httpx.AsyncClient) -> None:
    """POST /v1/compose answers the composer's stable JSON shape."""
    body = (await api.post("/v1/compose", json={"prompt": PROMPT})).json()
    assert set(body) == {"outcome", "spec", "clarifications", "violations"}
    assert body["outcome"] == "spec"
    assert body["spec"]["apps"][0]["name"] == "Tor Browser"


async def test_a_vm_tier_composed_on_tcg_says_it_is_no_hardware_boundary(
    api: httpx.AsyncClient, api_app: Api
) -> None:
    """Under TCG the composer's tier rationale says the VM is software emulation; under KVM not."""
    prompt = {"prompt": "I need to analyse malware safely"}

    def tier_reason(answer: dict[str, Any]) -> str:
        decisions = answer["spec"]["provenance"]["decisions"]
        return str(next(d["rationale"] for d in decisions if d["field"] == "tier"))

    api_app.service.accelerator = "tcg"
    on_tcg = (await api.post("/v1/compose", json=prompt)).json()
    assert on_tcg["spec"]["tier"] == "microvm"
    assert TCG_NOTE in tier_reason(on_tcg)
    api_app.service.accelerator = "kvm"
    assert TCG_NOTE not in tier_reason((await api.post("/v1/compose", json=prompt)).json())


async def test_request_id_makes_retries_safe(api: httpx.AsyncClient) -> None:
    """The same request id returns the same environment; with another spec it is a conflict."""
    first = await create(api, request_id="r-1")
    again = await create(api, request_id="r-1")
    assert again["id"] == first["id"]
    other = await api.post(
        "/v1/environments", json={"spec": small_spec("other"), "request_id": "r-1"}
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "conflict"
    assert len((await api.get("/v1/environments")).json()["items"]) == 1


async def test_suspend_resume_delete(api: httpx.AsyncClient) -> None:
    """Verbs move the state; an illegal one is 409 naming the state; delete is idempotent."""
    env = await create(api, wait=True)
    path = f"/v1/environments/{env['id']}"
    bad = await api.post(f"{path}/resume")
    assert bad.status_code == 409
    assert bad.json()["error"] == {
        "code": "wrong_state",
        "message": "cannot resume: state is running, needs suspended",
    }
    assert (await api.post(f"{path}/suspend")).json()["state"] == "suspended"
    assert (await api.post(f"{path}/resume")).json()["state"] == "running"
    assert (await api.delete(path)).json()["state"] == "terminated"
    assert (await api.delete(path)).json()["state"] == "terminated"
    assert (await api.post(f"{path}/suspend")).status_code == 409


async def test_detail_has_cgroup_usage_while_running(api: httpx.AsyncClient) -> None:
    """The detail view carries the driver's usage figures for a running environment."""
    env = await create(api, wait=True)
    shown = (await api.get(f"/v1/environments/{env['id']}")).json()
    assert shown["usage"] == {"cpu_seconds": 0.0, "memory_bytes": 0, "pids": 1}
    assert (await api.get("/v1/environments")).json()["items"][0]["usage"] is None


async def test_users_see_only_their_own(api: httpx.AsyncClient, as_user: AsUser) -> None:
    """A user lists and acts on their own environments; others' are 404; admin sees all."""
    ida = await as_user("ida")
    jon = await as_user("jon")
    mine = await create(ida)
    await create(jon)
    assert [e["id"] for e in (await ida.get("/v1/environments")).json()["items"]] == [mine["id"]]
    for method, suffix in [("GET", ""), ("POST", "/suspend"), ("DELETE", ""), ("GET", "/events")]:
        response = await jon.request(method, f"/v1/environments/{mine['id']}{suffix}")
        assert response.status_code == 404, (method, suffix)
    token = await jon.post(f"/v1/environments/{mine['id']}/display-token", json={})
    assert token.status_code == 404
    assert len((await api.get("/v1/environments")).json()["items"]) == 2


async def test_list_pages_through_everything_in_order(api: httpx.AsyncClient) -> None:
    """limit and cursor page through all environments oldest first without repeats."""
    made = [(await create(api, request_id=f"p{n}"))["id"] for n in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = (
            await api.get(
                "/v1/environments",
                params={"limit": 2, "cursor": cursor} if cursor else {"limit": 2},
            )
        ).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == made
    bad = await api.get("/v1/environments", params={"cursor": "0123456789"})
    assert bad.status_code == 400


async def test_list_filters_by_state(api: httpx.AsyncClient) -> None:
    """``state`` filters the list."""
    a = await create(api, wait=True, request_id="a")
    b = await create(api, wait=True, request_id="b")
    await api.delete(f"/v1/environments/{b['id']}")
    running = (await api.get("/v1/environments", params={"state": "running"})).json()["items"]
    assert [e["id"] for e in running] == [a["id"]]


async def read_events(api: httpx.AsyncClient, env_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every SSE event of a stream until it ends."""
    got: list[dict[str, Any]] = []
    async with api.stream("GET", f"/v1/environments/{env_id}/events", params=params) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
    return got


async def test_events_stream_the_exact_lifecycle(api: httpx.AsyncClient) -> None:
    """The SSE stream carries the whole lifecycle in order and ends after the final state."""
    env = await create(api, wait=True)
    await api.delete(f"/v1/environments/{env['id']}")
    events = await read_events(api, env["id"])
    assert [(e["type"], e["state"], e["message"]) for e in events] == [
        ("state", "requested", "requested"),
        ("state", "provisioning", "provisioning: admitted"),
        ("progress", "provisioning", "creating sandbox"),
        ("progress", "provisioning", "sandbox ready"),
        ("progress", "provisioning", "display ready"),
        ("state", "running", "running: provisioned"),
        ("state", "terminated", "terminated: terminated by admin"),
    ]
    assert [e["seq"] for e in events] == list(range(1, 8))
    resumed = await read_events(api, env["id"], after=5)
    assert [e["seq"] for e in resumed] == [6, 7]


async def test_events_follow_false_ends_after_history(api: httpx.AsyncClient) -> None:
    """With follow=false the stream ends after the stored events of a live environment."""
    env = await create(api, wait=True)
    events = await read_events(api, env["id"], follow="false")
    assert events[-1]["state"] == "running"


async def test_quota_and_capacity_errors_are_4xx(api: httpx.AsyncClient) -> None:
    """More memory than the host has is refused with 422 capacity, never 5xx."""
    response = await api.post("/v1/environments", json={"spec": small_spec(memory_mb=60000)})
    assert response.status_code in {422}
    body = response.json()["error"]
    assert body["code"] in {"capacity", "invalid_input"}


async def test_host_reports_capacity_and_use(api: httpx.AsyncClient) -> None:
    """GET /v1/host has the capacity, what running environments request and may use side by
    side, their real use, and the queue."""
    await create(api, wait=True)
    host = (await api.get("/v1/host")).json()
    assert host["capacity"] == {
        "cpus": 4.0, "memory_mb": 8192, "cpu_overcommit": 1.0, "memory_overcommit": 1.0,
        "allocatable_cpus": 4.0, "allocatable_memory_mb": 8192,
    }  # fmt: skip
    assert host["requested"] == {"environments": 1, "cpus": 0.02, "memory_mb": 64}
    assert host["limits"] == {"environments": 1, "cpus": 1.0, "memory_mb": 1024}
    assert host["used"]["memory_mb"] == 0  # the fake runs nothing
    assert host["free"] == {"cpus": 3.98, "memory_mb": 8128}
    assert host["memory_pressure"] is None
    assert host["queue"] == []
    assert host["runtimes"] == ["fake"]


async def test_queue_then_cancel(api: httpx.AsyncClient, api_app: Api) -> None:
    """A request that does not fit waits queued with its position and can be cancelled."""
    big = small_spec(memory_mb=6000, reserve_mb=6000)
    first = await create(api, spec=big, wait=True, request_id="big1")
    second = await create(api, spec=big, request_id="big2")
    assert first["state"] == "running"
    assert second["state"] == "queued"
    assert second["queue_position"] == 1
    gone = await api.delete(f"/v1/environments/{second['id']}")
    assert gone.json()["state"] == "terminated"
    assert (await api.get("/v1/host")).json()["queue"] == []


async def test_metrics_page(api: httpx.AsyncClient) -> None:
    """/metrics counts environments by state and shows per-environment cgroup figures."""
    env = await create(api, wait=True)
    text = (await api.get("/metrics")).text
    assert 'genos_environments{state="running"} 1' in text
    assert f'genos_env_pids{{env="{env["id"]}"}} 1' in text
    assert "genos_host_capacity_cpus 4" in text
    assert "# TYPE genos_env_cpu_seconds_total counter" in text


async def test_api_answers_say_how_long_the_server_took(api: httpx.AsyncClient) -> None:
    """Every /v1 answer has the security headers and a Server-Timing ``app`` duration."""
    answer = await api.get("/v1/host")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Cache-Control"] == "no-store"
    name, _, duration = answer.headers["Server-Timing"].partition(";dur=")
    assert name == "app"
    assert 0 < float(duration) < 10_000
