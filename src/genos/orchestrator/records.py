"""What the registry and the engine hand out: plain, frozen values (never ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

from genos.orchestrator.states import State
from genos.spec import EnvironmentSpec

Role = Literal["admin", "user"]


class EventType(StrEnum):
    """What an :class:`Event` reports."""

    STATE = "state"  # a transition; ``state`` is the new one
    PROGRESS = "progress"  # a provisioning step ("sandbox ready")
    WARNING = "warning"  # something is about to happen ("ttl: terminating in 60s")
    ERROR = "error"  # something failed that did not change the state


@dataclass(frozen=True)
class Environment:
    """One environment as the registry knows it.

    ``cpus``/``memory_mb`` are what it reserves (its request, see
    :mod:`genos.orchestrator.capacity`);
    ``started`` is when it first ran (TTL counts from there); ``queue_position``
    is 1-based while waiting and None otherwise. ``spec`` is parsed from the
    stored JSON on first use, so listing many environments stays cheap.
    """

    id: str
    owner: str
    name: str | None
    state: State
    spec_json: str = field(repr=False)
    priority: int
    request_id: str | None
    created: datetime
    updated: datetime
    cpus: float
    memory_mb: int
    started: datetime | None = None
    last_activity: datetime | None = None
    failure_reason: str | None = None
    host: str | None = None
    queue_position: int | None = None
    replaces: str | None = None  # the lost environment this one replaces
    replaced_by: str | None = None  # the environment that replaced this lost one
    pool_id: str | None = None  # the warm pool it came from (or waits in, while unclaimed)
    claimed: datetime | None = None  # when a user took it from its pool

    @property
    def pooled(self) -> bool:
        """Whether it still waits in a warm pool (nobody has claimed it)."""
        return self.pool_id is not None and self.claimed is None

    @cached_property
    def spec(self) -> EnvironmentSpec:
        """The environment's spec."""
        return EnvironmentSpec.model_validate_json(self.spec_json)


@dataclass(frozen=True)
class Pool:
    """A warm pool: ``size`` started environments of one spec, kept ready to be claimed.

    ``digest`` is the spec's :func:`genos.orchestrator.pools.pool_digest`;
    a request whose spec has it takes one of the pool's environments.
    """

    id: str
    digest: str
    spec_json: str = field(repr=False)
    size: int
    prompt: str | None
    set_by: str
    created: datetime
    updated: datetime

    @cached_property
    def spec(self) -> EnvironmentSpec:
        """The pool's spec."""
        return EnvironmentSpec.model_validate_json(self.spec_json)


@dataclass(frozen=True)
class Clocks:
    """What the timers need of an environment: its state and when it started and was used."""

    id: str
    state: State
    started: datetime | None
    last_activity: datetime | None
    pooled: bool = False  # waits unclaimed in a warm pool: no TTL or idle timeout yet


@dataclass(frozen=True)
class Event:
    """Something that happened to an environment; ``seq`` orders them per environment."""

    env_id: str
    seq: int
    time: datetime
    type: EventType
    state: State
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    """One step of the lifecycle, written before its side effect starts."""

    env_id: str
    seq: int
    from_state: State
    to_state: State
    actor: str
    reason: str
    time: datetime


@dataclass(frozen=True)
class User:
    """An account. Hashes are made and checked by ``genos.api.security``."""

    id: str
    name: str
    role: Role
    password_hash: str | None
    totp_secret: str | None
    created: datetime


@dataclass(frozen=True)
class ApiToken:
    """An API token's row: ``token_hash`` is an argon2 hash of its secret."""

    id: str
    user_id: str
    name: str
    token_hash: str
    created: datetime
    last_used: datetime | None
    revoked: bool
