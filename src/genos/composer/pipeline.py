"""The composer's pipeline, one stage per line of :func:`compose`.

normalise -> intent -> extract -> resolve -> decide + validate -> result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from genos.composer.decide import Decider
from genos.composer.extract import Entities, extract
from genos.composer.intent import classify
from genos.composer.knowledge import HostLimits, Knowledge, default_knowledge
from genos.composer.normalise import Normalised, normalise
from genos.composer.resolve import Resolved, Resolver
from genos.composer.result import (
    Clarification,
    Composed,
    Rejection,
    Result,
    Violation,
)
from genos.errors import SpecError
from genos.spec import EnvironmentSpec, parse_spec

log = logging.getLogger("genos.composer")
COMPOSER_ID = "genos-rules/1"


def compose(
    text: str,
    *,
    answers: Mapping[str, str] | None = None,
    knowledge: Knowledge | None = None,
    host: HostLimits | None = None,
) -> Result:
    """Turn a request in plain words into a spec, a clarification or a rejection.

    Args:
        text: what the user typed.
        answers: replies to earlier clarifications, ``{field: option}``.
        knowledge: catalog and package index (default: shipped catalog, cached index).
        host: the most one environment may get (default: read from this host).

    Returns:
        Exactly one of :class:`Composed`, :class:`Clarification`, :class:`Rejection`.

    Raises:
        PromptError: the text is empty, too long, not text, or has control characters.
    """
    kb = knowledge or default_knowledge()
    norm = normalise(text)
    intent = classify(norm, kb.matcher)
    if not intent.request:
        return Rejection(
            (
                Violation(
                    "prompt",
                    "this does not ask for an environment; describe "
                    "the computer you need, e.g. 'Debian with Firefox'",
                ),
            )
        )
    ent = extract(norm, kb.matcher)
    decider = Decider(ent, answers or {})
    base = decider.base()
    resolved = Resolver(kb, base["release"], answers or {}).run(ent)
    return _result(norm, decider, resolved, base, host or HostLimits.from_host())


def _result(
    norm: Normalised, decider: Decider, res: Resolved, base: dict[str, str], host: HostLimits
) -> Result:
    display = _display(decider.ent, decider)
    decider.installs_nothing(res)
    spec_data: dict[str, Any] = {
        "base": base,
        "tier": decider.tier(display["protocol"], res.min_tier).value,
        "apps": [] if decider.ent.user_image else [app.model_dump() for app in res.apps],
        "display": display,
        "network": decider.network(res),
        "resources": decider.resources(host),
        "lifetime": decider.lifetime(),
        "persistence": decider.persistence(),
        "security": decider.security(),
    }
    violations = [*res.violations, *decider.violations]
    spec_data["provenance"] = {
        "prompt": norm.original[:4096],
        "composer": COMPOSER_ID,
        "decisions": [d.model_dump() for d in [*res.decisions, *decider.why][:128]],
    }
    try:
        spec = parse_spec(spec_data)
    except SpecError as exc:
        violations += [Violation(field, reason) for field, reason in exc.problems]
        spec = None
    if violations or spec is None:
        return Rejection(tuple(violations))
    questions = [*decider.questions, *res.questions]
    if questions:
        return Clarification(tuple(questions), spec)
    log.debug("composed %s", spec.packages)
    return Composed(spec)


def _display(ent: Entities, decider: Decider) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": ent.protocol or "vnc", "headless": ent.headless}
    decider.note(
        "display.protocol",
        out["protocol"],
        "You asked for it."
        if ent.protocol
        else "VNC streams to the browser with nothing to install.",
    )
    if ent.resolution:
        out["resolution"] = {"width": ent.resolution[0], "height": ent.resolution[1]}
    if ent.window_manager:
        out["window_manager"] = ent.window_manager[0]
    return out


def validate_spec(spec: EnvironmentSpec, host: HostLimits | None = None) -> list[Violation]:
    """Host-dependent checks of a spec that came from a file or a client, not the composer."""
    host = host or HostLimits.from_host()
    out = []
    if spec.resources.memory_mb > host.memory_mb:
        out.append(
            Violation(
                "resources.memory_mb",
                f"{spec.resources.memory_mb} MB is more "
                f"than this host can ever give ({host.memory_mb} MB)",
            )
        )
    if spec.resources.disk_mb > host.disk_mb:
        out.append(
            Violation(
                "resources.disk_mb",
                f"{spec.resources.disk_mb} MB is more than this host's disk ({host.disk_mb} MB)",
            )
        )
    return out
