"""Check a composer result against an ``expect`` record of a prompt set.

The record format is the one of ``shared/composer/dev-prompts.jsonl``:
``outcome`` (``spec``, ``clarify``, ``reject``, ``error`` or several joined by
``_or_``) and optional field checks. Field checks read the spec, or for a
clarification its draft. Beyond the shared set's fields:

- ``network_not``: network modes the answer must not have ("never internet");
- ``packages_none``: packages that must not be installed (a negated app);
- ``apps_max``: at most this many apps (nothing added that was not asked for);
- ``says``: words that must appear, case-insensitive, in what the answer tells
  the user (rationales and questions, or the reasons of a rejection);
- ``known_miss``: why the composer gets this one wrong today (the test is a
  strict xfail and the benchmark counts it as a miss).
"""

from __future__ import annotations

from typing import Any

from genos.composer import Result, compose, to_json
from genos.composer.knowledge import HostLimits, Knowledge
from genos.errors import PromptError


def run(prompt: str, kb: Knowledge, host: HostLimits) -> tuple[str, dict[str, Any] | None]:
    """The outcome word and the JSON result (None for an input error)."""
    try:
        result: Result = compose(prompt, knowledge=kb, host=host)
    except PromptError:
        return "error", None
    return result.outcome, to_json(result)


def problems(expect: dict[str, Any], outcome: str, data: dict[str, Any] | None) -> list[str]:
    """Every way the result differs from ``expect`` (empty when it matches)."""
    allowed = set(expect["outcome"].split("_or_"))
    if outcome not in allowed:
        reasons = (data or {}).get("violations") or (data or {}).get("clarifications")
        return [f"outcome {outcome} not in {sorted(allowed)}: {reasons}"]
    if data is None:
        return []
    spec = data["spec"]
    told = _told(data)
    missing = [w for w in expect.get("says", []) if w.lower() not in told]
    said = [f"the answer does not say {missing}: {told[:300]}"] if missing else []
    if outcome == "reject":
        fields = {v["field"] for v in data["violations"]}
        want = expect.get("violation_fields_any")
        if want and not fields & set(want):
            return [f"violation fields {sorted(fields)} share none of {want}", *said]
        return said
    assert spec is not None
    return _spec_problems(expect, spec) + _clarify_problems(expect, data) + said


def _told(data: dict[str, Any]) -> str:
    """Everything the answer says to the user, lower-cased."""
    parts = [v["reason"] for v in data["violations"]]
    parts += [q["question"] for q in data["clarifications"]]
    if data["spec"] is not None:
        parts += [d["rationale"] for d in data["spec"]["provenance"]["decisions"]]
    return " | ".join(parts).lower()


def _spec_problems(expect: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    checks = {
        "distribution": spec["base"]["distribution"],
        "release": spec["base"]["release"],
        "network": spec["network"]["mode"],
        "tier": spec["tier"],
        "cpus": spec["resources"]["cpus"],
        "memory_mb": spec["resources"]["memory_mb"],
        "disk_mb": spec["resources"]["disk_mb"],
        "ttl_seconds": spec["lifetime"]["ttl_seconds"],
        "idle_timeout_seconds": spec["lifetime"]["idle_timeout_seconds"],
        "protocol": spec["display"]["protocol"],
        "persistent": spec["persistence"]["mode"] == "volume",
        "encrypted": spec["persistence"]["encrypted"],
        "clipboard": spec["security"]["clipboard"],
        "window_manager": spec["display"]["window_manager"],
        "headless": spec["display"]["headless"],
    }
    for key, got in checks.items():
        if key in expect and expect[key] != got:
            out.append(f"{key}: expected {expect[key]!r}, got {got!r}")
    if "tier_in" in expect and spec["tier"] not in expect["tier_in"]:
        out.append(f"tier {spec['tier']} not in {expect['tier_in']}")
    return out + _package_problems(expect, spec) + _display_problems(expect, spec)


def _package_problems(expect: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for group in expect.get("packages_all", []):
        if not set(group) & set(spec["packages"]):
            out.append(f"none of {group} in packages {spec['packages']}")
    for name in expect.get("packages_none", []):
        if name in spec["packages"]:
            out.append(f"{name} should not be in packages {spec['packages']}")
    if "network_not" in expect and spec["network"]["mode"] in expect["network_not"]:
        out.append(f"network {spec['network']['mode']} is one of {expect['network_not']}")
    if "apps_max" in expect and len(spec["apps"]) > expect["apps_max"]:
        names = [a["name"] for a in spec["apps"]]
        out.append(f"{len(names)} apps {names}, at most {expect['apps_max']} expected")
    return out


def _display_problems(expect: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if "resolution" in expect:
        res = spec["display"]["resolution"]
        if f"{res['width']}x{res['height']}" != expect["resolution"]:
            out.append(f"resolution {res} != {expect['resolution']}")
    if "allow" in expect:
        got_allow = [[a["cidr"], a["ports"]] for a in spec["network"]["allow"]]
        if got_allow != expect["allow"]:
            out.append(f"allow {got_allow} != {expect['allow']}")
    return out


def _clarify_problems(expect: dict[str, Any], data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if "clarify_fields_any" in expect:
        fields = {q["field"] for q in data["clarifications"]}
        if not fields & set(expect["clarify_fields_any"]):
            out.append(
                f"clarification fields {sorted(fields)} share none of "
                f"{expect['clarify_fields_any']}"
            )
    return out
