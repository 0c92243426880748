"""``/v1/nodes``: the hosts environments run on, their capacity and state; cordons;
``/v1/nodes/{name}/drain``: empty a node (:mod:`genos.cluster.drain`);
``/v1/cluster``: the control plane's replicas and leader (admins).

On one host (no cluster) the list is that host. In a cluster it is every
live node (its lease holds) with what it announced, what the registry says
its environments request, and what it measured; a node whose clock is more
than :data:`MAX_SKEW` seconds off the control plane's is flagged (and
placement leaves it alone: leases and timers would lie on it).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from genos.api.deps import ServiceDep, admin
from genos.api.errors import ApiError
from genos.api.routes_envs import respond
from genos.api.schemas import ErrorBody, _Request
from genos.api.service import Caller, Service
from genos.cluster.drain import drain_status, start_drain
from genos.cluster.placement import MAX_SKEW
from genos.errors import ClusterUnavailableError
from genos.orchestrator.capacity import Usage

router = APIRouter(
    prefix="/v1",
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody}},
)
AdminDep = Annotated[Caller, Depends(admin)]


class CordonRequest(_Request):
    reason: Annotated[str, Field(max_length=200)] = ""


class DrainRequest(_Request):
    containers: Literal["wait", "move", "stop"] = "wait"
    deadline_s: Annotated[float | None, Field(gt=0, le=7 * 86400)] = None
    reason: Annotated[str, Field(max_length=200)] = ""


def _usage(used: Usage) -> dict[str, Any]:
    return {"environments": used.environments, "cpus": used.cpus, "memory_mb": used.memory_mb}


async def _nodes(svc: Service) -> list[dict[str, Any]]:
    plane = svc.cluster
    if plane is None:
        status = await svc.engine.host()
        measured = status.measured
        return [{
            "name": status.name, "state": "ready", "relay": None,
            "capacity": asdict(status.capacity), "requested": _usage(status.used),
            "used": {"cpus": measured.cpus if measured else None,
                     "memory_mb": measured.memory_mb if measured else None},
            "started": None, "clock_skew_s": 0.0, "cordon": None,
        }]  # fmt: skip
    used, _queue = await svc.engine.registry.usage_by_host_and_queue()
    cordons = await plane.store.cordons()
    now = time.time()
    out = []
    for name, info in sorted(plane.driver.nodes.items()):
        skew = round(info.clock - now, 1)
        state = "cordoned" if name in cordons else "ready"
        if (cordons.get(name) or {}).get("drain"):
            state = "draining" if used.get(name, Usage()).environments else "drained"
        if abs(skew) > MAX_SKEW:
            state = "clock-skew"
        out.append({
            "name": name, "state": state, "relay": info.relay, "capacity": info.capacity,
            "requested": _usage(used.get(name, Usage())), "used": info.used,
            "started": info.started, "clock_skew_s": skew, "cordon": cordons.get(name),
        })  # fmt: skip
    return out


@router.get("/nodes")
async def nodes(svc: ServiceDep, _who: AdminDep) -> JSONResponse:
    """Every node (one on a host of its own): capacity, requests, use, state."""
    return respond(await _nodes(svc))


async def _known(svc: Service, name: str) -> None:
    if svc.cluster is None:
        raise ApiError(409, "conflict", "this GenOS runs on one host: there is no node to cordon")
    if name not in svc.cluster.driver.nodes and name not in await svc.cluster.store.cordons():
        raise ApiError(404, "not_found", f"no node {name[:63]!r}")


@router.get("/cluster")
async def cluster(svc: ServiceDep, _who: AdminDep) -> JSONResponse:
    """This control plane: which replica answers, which leads, whether etcd answers lately.

    On one host: ``mode`` is ``single`` and this process runs everything.
    """
    plane = svc.cluster
    if plane is None:
        return respond({"mode": "single", "replica": None, "leader": None, "leading": True,
                        "etcd_silent_s": None, "nodes": 1})  # fmt: skip
    try:
        leader = await plane.store.leader()
    except ClusterUnavailableError:
        leader = None
    return respond({
        "mode": "cluster", "replica": plane.replica, "leader": leader,
        "leading": plane.is_leader, "etcd_silent_s": round(plane.silent(), 1),
        "nodes": len(plane.driver.nodes),
    })  # fmt: skip


@router.post("/nodes/{name}/cordon")
async def cordon(name: str, body: CordonRequest, svc: ServiceDep, who: AdminDep) -> JSONResponse:
    """Keep new environments off a node (those on it stay)."""
    await _known(svc, name)
    await svc.cluster.store.cordon(name, who.user.name, body.reason)
    svc.cluster.cordoned.add(name)
    svc.audit(who, "node_cordon", node=name, reason=body.reason)
    return respond({"name": name, "cordoned": True})


@router.post("/nodes/{name}/drain", responses={409: {"model": ErrorBody}})
async def drain(name: str, body: DrainRequest, svc: ServiceDep, who: AdminDep) -> JSONResponse:
    """Cordon a node and empty it (see :mod:`genos.cluster.drain`); ``uncordon`` ends it."""
    await _known(svc, name)
    plane = svc.cluster
    await start_drain(plane, name, body.containers, body.deadline_s, by=who.user.name,
                      reason=body.reason)  # fmt: skip
    svc.audit(who, "node_drain", node=name, containers=body.containers,
              deadline_s=body.deadline_s, reason=body.reason)  # fmt: skip
    return respond(await drain_status(plane, name))


@router.get("/nodes/{name}/drain")
async def drain_progress(name: str, svc: ServiceDep, _who: AdminDep) -> JSONResponse:
    """A drain's progress: the environments the node still holds and what happens to each."""
    await _known(svc, name)
    return respond(await drain_status(svc.cluster, name))


@router.post("/nodes/{name}/uncordon")
async def uncordon(name: str, svc: ServiceDep, who: AdminDep) -> JSONResponse:
    """Let new environments go to a node again."""
    await _known(svc, name)
    await svc.cluster.store.uncordon(name)
    svc.cluster.cordoned.discard(name)
    await svc.cluster.kick()  # what waited may fit there
    svc.audit(who, "node_uncordon", node=name)
    return respond({"name": name, "cordoned": False})
