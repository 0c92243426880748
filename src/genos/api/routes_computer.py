"""``/v1/environments/{id}/computer/...``: software agents look at and drive a desktop.

Callers are an API token's user (owner or admin: control) or a display token
of the environment (``POST .../display-token``: its ``control``/``view``
permission decides). Looking (screen, screenshot, cursor, wait, lease) needs
either; acting needs control, and the environment's input lease: a person
who took the desktop in a viewer makes every agent action a 409 naming them
until the lease is given back (``POST .../computer/lease/release``). Every
action is checked in full before anything is sent, then written to the audit
log with its arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from genos.api import schemas_computer as sc
from genos.api.deps import ServiceDep, client_of, visible_env
from genos.api.desktops import png
from genos.api.errors import ApiError
from genos.api.schemas import ErrorBody
from genos.api.security import TOKEN_PREFIX
from genos.api.service import Caller, Service
from genos.errors import (
    GenOSError,
    InputError,
    LeaseHeldError,
    StateError,
    StreamClosedError,
    WaitTimeoutError,
)
from genos.gateway.desktop import Desktop
from genos.gateway.keys import parse_combo, text_keysyms
from genos.gateway.lease import LEASES, InputLease
from genos.gateway.policy import Permission
from genos.ids import is_env_id
from genos.orchestrator.records import Environment
from genos.orchestrator.states import State
from genos.runtime.driver import endpoint

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 502, 504)
}
router = APIRouter(prefix="/v1/environments/{env_id}/computer", tags=["computer"], responses=ERRORS)
TIMED_OUT = 124  # coreutils timeout(1): the command ran out of time
ACTIVITY_EVERY = 10.0  # seconds: agent actions reset the idle timer at most this often
AUDIT_TEXT = 200  # characters of typed text kept in the audit log


@dataclass(frozen=True)
class Actor:
    """Who calls, with which permission, on which environment."""

    caller: Caller
    permission: Permission
    env: Environment


async def actor(env_id: str, request: Request, svc: ServiceDep) -> Actor:
    """The caller: an API token (control) or a display token of this environment."""
    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or value.startswith(TOKEN_PREFIX):
        caller = await svc.authenticate(header, client_of(request))
        return Actor(caller, Permission.CONTROL, await visible_env(svc, caller, env_id))
    if not is_env_id(env_id):
        raise ApiError(404, "not_found", f"no environment {env_id[:40]!r}")
    if len(value) > 2048:
        raise ApiError(401, "unauthorized", "the token is not valid")
    claims = svc.gateway.verify(value, env_id)
    user = await svc.accounts.get_user(claims.user_id)
    caller = Caller(user, claims.token_id, client_of(request))
    return Actor(caller, claims.permission, await svc.engine.get(env_id))


ActorDep = Annotated[Actor, Depends(actor)]


async def desktop_of(svc: Service, who: Actor) -> Desktop:
    """The agent connection to the environment's display (it must be running)."""
    env_id = who.env.id
    if who.env.state is not State.RUNNING:
        await svc.let_go(env_id)
        raise StateError(who.env.state.value, ["running"], "use the computer")
    return await svc.desktops.get(env_id, endpoint(svc.engine.driver, env_id, "vnc"))


def take_lease(svc: Service, who: Actor, action: str, args: dict[str, Any]) -> InputLease:
    """Check that ``who`` may act now (control, the lease), and audit the action.

    Raises:
        ApiError: 403 for a view token.
        LeaseHeldError: a person holds the lease (409).
    """
    env_id = who.env.id
    if who.permission is not Permission.CONTROL:
        svc.audit(who.caller, f"computer.{action}", env_id=env_id, outcome="view_only", **args)
        raise ApiError(403, "forbidden", "a view token can watch this desktop but not act on it")
    lease = LEASES.get(env_id)
    try:
        lease.agent_acts(who.caller.user.id, who.caller.user.name)
    except LeaseHeldError:
        svc.audit(who.caller, f"computer.{action}", env_id=env_id, outcome="lease_held", **args)
        raise
    svc.audit(who.caller, f"computer.{action}", env_id=env_id, **args)
    if who.env.spec.security.recording:
        mark_recording(svc, env_id, action, who.caller.user.name, args)
    return lease


