"""``POST /v1/environments/{id}/record``: an MP4 of the screen and sound of a desktop.

The environment records (``genos-record`` on ``record.sock``, served only when
the spec says ``security.recording: true``): it is asked for ``"<seconds>\\n"``,
records, then answers ``OK\\n`` and the whole file, or ``ERR <why>\\n``. The
route waits for that first line (the recording's length and a minute more),
turns an ``ERR`` into the matching status, then passes the file on as it is
read, up to :data:`MAX_BYTES`. A file that breaks off (the recorder failed,
the cap was passed) ends the HTTP answer without its end (the connection is
dropped mid-body), so a client never takes a part for the whole. Each request
is one audit record (``record``: seconds, bytes, outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.types import Receive, Scope, Send

from genos.api.deps import CallerDep, ServiceDep, visible_env
from genos.api.display import _open_server
from genos.api.errors import ApiError
from genos.api.schemas import ErrorBody
from genos.api.service import Caller, Service
from genos.errors import (
    ConflictError,
    ExternalError,
    GenOSError,
    InputError,
    NotFoundError,
    StateError,
)
from genos.orchestrator.records import Environment
from genos.orchestrator.states import State
from genos.runtime.driver import DisplayTarget, endpoint

log = logging.getLogger("genos.api.record")
router = APIRouter(
    prefix="/v1",
    tags=["recording"],
    responses={code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 502)},
)
MAX_SECONDS = 600
MAX_BYTES = 1 << 30  # 600 s at the recorder's 4 Mbit/s is about 300 MB
ANSWER_GRACE = 60.0  # seconds past the recording's length for the recorder to answer
READ_TIMEOUT = 60.0  # seconds the file may stall once it flows
CHUNK = 1 << 16
MP4_HEAD = 8  # an MP4 starts with a box: size (4 bytes), then "ftyp"


class RecordRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seconds: Annotated[StrictInt, Field(ge=1, le=MAX_SECONDS, description="length, 1-600")]


@dataclass
class Recording:
    """One recording on its way to a client: the recorder's socket and what has passed."""

    svc: Service
    caller: Caller
    env_id: str
    seconds: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    head: bytes
    sent: int = 0
    outcome: str = "client_gone"

    async def body(self) -> AsyncIterator[bytes]:
        """The file, as read; it stops early (``outcome`` says why) if the recorder breaks."""
        try:
            self.sent = len(self.head)
            yield self.head
            while chunk := await asyncio.wait_for(self.reader.read(CHUNK), READ_TIMEOUT):
                self.sent += len(chunk)
                if self.sent > MAX_BYTES:
                    self.outcome = f"broken: the recording is larger than {MAX_BYTES} bytes"
                    return
                yield chunk
        except (OSError, TimeoutError) as exc:
            self.outcome = f"broken: {exc or type(exc).__name__}"[:200]
            return
        self.outcome = "ok"

    async def close(self) -> None:
        """Hang up on the recorder and write the audit record."""
        await _hang_up(self.writer)
        self.svc.audit(
            self.caller, "record", env_id=self.env_id, seconds=self.seconds, bytes=self.sent,
            outcome=self.outcome,
        )  # fmt: skip


class RecordingResponse(StreamingResponse):
    """The file, streamed; the recording is closed however the answer ends."""

    def __init__(self, recording: Recording, headers: dict[str, str]) -> None:
        super().__init__(recording.body(), media_type="video/mp4", headers=headers)
        self.recording = recording

    async def stream_response(self, send: Send) -> None:
        """As Starlette's, but a broken file gets no end: the server then drops the
        connection mid-body, and the client cannot mistake a part for the whole."""
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self.recording.outcome != "ok":
            log.warning("%s: recording %s", self.recording.env_id, self.recording.outcome)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.recording.close()


@router.post(
    "/environments/{env_id}/record",
    response_class=StreamingResponse,
    responses={200: {"content": {"video/mp4": {}}}},
)
async def record(
    env_id: str, body: RecordRequest, request: Request, svc: ServiceDep, who: CallerDep
) -> Response:
    """Record ``seconds`` of the screen and sound; the MP4 (H.264 and Opus) once it is done."""
    env = await visible_env(svc, who, env_id)
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    try:
        opened = await _start(svc, env, body.seconds, request)
    except (ApiError, GenOSError) as exc:
        svc.audit(who, "record", env_id=env_id, seconds=body.seconds, bytes=0,
                  outcome=str(exc)[:200])  # fmt: skip
        raise
    if opened is None:
        svc.audit(who, "record", env_id=env_id, seconds=body.seconds, bytes=0,
                  outcome="client_gone")  # fmt: skip
        return Response(status_code=499)  # nobody is there to read it
    recording = Recording(svc, who, env_id, body.seconds, *opened)
    disposition = f'attachment; filename="genos-{env_id}-{started}.mp4"'
    return RecordingResponse(recording, {"Content-Disposition": disposition})


