"""Property tests: any text gives exactly one outcome, every spec fits the schema."""

from __future__ import annotations

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genos.composer import Clarification, Composed, Rejection, compose, to_json
from genos.composer.knowledge import HostLimits, Knowledge
from genos.errors import PromptError
from genos.spec import json_schema

VALIDATOR = jsonschema.Draft202012Validator(json_schema())
WORDS = st.sampled_from(
    """
    i need a debian desktop with firefox gimp tor browser offline internet 4 cores 8gb
    ram for 2 hours over rdp spice vnc malware keep my files encrypted windows ubuntu
    trixie bookworm 1920x1080 headless xfce allow 10.0.0.0/8 port 443 mount the host
    privileged browser pdf reader vs code fzxqv anonymous clipboard and , no network
    """.split()
)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check(text: str, kb: Knowledge, host: HostLimits) -> None:
    try:
        result = compose(text, knowledge=kb, host=host)
    except PromptError:
        return
    assert isinstance(result, Composed | Clarification | Rejection)
    data = to_json(result)
    assert data["outcome"] == result.outcome
    if isinstance(result, Rejection):
        assert data["spec"] is None
        assert len(data["violations"]) >= 1
        assert data["clarifications"] == []
    else:
        VALIDATOR.validate(data["spec"])
        assert data["violations"] == []
        assert (data["clarifications"] != []) == isinstance(result, Clarification)


@SETTINGS
@given(text=st.text(max_size=300))
def test_any_text_has_exactly_one_outcome(text: str, kb: Knowledge, host: HostLimits) -> None:
    """Arbitrary unicode is a PromptError or exactly one outcome, and specs validate."""
    _check(text, kb, host)


@SETTINGS
@given(words=st.lists(WORDS, min_size=1, max_size=25))
def test_request_like_text_has_exactly_one_outcome(
    words: list[str], kb: Knowledge, host: HostLimits
) -> None:
    """Shuffled request vocabulary yields exactly one outcome whose spec validates."""
    _check(" ".join(words), kb, host)
