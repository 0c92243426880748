"""Files in and out of a running desktop: ``~/Uploads`` and ``~/Downloads``.

* ``POST /v1/environments/{id}/uploads?name=N`` (the body is the file)
* ``GET /v1/environments/{id}/downloads`` (what ``~/Downloads`` holds)
* ``GET /v1/environments/{id}/downloads/{name}`` (one file)

Each direction is allowed only as the spec's ``security.file_transfer`` says
(``to_env``: uploads, ``from_env``: downloads, ``both``, ``none``); each file
that crosses, or is refused, gets an audit record. The host-side rules
(sanitised names, no links followed, no partial file) are
:mod:`genos.runtime.files`'s.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from genos.api.deps import CallerDep, ServiceDep, visible_env
from genos.api.errors import ApiError
from genos.api.schemas import ErrorBody
from genos.api.service import Caller, Service
from genos.errors import GenOSError, StateError
from genos.orchestrator.records import Environment
from genos.orchestrator.states import State
from genos.runtime import files
from genos.spec import Direction

router = APIRouter(
    prefix="/v1/environments/{env_id}",
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody},
        409: {"model": ErrorBody},
        413: {"model": ErrorBody},
    },
)
MAX_UPLOAD_BYTES = 512 << 20
MAX_DOWNLOAD_BYTES = 512 << 20
CHUNK = 256 << 10
_UPLOAD_PATH = re.compile(r"^/v1/environments/[^/]+/uploads$")
_ALLOWS = {
    "upload": (Direction.TO_ENV, Direction.BOTH),
    "download": (Direction.FROM_ENV, Direction.BOTH),
}


def is_upload(path: str) -> bool:
    """Whether a request path is an upload (its size is checked here, not by BodyLimit)."""
    return _UPLOAD_PATH.match(path) is not None


async def _running(svc: Service, who: Caller, env_id: str, way: str) -> Environment:
    """The caller's running environment whose policy allows ``way``; 403/409 otherwise."""
    env = await visible_env(svc, who, env_id)
    policy = env.spec.security.file_transfer
    if policy not in _ALLOWS[way]:
        svc.audit(who, f"file.{way}", env=env_id, outcome="refused", policy=policy.value)
        raise ApiError(
            403,
            "file_transfer_refused",
            f"this environment's security.file_transfer is {policy.value!r}: no {way}s",
        )
    if env.state is not State.RUNNING:
        raise StateError(env.state.value, ["running"], f"move files ({way})")
    return env


def _home(svc: Service, env_id: str) -> files.HomeDir:
    return files.home_of(svc.engine.driver, env_id)


def _too_large(exc: files.TooLargeError) -> ApiError:
    return ApiError(413, "too_large", str(exc))


@router.post("/uploads", status_code=201)
async def upload(
    env_id: str,
    request: Request,
    svc: ServiceDep,
    who: CallerDep,
    name: Annotated[str, Query(min_length=1, max_length=1024)],
) -> JSONResponse:
    """Store the request's body in the environment's ``~/Uploads`` under a safe name."""
    await _running(svc, who, env_id, "upload")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        svc.audit(who, "file.upload", env=env_id, name=name[:255], outcome="too_large")
        raise ApiError(413, "too_large", f"the file is larger than {MAX_UPLOAD_BYTES} bytes")
    home = await asyncio.to_thread(_home, svc, env_id)
    try:
        stored = await files.upload(home, name, request.stream(), MAX_UPLOAD_BYTES)
    except files.TooLargeError as exc:
        svc.audit(who, "file.upload", env=env_id, name=name[:255], outcome="too_large")
        raise _too_large(exc) from exc
    except GenOSError as exc:
        svc.audit(who, "file.upload", env=env_id, name=name[:255], outcome=exc.code)
        raise
    svc.audit(who, "file.upload", env=env_id, name=stored.name, size=stored.size, outcome="stored")
    body: dict[str, Any] = {
        "name": stored.name,
        "size": stored.size,
        "path": f"~/Uploads/{stored.name}",
    }
    return JSONResponse(body, status_code=201)


@router.get("/downloads")
async def downloads(env_id: str, svc: ServiceDep, who: CallerDep) -> JSONResponse:
    """The regular files in the environment's ``~/Downloads``."""
    await _running(svc, who, env_id, "download")
    home = await asyncio.to_thread(_home, svc, env_id)
    entries = await asyncio.to_thread(files.list_downloads, home)
    items = [{"name": e.name, "size": e.size, "modified": e.modified} for e in entries]
    return JSONResponse({"items": items, "max_bytes": MAX_DOWNLOAD_BYTES})


async def _read(fd: int) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(os.read, fd, CHUNK):
            yield chunk
    finally:
        os.close(fd)


@router.get("/downloads/{name}")
async def download(env_id: str, name: str, svc: ServiceDep, who: CallerDep) -> StreamingResponse:
    """One file of ``~/Downloads`` (never through a link)."""
    await _running(svc, who, env_id, "download")
    home = await asyncio.to_thread(_home, svc, env_id)
    try:
        fd, size = await asyncio.to_thread(files.open_download, home, name, MAX_DOWNLOAD_BYTES)
    except files.TooLargeError as exc:
        svc.audit(who, "file.download", env=env_id, name=name[:255], outcome="too_large")
        raise _too_large(exc) from exc
    except GenOSError as exc:
        svc.audit(who, "file.download", env=env_id, name=name[:255], outcome=exc.code)
        raise
    svc.audit(who, "file.download", env=env_id, name=name, size=size, outcome="sent")
    headers = {
        "content-length": str(size),
        "content-disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
        "x-content-type-options": "nosniff",
    }
    return StreamingResponse(_read(fd), media_type="application/octet-stream", headers=headers)
