"""``.../computer/files`` and ``.../computer/windows``: what an agent learns or changes by
running a command inside the environment (as its user) rather than through the display.

Files: an agent reads and writes files in the user's home.

Within the spec's file policy (``security.file_transfer``): reading needs
``from_env`` or ``both``, writing ``to_env`` or ``both``. Paths are absolute,
normalised and under the environment user's home; anything else is a 422
before the environment is touched. Both run inside the environment as its
user (``runc exec``), so the sandbox, not this check, is what bounds them.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from genos.api.deps import ServiceDep
from genos.api.errors import ApiError
from genos.api.routes_computer import ERRORS, Actor, ActorDep
from genos.api.service import Service
from genos.errors import InputError, StateError
from genos.gateway.policy import Permission
from genos.orchestrator.states import State
from genos.runtime.images.session import USER_HOME
from genos.spec import Direction

router = APIRouter(prefix="/v1/environments/{env_id}/computer", tags=["computer"], responses=ERRORS)
MAX_READ = 1 << 20
MAX_WRITE = 64 << 10  # one argv string carries it (Linux: 128 KiB each, base64 is 4/3)
_READ = {Direction.FROM_ENV, Direction.BOTH}
_WRITE = {Direction.TO_ENV, Direction.BOTH}


class WriteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Annotated[str, Field(min_length=1, max_length=1024)]
    content: Annotated[str, Field(max_length=MAX_WRITE)] | None = Field(
        None, description="UTF-8 text"
    )
    base64: Annotated[str, Field(max_length=MAX_WRITE * 4 // 3 + 4)] | None = Field(
        None, description="bytes, base64"
    )


def home_path(path: str) -> str:
    """``path`` if it is absolute, normal and inside the user's home.

    Raises:
        InputError: anything else.
    """
    if "\x00" in path or not path.startswith("/"):
        raise InputError(f"{path[:80]!r} is not an absolute path")
    normal = posixpath.normpath(path)
    if normal != path.rstrip("/") or not normal.startswith(USER_HOME + "/"):
        raise InputError(f"{path[:80]!r} is not a normal path under {USER_HOME}")
    return normal


def _check(who: Actor, allowed: set[Direction], what: str) -> None:
    if who.permission is not Permission.CONTROL:
        raise ApiError(403, "forbidden", f"a view token cannot {what} files")
    policy = who.env.spec.security.file_transfer
    if policy not in allowed:
        raise ApiError(
            403, "forbidden", f"the spec's file policy (file_transfer: {policy.value}) forbids it"
        )
    if who.env.state is not State.RUNNING:
        raise StateError(who.env.state.value, ["running"], f"{what} files")


async def _run(svc: Service, env_id: str, argv: list[str], limit: int) -> Any:
    run_in = getattr(svc.engine.driver, "exec", None)
    if run_in is None:
        raise ApiError(422, "unsupported", "this server's runtime cannot run commands")
    return await run_in(env_id, ["timeout", "-k", "2", "30", *argv], timeout=45, limit=limit)


@router.get("/files")
async def read_file(
    env_id: str,
    svc: ServiceDep,
    who: ActorDep,
    path: Annotated[str, Query(min_length=1, max_length=1024)],
) -> JSONResponse:
    """A file's bytes (``base64``, and ``content`` when it is UTF-8 text), up to 1 MiB."""
    target = home_path(path)
    _check(who, _READ, "read")
    svc.audit(who.caller, "computer.read_file", env_id=env_id, path=target)
    result = await _run(svc, env_id, ["base64", "-w0", "--", target], MAX_READ * 4 // 3 + 8)
    if result.code != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise ApiError(404, "not_found", f"cannot read {target}: {reason[:200]}")
    if result.truncated:
        raise ApiError(413, "too_large", f"{target} is larger than {MAX_READ} bytes")
    data = base64.b64decode(result.stdout)
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return JSONResponse(
        {"path": target, "size": len(data), "base64": result.stdout.strip(), "content": text}
    )


@router.put("/files")
async def write_file(
    env_id: str, body: WriteRequest, svc: ServiceDep, who: ActorDep
) -> JSONResponse:
    """Write a file (made or replaced) from UTF-8 ``content`` or ``base64`` bytes."""
    target = home_path(body.path)
    if (body.content is None) == (body.base64 is None):
        raise InputError("give exactly one of content and base64")
    if body.content is not None:
        data = body.content.encode()
    else:
        try:
            data = base64.b64decode(body.base64 or "", validate=True)
        except binascii.Error as exc:
            raise InputError("base64: not valid base64") from exc
    if len(data) > MAX_WRITE:
        raise ApiError(413, "too_large", f"a file written here is at most {MAX_WRITE} bytes")
    _check(who, _WRITE, "write")
    svc.audit(who.caller, "computer.write_file", env_id=env_id, path=target, size=len(data))
    encoded = base64.b64encode(data).decode()
    script = 'printf %s "$1" | base64 -d > "$2"'
    result = await _run(svc, env_id, ["sh", "-c", script, "sh", encoded, target], 4096)
    if result.code != 0:
        reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise ApiError(422, "invalid_input", f"cannot write {target}: {reason[:200]}")
    return JSONResponse({"path": target, "size": len(data)})


WINDOWS_SCRIPT = (Path(__file__).parent / "xwindows.py").read_text(encoding="utf-8")


@router.get("/windows")
async def windows(env_id: str, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """The desktop's windows: ``id``, ``title``, ``app``, geometry and ``focused``."""
    if who.env.state is not State.RUNNING:
        raise StateError(who.env.state.value, ["running"], "list windows")
    result = await _run(svc, env_id, ["python3", "-c", WINDOWS_SCRIPT], 1 << 20)
    if result.code == 127:
        raise ApiError(422, "unsupported", "listing windows needs python3 in the environment")
    try:
        listed = json.loads(result.stdout)
    except ValueError:
        reason = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ApiError(502, "external", f"the window list failed: {reason[:200]}") from None
    return JSONResponse(listed)


TREE_SCRIPT = (Path(__file__).parent / "atspi_tree.py").read_text(encoding="utf-8")
NO_ATSPI = 3  # atspi_tree.py's exit code when the image has no AT-SPI


@router.get("/accessibility")
async def accessibility(env_id: str, svc: ServiceDep, who: ActorDep) -> JSONResponse:
    """The accessibility tree (AT-SPI) of the focused window: role, name, screen extents,
    focus and children of each element, where the app exposes one."""
    if who.env.state is not State.RUNNING:
        raise StateError(who.env.state.value, ["running"], "read the accessibility tree")
    result = await _run(svc, env_id, ["python3", "-c", TREE_SCRIPT], 8 << 20)
    if result.code in (NO_ATSPI, 127):
        raise ApiError(
            422, "unsupported",
            "the accessibility tree needs python3-gi, gir1.2-atspi-2.0 and at-spi2-core "
            "in the environment (extra_packages)",
        )  # fmt: skip
    try:
        tree = json.loads(result.stdout)
    except ValueError:
        reason = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ApiError(502, "external", f"the accessibility tree failed: {reason[:200]}") from None
    return JSONResponse(tree)
