"""Bad input over HTTP: every answer is a 4xx with the JSON error shape, never a 5xx."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


def is_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """Assert the status and the ``{"error": {"code", "message"}}`` shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert "\n" not in body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"spec": {"tier": "container"}, "surprise": 1}, "surprise"),
        ({"prompt": "a desktop", "priority": "high"}, "priority"),
        ({"prompt": "a desktop", "timeout": -1}, "timeout"),
        ({"spec": {"apiVersion": "genos/v9"}}, "spec.apiVersion"),
        ({"spec": {"resources": {"cpus": 1e9}}}, "spec.resources.cpus"),
        ({}, "body"),
        ({"spec": {}, "prompt": "both"}, "body"),
    ],
)
async def test_invalid_bodies_name_the_field(
    api: httpx.AsyncClient, body: dict[str, object], where: str
) -> None:
    """Unknown fields, wrong types and bad values give 422 invalid_input naming the field."""
    response = await api.post("/v1/environments", json=body)
    is_error(response, 422, "invalid_input")
    assert response.json()["error"]["message"].startswith(where)


async def test_malformed_json_is_422(api: httpx.AsyncClient) -> None:
    """A body that is not JSON gets 422."""
    response = await api.post(
        "/v1/environments", content=b"{not json", headers={"content-type": "application/json"}
    )
    is_error(response, 422, "invalid_input")


async def test_oversized_bodies_are_413(api: httpx.AsyncClient) -> None:
    """A body over 1 MiB is refused with 413 before it is parsed."""
    huge = b'{"prompt": "' + b"a" * (2 << 20) + b'"}'
    response = await api.post(
        "/v1/compose", content=huge, headers={"content-type": "application/json"}
    )
    is_error(response, 413, "too_large")


async def test_streamed_oversized_bodies_are_413(api: httpx.AsyncClient) -> None:
    """A chunked body without a length is cut off at 1 MiB with 413."""

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 65536

    response = await api.post(
        "/v1/compose", content=chunks(), headers={"content-type": "application/json"}
    )
    is_error(response, 413, "too_large")


async def test_empty_and_huge_prompts_are_4xx(api: httpx.AsyncClient) -> None:
    """An empty prompt and one over the composer's limit are refused as input errors."""
    is_error(await api.post("/v1/compose", json={"prompt": ""}), 422)
    is_error(await api.post("/v1/compose", json={"prompt": "x" * 20001}), 422, "invalid_input")
    is_error(await api.post("/v1/compose", json={"prompt": "\x00\x01\x02"}), 422)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/environments/nothere", 404),
        ("GET", "/v1/environments/0123456789", 404),
        ("GET", "/v1/environments/" + "a" * 5000, 404),
        ("DELETE", "/v1/environments/../../etc", 404),
        ("GET", "/v1/nowhere", 404),
        ("PUT", "/v1/environments", 405),
        ("GET", "/v1/environments?limit=0", 422),
        ("GET", "/v1/environments?limit=abc", 422),
        ("GET", "/v1/environments?state=dancing", 422),
        ("GET", "/v1/environments/0123456789/events?after=-1", 422),
    ],
)
async def test_bad_paths_and_queries(
    api: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    """Unknown ids, routes, methods and bad query values get the JSON error shape."""
    is_error(await api.request(method, path), status)


async def test_display_token_for_a_terminated_environment_is_409(api: httpx.AsyncClient) -> None:
    """No display token for an environment that has ended."""
    env = (
        await api.post("/v1/environments", json={"prompt": "a desktop with xterm", "wait": True})
    ).json()
    await api.delete(f"/v1/environments/{env['id']}")
    response = await api.post(f"/v1/environments/{env['id']}/display-token", json={})
    is_error(response, 409, "wrong_state")
