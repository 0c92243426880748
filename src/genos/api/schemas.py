"""Request and response bodies of the HTTP API (pydantic; they make ``/openapi.json``).

Requests forbid unknown fields and bound every string and number, so a bad
body is a 422 with the field named, never a 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genos.spec import EnvironmentSpec

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")]
Answers = Annotated[
    dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=200)]],
    Field(max_length=50),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoginRequest(_Request):
    username: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    totp: Annotated[str, Field(max_length=16)] | None = None
    link: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None, description="a one-time sign-in code from POST /v1/login-links"
    )

    @model_validator(mode="after")
    def _one_way(self) -> LoginRequest:
        if self.link is None and (self.username is None or self.password is None):
            raise ValueError("give username and password, or a sign-in link code")
        return self


class ComposeRequest(_Request):
    prompt: Annotated[str, Field(max_length=20000)]
    answers: Answers | None = None


class CreateRequest(_Request):
    spec: EnvironmentSpec | None = None
    prompt: Annotated[str, Field(max_length=20000)] | None = None
    answers: Answers | None = None
    request_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    priority: Annotated[int, Field(ge=-100, le=100)] = 0
    wait: bool = False
    timeout: Annotated[float, Field(gt=0, le=900)] = 120.0

    @model_validator(mode="after")
    def _spec_or_prompt(self) -> CreateRequest:
        if (self.spec is None) == (self.prompt is None):
            raise ValueError("give exactly one of spec and prompt")
        return self


class PoolRequest(_Request):
    spec: EnvironmentSpec | None = None
    prompt: Annotated[str, Field(max_length=20000)] | None = None
    answers: Answers | None = None
    size: Annotated[int, Field(ge=0, le=1000)]

    @model_validator(mode="after")
    def _spec_or_prompt(self) -> PoolRequest:
        if (self.spec is None) == (self.prompt is None):
            raise ValueError("give exactly one of spec and prompt")
        return self


class DisplayTokenRequest(_Request):
    permission: Literal["control", "view"] = "control"
    ttl: Annotated[int, Field(ge=10, le=86400)] = 300


class UserRequest(_Request):
    name: Name
    password: Annotated[str, Field(min_length=8, max_length=1024)] | None = None
    role: Literal["admin", "user"] = "user"


class TokenRequest(_Request):
    name: Name


class CodeRequest(_Request):
    code: Annotated[str, Field(min_length=6, max_length=6, pattern=r"^[0-9]{6}$")]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class UsageOut(BaseModel):
    cpu_seconds: float
    memory_bytes: int
    pids: int


class EnvironmentOut(BaseModel):
    id: str
    owner: str
    name: str | None
    state: str
    url: str
    spec: dict[str, Any]
    summary: str
    created: datetime
    updated: datetime
    started: datetime | None
    failure_reason: str | None
    queue_position: int | None
    priority: int
    cpus: float  # what it reserves (its request)
    memory_mb: int
    node: str | None = None  # the host (node) it was placed on
    pool: str | None = None  # the warm pool it came from
    claimed: datetime | None = None  # when it was taken from that pool
    replaces: str | None = None  # the lost environment it replaces
    replaced_by: str | None = None  # its replacement, if it was lost
    usage: UsageOut | None = None
    tier_note: str | None = None


class EnvironmentPage(BaseModel):
    items: list[EnvironmentOut]
    next: str | None


class ComposeOut(BaseModel):
    outcome: Literal["spec", "clarify", "reject"]
    spec: dict[str, Any] | None
    clarifications: list[dict[str, Any]]
    violations: list[dict[str, Any]]


class EventOut(BaseModel):
    env_id: str
    seq: int
    time: datetime
    type: str
    state: str
    message: str
    data: dict[str, Any]


class UserOut(BaseModel):
    id: str
    name: str
    role: str
    totp: bool = False


class LoginOut(BaseModel):
    token: str
    user: UserOut


class LinkOut(BaseModel):
    code: str
    expires: datetime


class TokenOut(BaseModel):
    id: str
    name: str
    token: str


class DisplayTokenOut(BaseModel):
    token: str
    permission: str
    expires: datetime
    websocket: str
    share_url: str


class ConnectionOut(BaseModel):
    connection_id: str
    user_id: str
    permission: str
    rtt_ms: float | None
    fps: float
    kbps: float
    quality: int
    compression: int
    bytes_to_client: int
    started_at: float


class TotpOut(BaseModel):
    secret: str
    uri: str


class Status(BaseModel):
    status: str


class RecordingOut(BaseModel):
    name: str
    bytes: int


class PoolOut(BaseModel):
    id: str
    digest: str
    size: int
    ready: int
    starting: int
    prompt: str | None
    summary: str
    spec: dict[str, Any]
    set_by: str
    created: datetime
    updated: datetime
