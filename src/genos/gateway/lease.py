"""The input lease: who has an environment's keyboard and mouse right now.

One :class:`InputLease` per environment. An agent's action takes the lease
when it is free or already an agent's; when a person holds it the action is
refused with :class:`~genos.errors.LeaseHeldError` (409 in the API). A person
with a control viewer takes it at once by touching the desktop (a key, or a
pointer event with a button down); their bare pointer motion is dropped while
an agent holds it, so hovering over the viewer does not steer the agent's
pointer. The lease is given back (freed) by :meth:`InputLease.release`.
Every change bumps :attr:`InputLease.version`, wakes :meth:`InputLease.changed`
and calls :attr:`Leases.on_change` (the API turns it into an event of the
environment, so an agent following its events learns when control is back).

The lease lives in the process that serves the environment's display (the
gateway and the computer API are one process in ``genos serve``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from genos.errors import LeaseHeldError

log = logging.getLogger("genos.gateway.lease")
Kind = Literal["person", "agent"]


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: a person's viewer or an agent, with the user behind it."""

    kind: Kind
    user_id: str
    name: str
    since: float

    def as_json(self) -> dict[str, str | float]:
        """The holder as JSON data."""
        return asdict(self)


class InputLease:
    """The lease of one environment (see the module docstring)."""

    def __init__(
        self, env_id: str, on_change: Callable[[str, Holder | None], None] | None = None
    ) -> None:
        self.env_id = env_id
        self.on_change = on_change
        self.holder: Holder | None = None
        self.version = 0
        self.pointer = (0, 0)  # where the last pointer event from anyone put it
        self._changed = asyncio.Event()  # replaced by a fresh one at each change

    def agent_acts(self, user_id: str, name: str) -> None:
        """Take or keep the lease for an agent's action.

        Raises:
            LeaseHeldError: a person holds it.
        """
        holder = self.holder
        if holder is not None and holder.kind == "person":
            raise LeaseHeldError(
                f"{holder.name} (a person) has the keyboard and mouse; wait until it is given back",
                {"kind": holder.kind, "name": holder.name, "user_id": holder.user_id},
            )
        if holder is None or holder.user_id != user_id:
            self._set(Holder("agent", user_id, name, time.time()))

    def person_input(self, user_id: str, name: str, *, touch: bool) -> bool:
        """A control viewer's key or pointer event: whether it may reach the environment.

        Args:
            user_id: the viewer's user.
            name: how to name them to others.
            touch: a key or a pressed button (takes the lease); False for bare motion.

        Returns:
            True to forward it; bare motion while an agent holds the lease is dropped.
        """
        holder = self.holder
        if touch:
            if holder is None or holder.kind != "person" or holder.user_id != user_id:
                self._set(Holder("person", user_id, name, time.time()))
            return True
        return holder is None or holder.kind == "person"

    def release(self) -> Holder | None:
        """Free the lease (a person giving control back); returns who held it."""
        before = self.holder
        if before is not None:
            self._set(None)
        return before

    async def changed(self, version: int, timeout: float) -> bool:
        """Wait until :attr:`version` differs from ``version``; False on timeout."""
        if self.version != version:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def as_json(self) -> dict[str, object]:
        """The lease as JSON data: holder (or None) and version."""
        return {
            "holder": self.holder.as_json() if self.holder else None,
            "version": self.version,
        }

    def _set(self, holder: Holder | None) -> None:
        self.holder = holder
        self.version += 1
        who = f"{holder.kind} {holder.name}" if holder else "nobody"
        log.getChild(self.env_id).info("input lease: %s", who)
        self._changed.set()
        self._changed = asyncio.Event()
        if self.on_change is not None:
            self.on_change(self.env_id, holder)


class Leases:
    """The leases of every environment this process serves."""

    def __init__(self) -> None:
        self._leases: dict[str, InputLease] = {}
        self.on_change: Callable[[str, Holder | None], None] | None = None

    def get(self, env_id: str) -> InputLease:
        """The lease of ``env_id`` (made free on first use)."""
        lease = self._leases.get(env_id)
        if lease is None:
            lease = self._leases[env_id] = InputLease(env_id, self._relay)
        return lease

    def _relay(self, env_id: str, holder: Holder | None) -> None:
        if self.on_change is not None:
            self.on_change(env_id, holder)

    def drop(self, env_id: str) -> None:
        """Forget an environment's lease (it ended)."""
        self._leases.pop(env_id, None)


LEASES = Leases()
