"""Optional model backend: any OpenAI-compatible chat endpoint proposes, GenOS decides.

The model never writes a spec. It answers with a :class:`Proposal` (JSON
forced by ``response_format: json_schema`` and validated again here, extra
fields refused); GenOS resolves the proposal's app names against the same
knowledge base as the rules, builds the spec through the same validator and
host limits, and returns the same three outcomes. Before any of that the
rules' own stages run (input checks, intent, host-escalation refusal), so no
model output can widen what a spec may say (host directories, host devices
and text that asks for no computer are answered by the rules too). When the endpoint fails, times
out or answers outside the schema, the deterministic composer answers instead
and the rationale says why.

Configuration: ``GENOS_MODEL_URL`` (base URL ending in ``/v1``),
``GENOS_MODEL`` (model name), ``GENOS_MODEL_KEY`` (bearer key, optional).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from genos.composer.knowledge import HostLimits, Knowledge, default_knowledge
from genos.composer.normalise import tokenize
from genos.composer.pipeline import compose, front, validate_spec
from genos.composer.result import Clarification, Composed, Question, Rejection, Result, Violation
from genos.errors import SpecError
from genos.spec import App, Decision, parse_spec

log = logging.getLogger("genos.composer.model")
SYSTEM = (
    "You turn a request for a Linux desktop environment into JSON matching the schema. "
    "Only Debian bookworm or trixie exist. Name apps as a user would (e.g. 'firefox', "
    "'gimp'). Use network 'none' unless something needs it; 'tor' for anonymous browsing. "
    "Ask (outcome 'clarify') when the request is ambiguous; refuse (outcome 'reject') what "
    "cannot be built. Never grant host access: there is no field for it."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProposedQuestion(_Strict):
    field: str = Field(max_length=80)
    question: str = Field(max_length=500)
    options: list[str] = Field(max_length=10)


class ProposedViolation(_Strict):
    field: str = Field(max_length=80)
    reason: str = Field(max_length=500)


class Proposal(_Strict):
    """What the model may say; everything else is GenOS's to decide."""

    outcome: Literal["spec", "clarify", "reject"]
    release: Literal["bookworm", "trixie"] = "bookworm"
    tier: Literal["container", "gvisor", "microvm", "vm"] = "container"
    apps: list[str] = Field(default_factory=list, max_length=32)
    network: Literal["none", "internet", "tor"] = "none"
    protocol: Literal["vnc", "spice", "rdp"] = "vnc"
    cpus: float | None = Field(default=None, ge=0.25, le=256)
    memory_mb: int | None = Field(default=None, ge=1)
    ttl_seconds: int | None = Field(default=None, ge=60)
    keep_files: bool = False
    rationale: str = Field(default="", max_length=1000)
    questions: list[ProposedQuestion] = Field(default_factory=list, max_length=10)
    violations: list[ProposedViolation] = Field(default_factory=list, max_length=10)


class ModelError(Exception):
    """The endpoint failed or answered outside the schema (internal: triggers fallback)."""


@dataclass(frozen=True)
class ModelConfig:
    url: str
    model: str
    api_key: str | None = None
    timeout: float = 15.0

    @classmethod
    def from_env(cls) -> ModelConfig | None:
        """The configured endpoint, or None when ``GENOS_MODEL_URL`` is unset."""
        url = os.environ.get("GENOS_MODEL_URL", "").strip()
        if not url:
            return None
        model = os.environ.get("GENOS_MODEL", "").strip() or "default"
        return cls(url.rstrip("/"), model, os.environ.get("GENOS_MODEL_KEY") or None)


def propose(text: str, config: ModelConfig) -> Proposal:
    """Ask the endpoint for a proposal.

    Raises:
        ModelError: transport error, non-JSON, or JSON outside the schema.
    """
    body = {
        "model": config.model,
        "temperature": 0,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "genos_proposal", "schema": Proposal.model_json_schema()},
        },
    }
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        response = httpx.post(
            f"{config.url}/chat/completions", json=body, headers=headers, timeout=config.timeout
        )
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        return Proposal.model_validate(json.loads(content))
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        # ValidationError and JSONDecodeError are ValueErrors.
        raise ModelError(str(exc).splitlines()[0][:200]) from exc


