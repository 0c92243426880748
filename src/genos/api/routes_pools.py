"""``/v1/pools``: warm pools of started environments (admins set, list and remove them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from genos.api import schemas, views
from genos.api.deps import ServiceDep, admin
from genos.api.routes_envs import accelerator, respond
from genos.api.schemas import ErrorBody
from genos.api.service import Caller
from genos.composer.pipeline import compose
from genos.composer.result import Composed, to_json
from genos.spec import dump, parse_spec

router = APIRouter(
    prefix="/v1",
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
AdminDep = Annotated[Caller, Depends(admin)]


@router.put("/pools", response_model=schemas.PoolOut, responses={409: {"model": ErrorBody}})
async def set_pool(body: schemas.PoolRequest, svc: ServiceDep, who: AdminDep) -> JSONResponse:
    """Keep ``size`` started environments of a spec (or of what a prompt composes) ready.

    The pool of that spec is created, or its size set; a request with the
    same spec (name, provenance and lifetime aside) then takes one at once.
    A prompt that needs answers sets nothing and gets the composer's answer.
    """
    spec = body.spec
    if spec is None:
        result = compose(body.prompt or "", answers=body.answers)
        if not isinstance(result, Composed):
            return respond(to_json(result))
        spec = result.spec
        if views.tier_note(spec.tier.value, accelerator(svc)) is not None:
            spec = parse_spec(views.with_tier_note(dump(spec), accelerator(svc)))
    status = await svc.engine.pools.set(spec, body.size, prompt=body.prompt, actor=who.user.id)
    svc.audit(who, "pool_set", pool=status.pool.id, size=body.size, tier=spec.tier.value)
    return respond(views.pool(status))


@router.get("/pools", response_model=list[schemas.PoolOut])
async def list_pools(svc: ServiceDep, _who: AdminDep) -> JSONResponse:
    """Every warm pool with how many of its environments are ready and starting."""
    return respond([views.pool(status) for status in await svc.engine.pools.all()])


@router.delete(
    "/pools/{pool_id}", response_model=schemas.PoolOut, responses={404: {"model": ErrorBody}}
)
async def remove_pool(pool_id: str, svc: ServiceDep, who: AdminDep) -> JSONResponse:
    """Remove a pool; its unclaimed environments end, claimed ones stay their owners'."""
    status = await svc.engine.pools.status(pool_id)
    await svc.engine.pools.remove(pool_id, actor=who.user.id)
    svc.audit(who, "pool_remove", pool=pool_id)
    return respond(views.pool(status))
