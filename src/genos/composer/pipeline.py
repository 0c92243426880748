"""The composer's pipeline, one stage per line of :func:`compose`.

normalise (+ spelling) -> language (clauses, negation) -> extract -> intent
-> resolve (names, tasks) -> decide + validate -> result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genos.composer.decide import Decider
from genos.composer.entities import Entities
from genos.composer.extract import extract
from genos.composer.intent import Intent, classify, computing_nouns
from genos.composer.knowledge import HostLimits, Knowledge, default_knowledge
from genos.composer.language import read
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
COMPOSER_ID = "genos-rules/2"
_EXAMPLE = (
    "describe the computer you need, e.g. 'Debian with Firefox' or 'something to edit photos'"
)
_UNRESOLVED = (
    "no program in Debian fits it well enough to install; name one if you need it "
    "(e.g. 'with gimp')."
)


@dataclass(frozen=True)
class Reading:
    """The request after the front stages: folded text, entities and intent."""

    norm: Normalised
    ent: Entities
    intent: Intent


def front(text: str, kb: Knowledge) -> Reading:
    """Normalise, respell, read, extract and classify ``text`` (no decisions yet).

    Raises:
        PromptError: the text is empty, too long, not text, or has control characters.
    """
    norm, corrections = kb.speller().respell(normalise(text))
    ent = extract(norm, read(norm.text, names(norm, kb)), kb)
    ent.corrections = corrections
    host_access = bool(ent.refusals.violations)
    return Reading(norm, ent, classify(norm, signals(ent, norm), bool(ent.tasks), host_access))


def names(norm: Normalised, kb: Knowledge) -> list[tuple[int, int]]:
    """Character spans of the catalog phrases in ``norm`` (names are read whole)."""
    matches, _ = kb.matcher.scan_positions(norm.tokens)
    return [
        (norm.span(m.start)[0], norm.span(m.start + m.length - 1)[1])
        for m in matches
        if m.length > 1
    ]


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
    seen = front(text, kb)
    if not seen.intent.request:
        return Rejection((Violation("prompt", f"{seen.intent.reason}; {_EXAMPLE}"),))
    decider = Decider(seen.ent, answers or {})
    base = decider.base()
    task_only = seen.intent.kind == "task"
    resolved = Resolver(kb, base["release"], answers or {}).run(seen.ent, task_only=task_only)
    if task_only and not (resolved.apps or resolved.questions):
        return _no_software(resolved, seen.norm)
    return _result(seen.norm, decider, resolved, base, host or HostLimits.from_host())


def _no_software(resolved: Resolved, norm: Normalised) -> Rejection:
    """A request that is only a task nothing in Debian fits: say so, with its words."""
    phrases = "', '".join(resolved.unresolved) or norm.text[:60]
    reason = (
        f"'{phrases}': no program in Debian fits this, and nothing else in it names a "
        f"computer; {_EXAMPLE}"
    )
    return Rejection((Violation("prompt", reason),))


def signals(ent: Entities, norm: Normalised) -> list[str]:
    """The words of a request that name a computer or something GenOS provides.

    Args:
        ent: what extraction found.
        norm: the folded request.

    Returns:
        Quotes of the request, first the environment nouns ("a debian box").
    """
    words = computing_nouns(norm.text, norm.tokens)
    words += [m.phrase for m in ent.apps] + [w for _, w in ent.explicit] + ent.candidates
    words += list(ent.excluded.values()) + list(ent.network.values())
    words += [v for k, v in ent.evidence.items() if k != "idle"]
    maybe = [ent.browse_web, ent.tier_hint, ent.remote_client, ent.user_image, ent.persist]
    maybe += [ent.ephemeral, ent.refusals.device]
    words += [w for w in maybe if w]
    words += [reason for _, reason in ent.refusals.violations]
    return [w for w in words if w]


def _result(
    norm: Normalised, decider: Decider, res: Resolved, base: dict[str, str], host: HostLimits
) -> Result:
    display = _display(decider.ent, decider)
    decider.installs_nothing(res)
    for phrase in res.unresolved:
        decider.note("apps", "none", f"'{phrase}': {_UNRESOLVED}")
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
    protocol = decider.protocol()
    out: dict[str, Any] = {"protocol": protocol, "headless": ent.headless}
    decider.note(
        "display.protocol",
        protocol,
        "You asked for it."
        if ent.protocol
        else "VNC streams to the browser with nothing to install."
        if protocol == "vnc"
        else f"'{ent.refusals.device}' reaches a VM through a SPICE viewer's USB redirection.",
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
