"""Sign-in and accounts: login (password + TOTP, or a one-time link), tokens, users, TOTP set-up."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from genos.api import schemas
from genos.api.deps import AdminDep, CallerDep, ServiceDep, client_of
from genos.api.errors import ApiError
from genos.api.schemas import ErrorBody
from genos.api.security import new_totp_secret
from genos.errors import NotFoundError
from genos.orchestrator.records import User

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}})


def _user(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "totp": user.totp_secret is not None,
    }


@router.post(
    "/login",
    response_model=schemas.LoginOut,
    responses={
        429: {
            "model": ErrorBody,
            "description": "Too many sign-in attempts (per account name or client address)",
            "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
        }
    },
)
async def login(body: schemas.LoginRequest, request: Request, svc: ServiceDep) -> JSONResponse:
    """Sign in with a password (and TOTP code when the account has one) or a one-time link code.

    Throttled per account name and client address: 429 with Retry-After (docs/api.md)."""
    client = client_of(request)
    if body.link is not None:
        token, user = await svc.redeem_link(body.link, client)
    else:
        token, user = await svc.login(body.username or "", body.password or "", body.totp, client)
    return JSONResponse({"token": token, "user": _user(user)})


@router.post("/logout", status_code=204, response_class=Response)
async def logout(svc: ServiceDep, who: CallerDep) -> Response:
    """Revoke the token this request was made with."""
    await svc.revoke_token(who.token_id)
    svc.audit(who, "logout")
    return Response(status_code=204)


@router.post("/login-links", response_model=schemas.LinkOut, status_code=201)
async def login_link(svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """A one-time sign-in code for the web client (what ``genos up`` puts in the URL it prints)."""
    code, expires = svc.new_link(who)
    svc.audit(who, "login_link")
    when = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat()
    return JSONResponse({"code": code, "expires": when}, status_code=201)


@router.get("/me", response_model=schemas.UserOut)
async def me(who: CallerDep) -> JSONResponse:
    """The signed-in user."""
    return JSONResponse(_user(who.user))


@router.post(
    "/users",
    response_model=schemas.UserOut,
    status_code=201,
    responses={403: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
async def add_user(body: schemas.UserRequest, svc: ServiceDep, who: AdminDep) -> JSONResponse:
    """Create an account (admins only)."""
    user = await svc.add_user(body.name, body.password, body.role)
    svc.audit(who, "add_user", target=user.name, role=user.role)
    return JSONResponse(_user(user), status_code=201)


@router.post("/tokens", response_model=schemas.TokenOut, status_code=201)
async def add_token(body: schemas.TokenRequest, svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """A new API token for the caller; its secret is shown only in this answer."""
    token = await svc.new_token(who.user, body.name)
    token_id = token.split("_")[1]
    svc.audit(who, "add_token", token_id=token_id, name=body.name)
    return JSONResponse({"id": token_id, "name": body.name, "token": token}, status_code=201)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": ErrorBody}},
)
async def revoke_token(token_id: str, svc: ServiceDep, who: CallerDep) -> Response:
    """Revoke one of the caller's tokens (admins: anyone's)."""
    try:
        token = await svc.accounts.get_token(token_id[:32])
    except NotFoundError:
        token = None
    if token is None or (token.user_id != who.user.id and not who.is_admin):
        raise ApiError(404, "not_found", f"no token {token_id[:32]!r}")
    await svc.revoke_token(token.id)
    svc.audit(who, "revoke_token", token_id=token.id)
    return Response(status_code=204)


@router.post("/me/totp", response_model=schemas.TotpOut)
async def begin_totp(svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """Start adding an authenticator: the secret and its otpauth URI (on after confirming)."""
    secret = new_totp_secret()
    svc.begin_totp(who.user, secret)
    uri = f"otpauth://totp/GenOS:{who.user.name}?secret={secret}&issuer=GenOS"
    return JSONResponse({"secret": secret, "uri": uri})


@router.post(
    "/me/totp/confirm",
    status_code=204,
    response_class=Response,
    responses={409: {"model": ErrorBody}},
)
async def confirm_totp(body: schemas.CodeRequest, svc: ServiceDep, who: CallerDep) -> Response:
    """Turn the authenticator on with a current code."""
    await svc.confirm_totp(who.user, body.code)
    svc.audit(who, "totp_on")
    return Response(status_code=204)
