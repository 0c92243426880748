"""Intent: a request for a computer, told from anything else with a reason."""

from __future__ import annotations

import pytest

from genos.composer import Composed, Rejection, compose
from genos.composer.intent import classify, computing_nouns
from genos.composer.knowledge import HostLimits, Knowledge
from genos.composer.normalise import normalise


@pytest.mark.parametrize(
    ("text", "kind", "words"),
    [
        ("what is the capital of australia", "question", "reads as a question"),
        ("what is GenOS?", "about-genos", "question about GenOS"),
        ("how do I delete an environment?", "about-genos", "`genos --help`"),
        ("write me a poem about the sea", "content", "written, explained or worked out"),
        ("translate 'good night' into French", "content", "written, explained"),
        ("book me a flight to Lisbon", "errand", "an errand"),
        ("thanks!", "greeting", "a greeting"),
    ],
)
def test_what_a_text_is_instead(text: str, kind: str, words: str) -> None:
    """Questions, GenOS questions, content, errands and greetings are named, quoting the text."""
    intent = classify(normalise(text), [], has_task=False)
    assert (intent.request, intent.kind) == (False, kind)
    assert words in intent.reason
    assert intent.reason.startswith(f"'{normalise(text).text[:6]}")


@pytest.mark.parametrize(
    "text",
    ["can you give me a linux box with python?", "is it possible to get firefox with tor?"],
)
def test_a_request_frame_turns_a_question_into_a_request(text: str) -> None:
    """'can you give me', 'is it possible to get' ask for something even as questions."""
    assert classify(normalise(text), ["python"], has_task=False).request is True


def test_host_access_is_always_answered_as_a_request() -> None:
    """Text asking for the host is a request, so that the refusal says why."""
    intent = classify(normalise("what if you mount the host's disk"), [], False, host_access=True)
    assert (intent.request, intent.kind) == (True, "environment")


@pytest.mark.parametrize(
    ("text", "nouns"),
    [
        ("a debian box with vim", ["debian", "box"]),
        ("I need a box of chocolates", []),
        ("my washing machine is broken", []),
        ("a gym session and a linux machine", ["linux", "machine"]),
    ],
)
def test_computing_nouns_skip_other_senses(text: str, nouns: list[str]) -> None:
    """'box of', 'washing machine', 'gym session' are not environments."""
    norm = normalise(text)
    assert computing_nouns(norm.text, norm.tokens) == nouns


@pytest.mark.network
@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("I need a box of chocolates for my mum", "chocolates"),
        ("identify plants from photos", "identify plants from photos"),
    ],
)
def test_a_task_nothing_fits_is_refused_with_its_words(
    text: str, phrase: str, kb: Knowledge, host: HostLimits
) -> None:
    """A request that is only a task no program fits is refused, naming the task."""
    result = compose(text, knowledge=kb, host=host)
    assert isinstance(result, Rejection)
    assert [v.field for v in result.violations] == ["prompt"]
    assert f"'{phrase}': no program in Debian fits this" in result.violations[0].reason


@pytest.mark.network
def test_a_task_alone_is_a_request(kb: Knowledge, host: HostLimits) -> None:
    """'draw circuit diagrams' needs no computer word: the task finds the software."""
    result = compose("trace my family tree", knowledge=kb, host=host)
    assert isinstance(result, Composed)
    assert result.spec.packages == ["gramps"]