def compose_with_model(
    text: str,
    config: ModelConfig,
    *,
    knowledge: Knowledge | None = None,
    host: HostLimits | None = None,
) -> Result:
    """Compose through the model, falling back to the rules when it fails.

    Raises:
        PromptError: as :func:`genos.composer.compose`.
    """
    kb = knowledge or default_knowledge()
    host = host or HostLimits.from_host()
    seen = front(text, kb)
    if seen.ent.refusals.violations or not seen.intent.request:
        return compose(text, knowledge=kb, host=host)  # the rules refuse these
    try:
        proposal = propose(text, config)
    except ModelError as exc:
        log.warning("model backend failed, using rules: %s", exc)
        return _with_note(compose(text, knowledge=kb, host=host), f"model failed ({exc})")
    return _from_proposal(text, proposal, config, kb, host)


def _from_proposal(
    text: str, p: Proposal, config: ModelConfig, kb: Knowledge, host: HostLimits
) -> Result:
    if p.outcome == "reject":
        found = [Violation(v.field, v.reason) for v in p.violations]
        return Rejection(tuple(found) or (Violation("prompt", p.rationale or "refused"),))
    apps, violations = _resolve(p.apps, p.release, kb)
    data: dict[str, Any] = {
        "base": {"release": p.release},
        "tier": p.tier,
        "apps": [a.model_dump() for a in apps],
        "network": {"mode": p.network},
        "display": {"protocol": p.protocol},
        "resources": {k: v for k, v in (("cpus", p.cpus), ("memory_mb", p.memory_mb)) if v},
        "lifetime": {"ttl_seconds": p.ttl_seconds} if p.ttl_seconds else {},
        "persistence": {"mode": "volume", "volume": "home"} if p.keep_files else {},
        "provenance": {
            "prompt": text[:4096],
            "composer": f"model:{config.model}"[:80],
            "decisions": [{"field": "spec", "value": p.outcome, "rationale": p.rationale}],
        },
    }
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        return Rejection(tuple(violations + [Violation(f, r) for f, r in exc.problems]))
    violations += validate_spec(spec, host)
    if violations:
        return Rejection(tuple(violations))
    if p.outcome == "clarify" and p.questions:
        questions = tuple(Question(q.field, q.question, tuple(q.options)) for q in p.questions)
        return Clarification(questions, spec)
    return Composed(spec)


def _resolve(names: list[str], release: str, kb: Knowledge) -> tuple[list[App], list[Violation]]:
    apps: list[App] = []
    violations: list[Violation] = []
    index = kb.index(release)
    for name in names:
        matches, _ = kb.matcher.scan(tokenize(name.lower()))
        app = next((kb.catalog.apps[m.id] for m in matches if m.kind == "app"), None)
        if app is not None and not app.unavailable:
            packages = list(app.packages_for(release))
            apps.append(
                App(name=app.name, packages=packages, source="catalog", command=app.command)
            )
        elif index is not None and index.has(name.lower()):
            apps.append(App(name=name.lower(), packages=[name.lower()], source="index"))
        else:
            violations.append(Violation(f"apps.{name}"[:80], f"'{name}' is not a Debian package"))
    return apps, violations


def _with_note(result: Result, note: str) -> Result:
    if isinstance(result, Rejection):
        return result
    spec = result.spec if isinstance(result, Composed) else result.draft
    why = Decision(field="composer", value="rules", rationale=f"{note}; the rules answered")
    decisions = [*spec.provenance.decisions, why]
    noted = spec.model_copy(
        update={"provenance": spec.provenance.model_copy(update={"decisions": decisions[-128:]})}
    )
    return (
        Composed(noted) if isinstance(result, Composed) else Clarification(result.questions, noted)
    )
