"""What the composer answers: exactly one of a spec, a clarification or a rejection.

:func:`to_json` gives the stable shape tools rely on (``genos compose --json``,
``POST /v1/compose``)::

    {"outcome": "spec" | "clarify" | "reject",
     "spec": {...} | null,          # for "clarify": the draft the defaults give
     "clarifications": [{"field", "question", "options", "default"}],
     "violations": [{"field", "reason"}]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from genos.spec import EnvironmentSpec, dump

EXIT_CODES = {"spec": 0, "clarify": 3, "reject": 4}


@dataclass(frozen=True)
class Question:
    """One ambiguity: the spec field it decides, a question, and concrete options."""

    field: str
    question: str
    options: tuple[str, ...]
    default: str | None = None


@dataclass(frozen=True)
class Violation:
    """One constraint the request breaks: the field and why."""

    field: str
    reason: str


@dataclass(frozen=True)
class Composed:
    spec: EnvironmentSpec
    outcome: Literal["spec"] = "spec"


@dataclass(frozen=True)
class Clarification:
    questions: tuple[Question, ...]
    draft: EnvironmentSpec
    outcome: Literal["clarify"] = "clarify"


@dataclass(frozen=True)
class Rejection:
    violations: tuple[Violation, ...]
    outcome: Literal["reject"] = "reject"


Result = Composed | Clarification | Rejection


def to_json(result: Result) -> dict[str, Any]:
    """The stable JSON shape of a composer result."""
    spec: dict[str, Any] | None = None
    if isinstance(result, Composed):
        spec = dump(result.spec)
    elif isinstance(result, Clarification):
        spec = dump(result.draft)
    return {
        "outcome": result.outcome,
        "spec": spec,
        "clarifications": [
            {
                "field": q.field,
                "question": q.question,
                "options": list(q.options),
                "default": q.default,
            }
            for q in getattr(result, "questions", ())
        ],
        "violations": [
            {"field": v.field, "reason": v.reason} for v in getattr(result, "violations", ())
        ],
    }
