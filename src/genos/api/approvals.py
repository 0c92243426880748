"""Approvals: an agent asks a person to approve a step and waits for the answer.

One :class:`Approvals` per process. An approval is pending until a person
decides it (approve or decline) or its time runs out; either way the asking
request gets the outcome. States: ``pending -> approved | declined | timed_out``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

from genos.errors import NotFoundError, StateError

Outcome = Literal["approved", "declined", "timed_out"]
MAX_PENDING = 16  # per environment


@dataclass
class Approval:
    """One request for a person's approval."""

    id: str
    env_id: str
    description: str
    requested_by: str
    created: float
    expires: float
    status: Literal["pending", "approved", "declined", "timed_out"] = "pending"
    decided_by: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def as_json(self) -> dict[str, object]:
        """The approval as JSON data."""
        keys = ("id", "description", "requested_by", "created", "expires", "status", "decided_by")
        return {k: getattr(self, k) for k in keys}


class Approvals:
    """Pending and recent approvals of every environment of this process."""

    def __init__(self) -> None:
        self._by_env: dict[str, dict[str, Approval]] = {}

    def pending(self, env_id: str) -> list[Approval]:
        """The environment's pending approvals, oldest first."""
        found = self._by_env.get(env_id, {}).values()
        return sorted((a for a in found if a.status == "pending"), key=lambda a: a.created)

    async def ask(self, env_id: str, description: str, who: str, timeout: float) -> Approval:
        """Open an approval and wait until it is decided or ``timeout`` passes.

        Raises:
            StateError: too many approvals are pending on this environment.
        """
        if len(self.pending(env_id)) >= MAX_PENDING:
            raise StateError("busy", ["fewer pending approvals"], "ask for another approval")
        now = time.time()
        approval = Approval(secrets.token_hex(6), env_id, description, who, now, now + timeout)
        self._by_env.setdefault(env_id, {})[approval.id] = approval
        try:
            async with asyncio.timeout(timeout):
                await approval.done.wait()
        except TimeoutError:
            approval.status = "timed_out"
        finally:
            if approval.status == "pending":  # the asking request went away
                approval.status = "timed_out"
            mine = self._by_env.get(env_id, {})
            mine.pop(approval.id, None)
            if not mine:
                self._by_env.pop(env_id, None)  # none left: no entry kept for the environment
        return approval

    def decide(self, env_id: str, approval_id: str, approve: bool, who: str) -> Approval:
        """Approve or decline a pending approval.

        Raises:
            NotFoundError: no such pending approval on this environment.
        """
        approval = self._by_env.get(env_id, {}).get(approval_id)
        if approval is None or approval.status != "pending":
            raise NotFoundError("pending approval", approval_id[:40])
        approval.status = "approved" if approve else "declined"
        approval.decided_by = who
        approval.done.set()
        return approval
