"""``/v1/compose`` and ``/v1/environments``: compose, create, list, show, act, follow, view."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from genos.api import schemas, views
from genos.api.deps import CallerDep, ServiceDep, visible_env
from genos.api.display import recording_path
from genos.api.errors import ApiError
from genos.api.schemas import ErrorBody
from genos.api.service import Service
from genos.composer.pipeline import compose
from genos.composer.result import Composed, to_json
from genos.errors import GenOSError, NotFoundError, StateError, WaitTimeoutError
from genos.gateway.metrics import REGISTRY
from genos.gateway.policy import Permission
from genos.orchestrator.records import Environment
from genos.orchestrator.states import HOLDING, WAITING, State
from genos.spec import dump, parse_spec

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorBody}, 422: {"model": ErrorBody}})
ENV: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}
KEEPALIVE = 15.0


def base_url(svc: Service, request: Request) -> str:
    """Where people reach this server (``--public-url`` or the request's own base)."""
    return svc.public_url or str(request.base_url).rstrip("/")


def accelerator(svc: Service) -> str | None:
    """``kvm``/``tcg`` once the VM driver's probe has answered, else None."""
    return svc.accelerator


def env_json(svc: Service, request: Request, env: Environment, usage: Any = None) -> dict[str, Any]:
    return views.environment(env, base_url(svc, request), usage=usage, accelerator=accelerator(svc))


def respond(data: Any, status: int = 200) -> JSONResponse:
    """A JSON answer; ``data`` is JSON-ready already (views give ISO times)."""
    return JSONResponse(data, status_code=status)


@router.post("/compose", response_model=schemas.ComposeOut)
async def compose_route(
    body: schemas.ComposeRequest, svc: ServiceDep, _who: CallerDep
) -> JSONResponse:
    """Compose a spec from words: a spec, questions to ask back, or why it is refused."""
    answer = to_json(compose(body.prompt, answers=body.answers))
    if answer["spec"] is not None:
        answer["spec"] = views.with_tier_note(answer["spec"], accelerator(svc))
    return respond(answer)


@router.post(
    "/environments",
    status_code=201,
    response_model=schemas.EnvironmentOut,
    responses={
        200: {"model": schemas.ComposeOut},
        409: {"model": ErrorBody},
        429: {"model": ErrorBody},
    },
)
async def create(
    body: schemas.CreateRequest, request: Request, svc: ServiceDep, who: CallerDep
) -> JSONResponse:
    """Ask for an environment from a spec or a prompt (one needing answers creates nothing)."""
    spec = body.spec
    if spec is None:
        result = compose(body.prompt or "", answers=body.answers)
        if not isinstance(result, Composed):
            return respond(to_json(result))
        spec = result.spec
        if views.tier_note(spec.tier.value, accelerator(svc)) is not None:
            spec = parse_spec(views.with_tier_note(dump(spec), accelerator(svc)))
    env = await svc.engine.request(
        who.user.id, spec, request_id=body.request_id, priority=body.priority
    )
    claimed = {"pool": env.pool_id} if env.claimed is not None else {}
    svc.audit(
        who, "create", env_id=env.id, tier=spec.tier.value, network=spec.network.mode.value,
        **claimed,
    )  # fmt: skip
    if body.wait:
        with contextlib.suppress(StateError, WaitTimeoutError):
            await svc.engine.wait(env.id, State.RUNNING, timeout=body.timeout)
        env = await svc.engine.get(env.id)
    return respond(env_json(svc, request, env), 201)


@router.get("/environments", response_model=schemas.EnvironmentPage)
async def list_envs(  # noqa: PLR0917 - FastAPI parameters
    request: Request,
    svc: ServiceDep,
    who: CallerDep,
    state: Annotated[list[State] | None, Query(max_length=10)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    """Environments, oldest first, a page at a time (``next`` is the following page's cursor)."""
    owner = None if who.is_admin else who.user.id
    try:
        page = await svc.engine.list(owner, state, limit=limit + 1, after=cursor)
    except NotFoundError as exc:
        raise ApiError(400, "invalid_request", "unknown cursor") from exc
    more = len(page) > limit
    items = [env_json(svc, request, env) for env in page[:limit]]
    return respond({"items": items, "next": page[limit - 1].id if more else None})


@router.get("/environments/{env_id}", response_model=schemas.EnvironmentOut, responses=ENV)
async def show(env_id: str, request: Request, svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """One environment, with its CPU and memory use read from its cgroup."""
    env = await visible_env(svc, who, env_id)
    usage = None
    if env.state in {State.RUNNING, State.SUSPENDED}:
        with contextlib.suppress(GenOSError):
            usage = (await svc.engine.driver.inspect(env.id)).usage
    return respond(env_json(svc, request, env, usage))


@router.post("/environments/{env_id}/suspend", response_model=schemas.EnvironmentOut, responses=ENV)
async def suspend(env_id: str, request: Request, svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """Freeze a running environment."""
    await visible_env(svc, who, env_id)
    svc.audit(who, "suspend", env_id=env_id)
    env = await svc.engine.suspend(
        env_id, actor=who.user.id, reason=f"suspended by {who.user.name}"
    )
    return respond(env_json(svc, request, env))


@router.post("/environments/{env_id}/resume", response_model=schemas.EnvironmentOut, responses=ENV)
async def resume(env_id: str, request: Request, svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """Thaw a suspended environment."""
    await visible_env(svc, who, env_id)
    svc.audit(who, "resume", env_id=env_id)
    env = await svc.engine.resume(env_id, actor=who.user.id, reason=f"resumed by {who.user.name}")
    return respond(env_json(svc, request, env))


@router.delete("/environments/{env_id}", response_model=schemas.EnvironmentOut, responses=ENV)
async def delete(env_id: str, request: Request, svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """End an environment (a waiting one is cancelled); deleting an ended one changes nothing."""
    env = await visible_env(svc, who, env_id)
    if env.state.final:
        return respond(env_json(svc, request, env))
    svc.audit(who, "terminate", env_id=env_id, state=env.state.value)
    reason = f"terminated by {who.user.name}"
    try:
        if env.state in WAITING:
            env = await svc.engine.cancel(env_id, actor=who.user.id, reason=reason)
        else:
            env = await svc.engine.terminate(env_id, actor=who.user.id, reason=reason)
    except StateError:
        env = await svc.engine.get(env_id)
        if not env.state.final:
            raise
    return respond(env_json(svc, request, env))


@router.get(
    "/environments/{env_id}/events",
    responses={200: {"content": {"text/event-stream": {}}}, **ENV},
    response_class=StreamingResponse,
)
async def events(  # noqa: PLR0917 - FastAPI parameters
    env_id: str,
    svc: ServiceDep,
    who: CallerDep,
    after: Annotated[int, Query(ge=0, le=2**31)] = 0,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    follow: bool = True,
) -> StreamingResponse:
    """Server-sent events after ``after`` (or ``Last-Event-ID``), then live ones if ``follow``."""
    await visible_env(svc, who, env_id)
    if last_event_id is not None and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    source = svc.engine.events(env_id, after, follow=follow)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_sse(source), media_type="text/event-stream", headers=headers)


async def _sse(source: AsyncGenerator[Any, None]) -> AsyncIterator[str]:
    """SSE frames from events, with a comment line every :data:`KEEPALIVE` seconds of quiet."""
    pending: asyncio.Task[Any] | None = None
    try:
        yield ": genos events\n\n"
        while True:
            pending = pending or asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE)
            if not done:
                yield ": keepalive\n\n"
                continue
            try:
                ev = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            data = json.dumps(views.event(ev), separators=(",", ":"))
            yield f"id: {ev.seq}\nevent: {ev.type.value}\ndata: {data}\n\n"
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await source.aclose()


@router.post(
    "/environments/{env_id}/display-token", response_model=schemas.DisplayTokenOut, responses=ENV
)
async def display_token(
    env_id: str,
    body: schemas.DisplayTokenRequest,
    request: Request,
    svc: ServiceDep,
    who: CallerDep,
) -> JSONResponse:
    """A short-lived token for the display WebSocket (``view`` ones are for sharing)."""
    env = await visible_env(svc, who, env_id)
    if env.state not in HOLDING:
        raise StateError(env.state.value, ["provisioning", "running", "suspended"], "open display")
    token = svc.gateway.issue(env_id, who.user.id, Permission(body.permission), ttl=body.ttl)
    svc.audit(who, "display_token", env_id=env_id, permission=body.permission, ttl=body.ttl)
    base = base_url(svc, request)
    return respond(
        {
            "token": token,
            "permission": body.permission,
            "expires": (datetime.now(UTC) + timedelta(seconds=body.ttl)).isoformat(),
            "websocket": f"/v1/environments/{env_id}/display?token={token}",
            "share_url": f"{base}/#/view/{env_id}/{token}",
        }
    )


@router.get(
    "/environments/{env_id}/connections",
    response_model=list[schemas.ConnectionOut],
    responses=ENV,
)
async def connections(env_id: str, svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """The live viewers of an environment and their stream figures."""
    await visible_env(svc, who, env_id)
    return respond([connection(s) for s in REGISTRY.snapshot(env_id)])


def connection(stats: Any) -> dict[str, Any]:
    link = stats.link
    return {
        "connection_id": stats.connection_id,
        "user_id": stats.user_id,
        "permission": stats.permission,
        "rtt_ms": link.rtt_ms,
        "fps": link.fps,
        "kbps": link.kbps,
        "quality": link.quality,
        "compression": link.compression,
        "bytes_to_client": stats.bytes_to_client,
        "started_at": stats.started_at,
    }


@router.get(
    "/environments/{env_id}/recordings", response_model=list[schemas.RecordingOut], responses=ENV
)
async def recordings(env_id: str, svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """The environment's session recordings (``security.recording``), oldest first."""
    await visible_env(svc, who, env_id)
    folder = svc.root / "recordings" / env_id
    found = sorted(folder.glob("*.rfbrec")) if folder.is_dir() else []
    return respond([{"name": p.name, "bytes": p.stat().st_size} for p in found])


@router.post(
    "/environments/{env_id}/recordings/{name}/token",
    response_model=schemas.DisplayTokenOut,
    responses=ENV,
)
async def replay_token(
    env_id: str, name: str, request: Request, svc: ServiceDep, who: CallerDep
) -> JSONResponse:
    """A short-lived token to replay one recording (``WS .../recordings/{name}/replay``)."""
    await visible_env(svc, who, env_id)
    recording_path(svc, env_id, name)
    token = svc.gateway.issue(env_id, who.user.id, Permission.VIEW, ttl=300)
    svc.audit(who, "replay_token", env_id=env_id, recording=name)
    path = f"/v1/environments/{env_id}/recordings/{name}/replay?token={token}"
    return respond(
        {
            "token": token,
            "permission": "view",
            "expires": (datetime.now(UTC) + timedelta(seconds=300)).isoformat(),
            "websocket": path,
            "share_url": f"{base_url(svc, request)}/#/replay/{env_id}/{name}",
        }
    )