async def _start(
    svc: Service, env: Environment, seconds: int, request: Request
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes] | None:
    """Check the spec and the state, then :func:`open_recording` (None: the client left).

    Raises:
        ApiError: the spec does not allow recording (403).
        StateError: the environment is not running.
        NotFoundError: it has no recorder (a VM).
        ConflictError, InputError, ExternalError: as :func:`open_recording`.
    """
    if not env.spec.security.recording:
        raise ApiError(403, "forbidden", "its spec does not allow recording (security.recording)")
    if env.state is not State.RUNNING:
        raise StateError(env.state.value, ["running"], "record")
    target = endpoint(svc.engine.driver, env.id, "record")
    with contextlib.suppress(GenOSError):
        await svc.engine.activity(env.id)
    return await open_recording(target, env.id, seconds, lambda: _disconnected(request))


async def open_recording(
    target: DisplayTarget,
    env_id: str,
    seconds: int,
    gone: Callable[[], Awaitable[None]] | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes] | None:
    """Ask the recorder at ``target`` for ``seconds`` and wait for its answer (the
    recording's length and :data:`ANSWER_GRACE`): the open socket and the file's
    first bytes; the rest of the file follows on the reader until EOF.

    Args:
        target: ``env_id``'s record endpoint.
        env_id: the environment (for messages).
        seconds: the length, 1-600.
        gone: returns once whoever asked is no longer there: the wait then ends, the
            recorder is hung up on, and the answer is None.

    Raises:
        NotFoundError: no recorder at ``target``.
        ConflictError: another recording is in progress.
        InputError: the recorder refused the length.
        ExternalError: the recorder failed or said nothing sensible.
    """
    try:
        reader, writer = await _open_server(target)
    except FileNotFoundError as exc:
        raise NotFoundError("recorder of environment", env_id) from exc
    except OSError as exc:
        raise ExternalError(f"the recorder cannot be reached: {exc.strerror or exc}") from exc
    try:
        head = await _ask(reader, writer, seconds, gone)
    except asyncio.IncompleteReadError as exc:
        await _hang_up(writer)
        raise ExternalError("the recorder sent no file") from exc
    except (OSError, TimeoutError, ValueError) as exc:
        await _hang_up(writer)
        raise ExternalError(f"the recorder failed: {exc or type(exc).__name__}") from exc
    except BaseException:
        await _hang_up(writer)
        raise
    if head is None:
        await _hang_up(writer)
        return None
    return reader, writer, head


async def _ask(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    seconds: int,
    gone: Callable[[], Awaitable[None]] | None,
) -> bytes | None:
    """Send the length, wait for the answer; the file's first bytes (None: the asker left)."""
    writer.write(f"{seconds}\n".encode())
    await writer.drain()
    line = await _first_line(reader, gone, seconds + ANSWER_GRACE)
    if line is None:
        return None
    _check_answer(line)
    head = await asyncio.wait_for(reader.readexactly(MP4_HEAD), READ_TIMEOUT)
    if head[4:8] != b"ftyp":
        raise ExternalError("the recorder's answer is not an MP4 file")
    return head


async def _first_line(
    reader: asyncio.StreamReader, gone: Callable[[], Awaitable[None]] | None, wait: float
) -> bytes | None:
    """The recorder's first line (``b""`` if it hung up), or None if the asker left first.

    Raises:
        TimeoutError: no answer in ``wait`` seconds.
        ValueError: a first line past the reader's limit.
    """
    line = asyncio.ensure_future(reader.readline())
    left = asyncio.ensure_future(gone() if gone is not None else asyncio.Event().wait())
    try:
        first = asyncio.FIRST_COMPLETED
        done, _ = await asyncio.wait({line, left}, timeout=wait, return_when=first)
    finally:
        for task in (line, left):
            task.cancel()
        await asyncio.gather(line, left, return_exceptions=True)
    if line in done:
        return line.result()
    if left in done:
        return None
    raise TimeoutError(f"no answer in {wait:g}s")


async def _disconnected(request: Request) -> None:
    """Until the client hangs up (the request's body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _check_answer(line: bytes) -> None:
    """Nothing for ``OK``; the error an ``ERR <why>`` line (or anything else) stands for."""
    text = line.decode(errors="replace").strip()
    if text == "OK":
        return
    if not text.startswith("ERR "):
        raise ExternalError("the recorder hung up without an answer" if not text else
                            f"the recorder's answer is not OK or ERR: {text[:80]!r}")  # fmt: skip
    why = text.removeprefix("ERR ")[:200]
    if "in progress" in why:
        raise ConflictError(why)
    if "length" in why:
        raise InputError(why)
    raise ExternalError(f"the recording failed: {why}")


async def _hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
