"""The prompt sets: the 30 shared development prompts and our own wordings."""

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
    return [pytest.param(c["prompt"], c["expect"], id=c["prompt"][:60]) for c in _load(path)]


DEV = _cases(SHARED)
OURS = _cases(HERE / "prompts.jsonl")


def test_prompt_sets_are_big_enough() -> None:
    """The shared set has its 30 prompts and ours adds at least 70 more."""
    assert SHARED.exists(), f"shared prompt set missing at {SHARED}"
    assert len(DEV) == 30
    assert len(OURS) >= 70
    ours = {c.values[0] for c in OURS}
    assert not ours & {c.values[0] for c in DEV}, "our prompts must be other wordings"


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
