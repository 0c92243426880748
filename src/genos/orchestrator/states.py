"""The lifecycle of an environment: its states and the transitions between them.

::

    requested ──▶ queued ──▶ provisioning ──▶ running ◀──▶ suspended
        │           │             │              │             │
        └───────────┴─────────────┴──────────────┴─────────────┴──▶ terminated
                                                                ──▶ failed
                                  └──────────────┴─────────────┴──▶ lost

``requested`` is the instant between the registry insert and admission: the
engine then moves the environment to ``provisioning`` when it fits on the
host, or to ``queued`` when it must wait for capacity (queueing is a state, so
clients see it and ``wait`` for it). ``lost``: its node of a cluster stopped
answering (its lease lapsed); the node destroys it when it comes back.
``terminated``, ``failed`` and ``lost`` are final.
A queued or requested environment holds nothing on the host; a provisioning,
running or suspended one holds its reservation (cpus, memory) until it ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from genos.errors import StateError


class State(StrEnum):
    """Where an environment is in its lifecycle."""

    REQUESTED = "requested"
    QUEUED = "queued"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    FAILED = "failed"
    LOST = "lost"

    @property
    def final(self) -> bool:
        """True for ``terminated``, ``failed`` and ``lost``: nothing follows them."""
        return self in FINAL


FINAL = frozenset({State.TERMINATED, State.FAILED, State.LOST})
WAITING = frozenset({State.REQUESTED, State.QUEUED})
HOLDING = frozenset({State.PROVISIONING, State.RUNNING, State.SUSPENDED})
LIVE = WAITING | HOLDING

TRANSITIONS: dict[State, frozenset[State]] = {
    State.REQUESTED: frozenset({State.QUEUED, State.PROVISIONING, State.TERMINATED, State.FAILED}),
    State.QUEUED: frozenset({State.PROVISIONING, State.TERMINATED, State.FAILED}),
    State.PROVISIONING: frozenset({State.RUNNING, State.TERMINATED, State.FAILED, State.LOST}),
    State.RUNNING: frozenset({State.SUSPENDED, State.TERMINATED, State.FAILED, State.LOST}),
    State.SUSPENDED: frozenset({State.RUNNING, State.TERMINATED, State.FAILED, State.LOST}),
    State.TERMINATED: frozenset(),
    State.FAILED: frozenset(),
    State.LOST: frozenset(),
}


def sources(target: State) -> list[State]:
    """Every state from which ``target`` may be entered, in lifecycle order."""
    return [state for state in State if target in TRANSITIONS[state]]


def check(current: State, target: State, action: str = "") -> None:
    """Raise unless ``current -> target`` is a transition of the lifecycle.

    Args:
        current: the state the environment is in.
        target: the state asked for.
        action: the verb, for the message (``"suspend"``).

    Raises:
        StateError: the transition is not allowed; ``required`` lists the states
            ``target`` may be entered from.
    """
    if target not in TRANSITIONS[current]:
        raise StateError(current.value, [s.value for s in sources(target)], action)


def require(current: State, allowed: Iterable[State], action: str) -> None:
    """Raise unless ``current`` is one of ``allowed`` (a verb's precondition).

    Args:
        current: the state the environment is in.
        allowed: the states the verb works in.
        action: the verb, for the message.

    Raises:
        StateError: ``current`` is not in ``allowed``.
    """
    allowed = set(allowed)
    if current not in allowed:
        raise StateError(current.value, [s.value for s in State if s in allowed], action)