def mark_recording(svc: Service, env_id: str, action: str, user: str, args: dict[str, Any]) -> None:
    """Note an action beside the environment's recordings, on their clock.

    ``recordings/<env>/actions.jsonl`` gets one line per action with ``t``, the
    monotonic nanoseconds the ``.rfbrec`` frames carry, so a player puts each
    action on the timeline of every recording of that time.
    """
    folder = svc.root / "recordings" / env_id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = {"t": time.monotonic_ns(), "action": action, "user": user, **args}
    with (folder / "actions.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(line, default=str) + "\n")


async def done(svc: Service, desktop: Desktop, lease: InputLease, env_id: str) -> JSONResponse:
    """The answer to an action: where the pointer is and the screen's size."""
    lease.pointer = desktop.pointer
    now = time.monotonic()
    if now - svc.agent_activity.get(env_id, -ACTIVITY_EVERY) >= ACTIVITY_EVERY:
        svc.agent_activity[env_id] = now  # a registry write: not on every click
        with contextlib.suppress(GenOSError):
            await svc.engine.activity(env_id)
    return JSONResponse(
        {
            "ok": True,
            "cursor": {"x": desktop.pointer[0], "y": desktop.pointer[1]},
            "screen": {"width": desktop.width, "height": desktop.height, "name": desktop.name},
        }
    )


async def _act(
    svc: Service, who: Actor, action: str, args: dict[str, Any], send: Any
) -> JSONResponse:
    """Open the connection, take the lease, send; a connection that ended is closed."""
    desktop = await desktop_of(svc, who)
    lease = take_lease(svc, who, action, args)
    try:
        await send(desktop)
    except StreamClosedError as exc:
        await svc.desktops.drop(who.env.id)
        raise StateError("gone", ["running"], f"reach the display ({exc})") from exc
    return await done(svc, desktop, lease, who.env.id)


@router.get("/screen", response_model=sc.ScreenOut)
async def screen(svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """The screen's size and the desktop's name."""
    desktop = await desktop_of(svc, who)
    return JSONResponse({"width": desktop.width, "height": desktop.height, "name": desktop.name})


@router.get(
    "/screenshot",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the screen as PNG"}},
)
async def screenshot(
    env_id: str,
    svc: ServiceDep,
    who: ActorDep,
    width: Annotated[int | None, Query(ge=16, le=8192)] = None,
    height: Annotated[int | None, Query(ge=16, le=8192)] = None,
) -> Response:
    """The whole screen as PNG, fresh from the display, optionally scaled down to fit
    ``width`` x ``height`` (aspect kept). ``X-Scale`` is screen pixels per image pixel."""
    desktop = await desktop_of(svc, who)
    try:
        await desktop.refresh()
    except TimeoutError as exc:
        raise WaitTimeoutError("the display did not send the screen within 10 s") from exc
    except StreamClosedError as exc:
        await svc.desktops.drop(env_id)
        raise StateError("gone", ["running"], f"reach the display ({exc})") from exc
    shot = await asyncio.to_thread(png, *desktop.snapshot(), width, height)
    headers = {
        "X-Screen-Width": str(shot.screen_width),
        "X-Screen-Height": str(shot.screen_height),
        "X-Scale": f"{shot.scale:.6f}",
    }
    return Response(shot.png, media_type="image/png", headers=headers)


@router.get("/cursor", response_model=sc.CursorOut)
async def cursor(env_id: str, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Where the pointer is (as last put there by an agent or a person)."""
    await desktop_of(svc, who)
    x, y = LEASES.get(env_id).pointer
    return JSONResponse({"x": x, "y": y})


@router.post("/move", response_model=sc.ActionOut)
async def move(body: sc.MoveRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Move the pointer."""
    desktop = await desktop_of(svc, who)
    desktop.check_point(body.x, body.y)
    return await _act(svc, who, "move", body.model_dump(), lambda d: d.move(body.x, body.y))


@router.post("/click", response_model=sc.ActionOut)
async def click(body: sc.ClickRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Click ``count`` times with ``button`` at ``(x, y)`` (default: where the pointer is)."""
    desktop = await desktop_of(svc, who)
    x, y = _point(desktop, body.x, body.y)

    async def send(d: Desktop) -> None:
        await d.click(x, y, body.button, body.count)

    return await _act(svc, who, "click", body.model_dump(), send)


@router.post("/drag", response_model=sc.ActionOut)
async def drag(body: sc.DragRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Press at the path's first point, move through it, release at its last."""
    desktop = await desktop_of(svc, who)
    for x, y in body.path:
        desktop.check_point(x, y)
    args = {"from": body.path[0], "to": body.path[-1], "points": len(body.path)}
    return await _act(svc, who, "drag", args, lambda d: d.drag(body.path, body.button))


@router.post("/scroll", response_model=sc.ActionOut)
async def scroll(body: sc.ScrollRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Scroll ``dy`` clicks down (negative: up) and ``dx`` right at ``(x, y)``."""
    desktop = await desktop_of(svc, who)
    x, y = _point(desktop, body.x, body.y)
    if body.dx == 0 and body.dy == 0:
        raise InputError("scroll needs dx or dy")
    return await _act(
        svc, who, "scroll", body.model_dump(), lambda d: d.scroll(x, y, body.dx, body.dy)
    )


@router.post("/type", response_model=sc.ActionOut)
async def type_text(body: sc.TypeRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Type text, one key press per character (any character the keyboard can make)."""
    keysyms = text_keysyms(body.text)
    args = {"text": body.text[:AUDIT_TEXT], "length": len(body.text)}
    return await _act(svc, who, "type", args, lambda d: d.type(keysyms))


@router.post("/key", response_model=sc.ActionOut)
async def key(body: sc.KeyRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Press a key or a combination such as ``ctrl+l`` (held in order, released in reverse)."""
    keysyms = parse_combo(body.keys)
    return await _act(svc, who, "key", body.model_dump(), lambda d: d.keys(keysyms))


@router.post("/hold", response_model=sc.ActionOut)
async def hold(body: sc.HoldRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Press keys and/or a mouse button and keep them down until ``release``."""
    if body.keys is None and body.button is None:
        raise InputError("hold needs keys or a button")
    keysyms = parse_combo(body.keys) if body.keys else []

    async def send(d: Desktop) -> None:
        if keysyms:
            await d.hold(keysyms)
        if body.button is not None:
            await d.press(body.button, down=True)

    return await _act(svc, who, "hold", body.model_dump(), send)


@router.post("/release", response_model=sc.ActionOut)
async def release(body: sc.ReleaseRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Release held keys and buttons (everything held, when the body names nothing)."""
    keysyms = parse_combo(body.keys) if body.keys else None

    async def send(d: Desktop) -> None:
        if body.button is not None:
            await d.press(body.button, down=False)
        if keysyms is not None:
            await d.release(keysyms)
        elif body.button is None:
            await d.release()

    return await _act(svc, who, "release", body.model_dump(), send)


@router.post("/wait", response_model=sc.WaitOut)
async def wait(env_id: str, body: sc.WaitRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Wait for the screen to change, or to settle (no change for ``quiet`` seconds)."""
    desktop = await desktop_of(svc, who)
    began = time.monotonic()
    try:
        if body.until == "change":
            changed = await desktop.wait_change(body.timeout)
        else:
            changed = await desktop.settle(body.quiet, body.timeout)
    except StreamClosedError as exc:
        await svc.desktops.drop(env_id)
        raise StateError("gone", ["running"], f"reach the display ({exc})") from exc
    return JSONResponse({"changed": changed, "waited": round(time.monotonic() - began, 3)})


@router.post("/exec", response_model=sc.ExecOut)
async def run(env_id: str, body: sc.ExecRequest, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Run a command in the environment as its user, with a timeout and output limits."""
    if who.permission is not Permission.CONTROL:
        raise ApiError(403, "forbidden", "a view token can watch this desktop but not run commands")
    if who.env.state is not State.RUNNING:
        raise StateError(who.env.state.value, ["running"], "run a command")
    if not body.argv[0]:
        raise InputError("argv[0] is empty: name the command to run")
    if any("\x00" in arg for arg in body.argv):
        raise InputError("an argument contains a NUL byte")
    svc.audit(who.caller, "computer.exec", env_id=env_id, argv=body.argv[:16], timeout=body.timeout)
    # timeout(1) inside the environment ends the command itself, not only runc exec.
    argv = ["timeout", "-k", "2", f"{body.timeout:g}", *body.argv]
    run_in = getattr(svc.engine.driver, "exec", None)
    if run_in is None:
        raise ApiError(422, "unsupported", "this server's runtime cannot run commands")
    result = await run_in(env_id, argv, timeout=body.timeout + 15, limit=body.max_output)
    return JSONResponse(
        {
            "exit_code": result.code,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "timed_out": result.code == TIMED_OUT,
            "truncated": result.truncated,
        }
    )


@router.get("/lease", response_model=sc.LeaseOut)
async def lease(
    env_id: str,
    who: ActorDep,
    version: Annotated[int | None, Query(ge=0)] = None,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> JSONResponse:
    """Who has the keyboard and mouse. With ``version`` and ``wait``: answer once the lease
    changes from that version (or after ``wait`` seconds), so an agent learns when it is back."""
    if who.env.state is not State.RUNNING:
        raise StateError(who.env.state.value, ["running"], "use the computer")
    current = LEASES.get(env_id)
    if version is not None and wait > 0:
        await current.changed(version, wait)
    return JSONResponse(current.as_json())


@router.post("/lease/release", response_model=sc.LeaseOut)
async def give_back(env_id: str, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """Give the keyboard and mouse back (a person hands control to the agent)."""
    if who.permission is not Permission.CONTROL:
        raise ApiError(403, "forbidden", "a view token cannot give control away")
    current = LEASES.get(env_id)
    before = current.release()
    holder = before.as_json() if before else None
    svc.audit(who.caller, "computer.lease_release", env_id=env_id, holder=holder)
    return JSONResponse(current.as_json())


def _point(desktop: Desktop, x: int | None, y: int | None) -> tuple[int, int]:
    if (x is None) != (y is None):
        raise InputError("give both x and y, or neither")
    point = desktop.pointer if x is None or y is None else (x, y)
    desktop.check_point(*point)
    return point
