"""The lifecycle's transition table, checked pair by pair."""

from __future__ import annotations

import itertools

import pytest

from genos.errors import StateError
from genos.orchestrator import states
from genos.orchestrator.states import State

R, Q, P = State.REQUESTED, State.QUEUED, State.PROVISIONING
RUN, S, T, F = State.RUNNING, State.SUSPENDED, State.TERMINATED, State.FAILED
L = State.LOST

# Written out from the issue, independently of the table in the package.
ALLOWED = {
    (R, Q), (R, P), (R, T), (R, F),
    (Q, P), (Q, T), (Q, F),
    (P, RUN), (P, T), (P, F), (P, L),
    (RUN, S), (RUN, T), (RUN, F), (RUN, L),
    (S, RUN), (S, T), (S, F), (S, L),
}  # fmt: skip
PAIRS = list(itertools.product(State, State))


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair_is_allowed_or_a_state_error(current: State, target: State) -> None:
    """Each (from, to) pair either passes or raises StateError naming current and sources."""
    if (current, target) in ALLOWED:
        states.check(current, target)
        return
    with pytest.raises(StateError) as caught:
        states.check(current, target, "move")
    assert caught.value.current == current.value
    assert caught.value.required == tuple(s.value for s in State if (s, target) in ALLOWED)
    assert caught.value.code == "wrong_state"


def test_final_states_have_no_way_out() -> None:
    """Terminated, failed and lost are final and lead nowhere."""
    assert [s for s in State if s.final] == [State.TERMINATED, State.FAILED, State.LOST]
    assert states.TRANSITIONS[State.TERMINATED] == frozenset()
    assert states.TRANSITIONS[State.FAILED] == frozenset()
    assert states.TRANSITIONS[State.LOST] == frozenset()


def test_only_what_a_host_holds_can_be_lost_with_it() -> None:
    """Provisioning, running and suspended environments are on a host; only they can be lost."""
    assert states.sources(State.LOST) == [P, RUN, S]


def test_failed_is_reachable_from_every_non_final_state() -> None:
    """Every non-final state may fail."""
    assert states.sources(State.FAILED) == [R, Q, P, RUN, S]


def test_require_names_the_verb_and_the_allowed_states() -> None:
    """A verb's precondition failure says what the verb needed."""
    with pytest.raises(StateError) as caught:
        states.require(State.QUEUED, [State.RUNNING], "suspend")
    assert str(caught.value) == "cannot suspend: state is queued, needs running"
    assert caught.value.required == ("running",)
