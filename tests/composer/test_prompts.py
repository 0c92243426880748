"""The prompt sets: the 30 shared development prompts and our own wordings.

``prompts.jsonl`` holds the first 90 of our wordings; ``requests.jsonl`` the
larger set written for the language layer (terse, chatty, misspelt,
non-native, long, compound, with negations in every position).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from genos.composer.knowledge import HostLimits, Knowledge
from tests.composer.expect import problems, run

HERE = Path(__file__).parent
SHARED = HERE.parents[2] / "shared" / "composer" / "dev-prompts.jsonl"


def _load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def _cases(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [_case(c) for c in _load(path)]


def _case(record: dict[str, Any]) -> Any:
    """One prompt; a ``known_miss`` (the composer's, said why) is a strict xfail."""
    miss = record["expect"].get("known_miss")
    marks = [pytest.mark.xfail(reason=miss, strict=True)] if miss else []
    return pytest.param(record["prompt"], record["expect"], id=record["prompt"][:60], marks=marks)


DEV = _cases(SHARED)
OURS = _cases(HERE / "prompts.jsonl")
REQUESTS = _cases(HERE / "requests.jsonl")


def test_prompt_sets_are_big_enough() -> None:
    """The shared set has its 30 prompts and ours adds at least 70 more."""
    assert SHARED.exists(), f"shared prompt set missing at {SHARED}"
    assert len(DEV) == 30
    assert len(OURS) >= 70
    ours = {c.values[0] for c in OURS}
    assert not ours & {c.values[0] for c in DEV}, "our prompts must be other wordings"


def test_request_set_is_big_and_new() -> None:
    """The request set has at least 300 requests, none repeated and none from the other sets."""
    requests = [c.values[0] for c in REQUESTS]
    assert len(requests) >= 300
    assert len(set(requests)) == len(requests)
    assert not set(requests) & {c.values[0] for c in [*DEV, *OURS]}


@pytest.mark.network
@pytest.mark.parametrize(("prompt", "expect"), DEV)
def test_dev_prompt(prompt: str, expect: dict[str, Any], kb: Knowledge, host: HostLimits) -> None:
    """A shared development prompt gets an answer with every field a right answer has."""
    outcome, data = run(prompt, kb, host)
    assert problems(expect, outcome, data) == []


@pytest.mark.network
@pytest.mark.parametrize(("prompt", "expect"), OURS)
def test_our_prompt(prompt: str, expect: dict[str, Any], kb: Knowledge, host: HostLimits) -> None:
    """One of our own wordings gets an answer with every field a right answer has."""
    outcome, data = run(prompt, kb, host)
    assert problems(expect, outcome, data) == []


@pytest.mark.network
@pytest.mark.parametrize(("prompt", "expect"), REQUESTS)
def test_request(prompt: str, expect: dict[str, Any], kb: Knowledge, host: HostLimits) -> None:
    """A request of the larger set gets an answer with every field a right answer has."""
    outcome, data = run(prompt, kb, host)
    assert problems(expect, outcome, data) == []
