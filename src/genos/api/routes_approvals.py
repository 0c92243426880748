"""``/v1/environments/{id}/computer/approvals``: an agent asks a person to approve a step.

``POST`` opens an approval and answers once a person decided it (or it timed
out); ``GET`` lists what is pending (what a viewer shows); ``POST .../{aid}``
approves or declines. Asking and deciding need control (an API token or a
control display token); every step is audited.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from genos.api.deps import ServiceDep
from genos.api.errors import ApiError
from genos.api.routes_computer import ERRORS, Actor, ActorDep
from genos.errors import StateError
from genos.gateway.policy import Permission
from genos.orchestrator.states import State

router = APIRouter(prefix="/v1/environments/{env_id}/computer", tags=["computer"], responses=ERRORS)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: Annotated[str, Field(min_length=1, max_length=500)]
    timeout: Annotated[float, Field(gt=0, le=600)] = 120.0


class DecideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["approve", "decline"]


def _control(who: Actor, what: str) -> None:
    if who.permission is not Permission.CONTROL:
        raise ApiError(403, "forbidden", f"a view token cannot {what}")
    if who.env.state is not State.RUNNING:
        raise StateError(who.env.state.value, ["running"], what)


@router.post("/approvals")
async def ask(env_id: str, body: AskRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Ask a person to approve a step; answers ``approved``, ``declined`` or ``timed_out``."""
    _control(who, "ask for an approval")
    name = who.caller.user.name
    svc.audit(who.caller, "computer.approval", env_id=env_id, description=body.description)
    approval = await svc.approvals.ask(env_id, body.description, name, body.timeout)
    svc.audit(
        who.caller, "computer.approval_outcome", env_id=env_id, approval=approval.id,
        status=approval.status, decided_by=approval.decided_by,
    )  # fmt: skip
    return JSONResponse(approval.as_json())


@router.get("/approvals")
async def pending(env_id: str, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """The pending approvals, oldest first."""
    del who  # the dependency checked that the caller may see the environment
    return JSONResponse([a.as_json() for a in svc.approvals.pending(env_id)])


@router.post("/approvals/{approval_id}")
async def decide(
    env_id: str, approval_id: str, body: DecideRequest, svc: ServiceDep, who: ActorDep
) -> JSONResponse:
    """Approve or decline a pending approval."""
    _control(who, "decide an approval")
    name = who.caller.user.name
    approval = svc.approvals.decide(env_id, approval_id, body.decision == "approve", name)
    svc.audit(
        who.caller, "computer.approval_decided", env_id=env_id, approval=approval.id,
        status=approval.status,
    )  # fmt: skip
    return JSONResponse(approval.as_json())
