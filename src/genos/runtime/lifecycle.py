"""The guarded transitions every driver shares (see :mod:`genos.runtime.driver`).

::

    CREATED --start--> RUNNING --suspend--> SUSPENDED --resume--> RUNNING

``destroy`` is allowed from every state (and when there is nothing), so it is
not in the table. A verb called in another state raises
:class:`~genos.errors.StateError` carrying the current and required states.
"""

from __future__ import annotations

from enum import StrEnum

from genos.errors import StateError
from genos.runtime.driver import EnvState


class Verb(StrEnum):
    """Driver verbs that are only allowed in some states."""

    START = "start"
    SUSPEND = "suspend"
    RESUME = "resume"
    EXEC = "exec"


TRANSITIONS: dict[Verb, tuple[frozenset[EnvState], EnvState]] = {
    Verb.START: (frozenset({EnvState.CREATED}), EnvState.RUNNING),
    Verb.SUSPEND: (frozenset({EnvState.RUNNING}), EnvState.SUSPENDED),
    Verb.RESUME: (frozenset({EnvState.SUSPENDED}), EnvState.RUNNING),
    Verb.EXEC: (frozenset({EnvState.RUNNING}), EnvState.RUNNING),
}


def require(current: EnvState, verb: Verb) -> EnvState:
    """Check that ``verb`` may run in ``current``; the state it leads to.

    Args:
        current: the environment's state now.
        verb: what the caller wants to do.

    Returns:
        The state after ``verb`` succeeds.

    Raises:
        StateError: ``verb`` is not allowed in ``current``.
    """
    allowed, target = TRANSITIONS[verb]
    if current not in allowed:
        raise StateError(current.value, sorted(s.value for s in allowed), verb.value)
    return target
