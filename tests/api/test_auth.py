"""Authentication and accounts over HTTP: tokens, passwords, TOTP, links, roles, audit."""

from __future__ import annotations

import time

import httpx
import pytest

from genos.api.security import totp
from genos.audit import AuditLog
from tests.api.conftest import Api, AsUser, client_for

pytestmark = pytest.mark.anyio


async def test_every_v1_route_but_login_needs_a_token(api_app: Api) -> None:
    """Without a bearer token the API answers 401 with the JSON error shape."""
    async with client_for(api_app.app) as anonymous:
        for method, path in [
            ("GET", "/v1/environments"),
            ("GET", "/v1/host"),
            ("GET", "/metrics"),
            ("POST", "/v1/compose"),
            ("GET", "/v1/me"),
        ]:
            response = await anonymous.request(method, path)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nonsense",
        "Basic Zm9vOmJhcg==",
        "Bearer genos_000000000000_wrongsecret",
        "Bearer genos_zz_",
        "Bearer " + "genos_" + "a" * 5000,
    ],
)
async def test_malformed_or_unknown_tokens_are_refused(api_app: Api, header: str) -> None:
    """Malformed, unknown and oversized tokens get 401, never 5xx."""
    async with client_for(api_app.app) as anonymous:
        response = await anonymous.get("/v1/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_a_right_id_with_a_wrong_secret_is_refused(api_app: Api) -> None:
    """A token whose id exists but whose secret is wrong is refused."""
    token_id = api_app.admin_token.split("_")[1]
    async with client_for(api_app.app, f"genos_{token_id}_not-the-secret") as forged:
        assert (await forged.get("/v1/me")).status_code == 401


async def test_admin_token_file_is_root_only(api_app: Api) -> None:
    """The bootstrap token is stored 0600 and matches what was printed."""
    path = api_app.service.admin_token_path
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().strip() == api_app.admin_token
    assert await api_app.service.bootstrap_admin() is None


async def test_password_login_and_logout(api: httpx.AsyncClient, api_app: Api) -> None:
    """Login gives a working session token; logout revokes it at once."""
    await api.post("/v1/users", json={"name": "carol", "password": "long enough pw"})
    login = await api.post("/v1/login", json={"username": "carol", "password": "long enough pw"})
    assert login.status_code == 200
    assert login.json()["user"] == {
        "id": login.json()["user"]["id"],
        "name": "carol",
        "role": "user",
        "totp": False,
    }
    async with client_for(api_app.app, login.json()["token"]) as carol:
        assert (await carol.get("/v1/me")).json()["name"] == "carol"
        assert (await carol.post("/v1/logout")).status_code == 204
        assert (await carol.get("/v1/me")).status_code == 401


async def test_wrong_password_and_unknown_user_look_the_same(api: httpx.AsyncClient) -> None:
    """A wrong password and an unknown user give the same 401 answer."""
    await api.post("/v1/users", json={"name": "dave", "password": "long enough pw"})
    wrong = await api.post("/v1/login", json={"username": "dave", "password": "nope nope"})
    unknown = await api.post("/v1/login", json={"username": "nobody", "password": "nope nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "invalid_credentials"


async def test_totp_second_factor(api_app: Api, as_user: AsUser) -> None:
    """With TOTP on, login needs a current code, and a code works only once."""
    erin = await as_user("erin", password="erin's password")
    secret = (await erin.post("/v1/me/totp")).json()["secret"]
    assert (await erin.post("/v1/me/totp/confirm", json={"code": "000000"})).status_code in {422}
    code = totp(secret, time.time())
    assert (await erin.post("/v1/me/totp/confirm", json={"code": code})).status_code == 204
    async with client_for(api_app.app) as anonymous:
        creds = {"username": "erin", "password": "erin's password"}
        missing = await anonymous.post("/v1/login", json=creds)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "totp_required"
        replayed = await anonymous.post("/v1/login", json=creds | {"totp": code})
        assert replayed.json()["error"]["code"] == "invalid_credentials"
        later = totp(secret, time.time() + 30)
        ok = await anonymous.post("/v1/login", json=creds | {"totp": later})
        assert ok.status_code == 200
        assert ok.json()["user"]["totp"] is True


async def test_login_link_is_single_use(api: httpx.AsyncClient, api_app: Api) -> None:
    """A sign-in link code gives a session once; the second use is refused."""
    code = (await api.post("/v1/login-links")).json()["code"]
    async with client_for(api_app.app) as anonymous:
        first = await anonymous.post("/v1/login", json={"link": code})
        second = await anonymous.post("/v1/login", json={"link": code})
    assert first.status_code == 200
    assert first.json()["user"]["name"] == "admin"
    assert second.status_code == 401


async def test_api_tokens_can_be_made_and_revoked(api: httpx.AsyncClient, api_app: Api) -> None:
    """A new token works until it is revoked; others' tokens cannot be revoked by a user."""
    made = (await api.post("/v1/tokens", json={"name": "ci"})).json()
    async with client_for(api_app.app, made["token"]) as ci:
        assert (await ci.get("/v1/me")).status_code == 200
        assert (await api.delete(f"/v1/tokens/{made['id']}")).status_code == 204
        assert (await ci.get("/v1/me")).status_code == 401


async def test_users_cannot_manage_users_or_others_tokens(api_app: Api, as_user: AsUser) -> None:
    """Creating users needs admin; a user cannot revoke the admin's token."""
    frank = await as_user("frank")
    denied = await frank.post("/v1/users", json={"name": "mallory", "password": "long enough pw"})
    assert denied.status_code == 403
    admin_token_id = api_app.admin_token.split("_")[1]
    assert (await frank.delete(f"/v1/tokens/{admin_token_id}")).status_code == 404


async def test_duplicate_user_is_a_conflict(api: httpx.AsyncClient) -> None:
    """A second user with a taken name is refused with 409."""
    body = {"name": "gina", "password": "long enough pw"}
    assert (await api.post("/v1/users", json=body)).status_code == 201
    again = await api.post("/v1/users", json=body)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"


async def test_auth_and_lifecycle_are_audited_in_a_chain(
    api: httpx.AsyncClient, api_app: Api
) -> None:
    """Logins (good and bad), creations and terminations land in the hash-chained audit log."""
    await api.post("/v1/users", json={"name": "hank", "password": "long enough pw"})
    await api.post("/v1/login", json={"username": "hank", "password": "wrong password"})
    env = (
        await api.post("/v1/environments", json={"prompt": "a desktop with xterm", "wait": True})
    ).json()
    await api.delete(f"/v1/environments/{env['id']}")
    log = AuditLog(api_app.service.root / "audit" / "api.jsonl")
    records = list(log.records())
    actions = [(r["action"], r.get("outcome")) for r in records]
    assert ("login", "denied") in actions
    assert ("create", None) in actions
    assert ("terminate", None) in actions
    create = next(r for r in records if r["action"] == "create")
    assert create["user"] == "admin"
    assert create["client"] == "127.0.0.9"
    assert create["env_id"] == env["id"]
    assert log.verify().ok
