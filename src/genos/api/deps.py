"""FastAPI dependencies: the service, the authenticated caller, and environment access."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from genos.api.errors import ApiError
from genos.api.service import Caller, Service
from genos.ids import is_env_id
from genos.orchestrator.records import Environment


async def service(request: Request) -> Service:
    """The process's :class:`Service` (set on ``app.state`` by ``create_app``).

    ``async`` although it awaits nothing: FastAPI runs a plain ``def``
    dependency on a worker thread, a thread hop on every request."""
    svc: Service = request.app.state.service
    return svc


def client_of(request: Request) -> str:
    """Where a request comes from: the peer, or the client a ``--trusted-proxy`` names
    (:mod:`genos.api.proxy` has rewritten the peer by then)."""
    return request.client.host if request.client else "unknown"


async def caller(request: Request, svc: Annotated[Service, Depends(service)]) -> Caller:
    """The authenticated caller (401 otherwise)."""
    return await svc.authenticate(request.headers.get("authorization"), client_of(request))


async def admin(who: Annotated[Caller, Depends(caller)]) -> Caller:
    """An authenticated admin (403 for other users)."""
    if not who.is_admin:
        raise ApiError(403, "forbidden", "this needs the admin role")
    return who


async def visible_env(svc: Service, who: Caller, env_id: str) -> Environment:
    """The environment if the caller may see it; 404 otherwise (others' ids do not leak)."""
    if not is_env_id(env_id):
        raise ApiError(404, "not_found", f"no environment {env_id[:40]!r}")
    env = await svc.engine.get(env_id)
    if env.owner != who.user.id and not who.is_admin:
        raise ApiError(404, "not_found", f"no environment {env_id!r}")
    return env


ServiceDep = Annotated[Service, Depends(service)]
CallerDep = Annotated[Caller, Depends(caller)]
AdminDep = Annotated[Caller, Depends(admin)]
