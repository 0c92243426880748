"""How registry values look over HTTP: environments, events, the host."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from genos.orchestrator.capacity import HostStatus
from genos.orchestrator.capacity import Usage as Totals
from genos.orchestrator.pools import PoolStatus
from genos.orchestrator.records import Environment, Event
from genos.runtime.driver import Usage

TCG_NOTE = "software emulation (TCG): the VM is not a hardware isolation boundary on this host"


def summary(spec: dict[str, Any]) -> str:
    """One line in words from a spec's JSON: apps, network, isolation."""
    apps = ", ".join(app["name"] for app in spec.get("apps", ())) or "a desktop"
    return f"{apps}; network {spec['network']['mode']}; {spec['tier']}"


def tier_note(tier: str, accelerator: str | None) -> str | None:
    """A warning where the tier's promise is weaker on this host (VMs under TCG)."""
    if tier in {"vm", "microvm"} and accelerator == "tcg":
        return TCG_NOTE
    return None


def with_tier_note(spec: dict[str, Any], accelerator: str | None) -> dict[str, Any]:
    """``spec`` (JSON) whose ``tier`` decision says so when this host cannot keep the
    VM promise (TCG): the composer must not claim hardware isolation it lacks."""
    note = tier_note(str(spec.get("tier")), accelerator)
    decisions = spec.get("provenance", {}).get("decisions", [])
    if note is None or not any(d.get("field") == "tier" for d in decisions):
        return spec
    marked = [
        {**d, "rationale": f"{d['rationale']} On this host: {note}."}
        if d.get("field") == "tier" and note not in d.get("rationale", "")
        else d
        for d in decisions
    ]
    return {**spec, "provenance": {**spec["provenance"], "decisions": marked}}


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def environment(
    env: Environment,
    base_url: str,
    *,
    usage: Usage | None = None,
    accelerator: str | None = None,
) -> dict[str, Any]:
    """The JSON of an environment (``url`` is where its desktop opens in a browser).

    The spec is the stored JSON as it is (validated when it was stored), so a
    page of a thousand environments costs no model validation.
    """
    spec = json.loads(env.spec_json)  # stored by ``spec.dump``: ``packages`` included
    return {
        "id": env.id,
        "owner": env.owner,
        "name": env.name,
        "state": env.state.value,
        "url": f"{base_url}/#/env/{env.id}",
        "spec": spec,
        "summary": summary(spec),
        "created": _when(env.created),
        "updated": _when(env.updated),
        "started": _when(env.started),
        "failure_reason": env.failure_reason,
        "queue_position": env.queue_position,
        "priority": env.priority,
        "cpus": env.cpus,
        "memory_mb": env.memory_mb,
        "node": env.host,
        "pool": env.pool_id,
        "claimed": _when(env.claimed),
        "replaces": env.replaces,
        "replaced_by": env.replaced_by,
        "usage": None
        if usage is None
        else {
            "cpu_seconds": usage.cpu_seconds,
            "memory_bytes": usage.memory_bytes,
            "pids": usage.pids,
        },
        "tier_note": tier_note(spec["tier"], accelerator),
    }


def event(ev: Event) -> dict[str, Any]:
    """The JSON of an event."""
    return {
        "env_id": ev.env_id,
        "seq": ev.seq,
        "time": ev.time.isoformat(),
        "type": ev.type.value,
        "state": ev.state.value,
        "message": ev.message,
        "data": ev.data,
    }


def _usage(usage: Totals) -> dict[str, Any]:
    return {"environments": usage.environments, "cpus": usage.cpus, "memory_mb": usage.memory_mb}


def host(status: HostStatus, *, accelerator: str | None, runtimes: list[str]) -> dict[str, Any]:
    """The JSON of ``GET /v1/host``: capacity, requests, limits and real use side by side."""
    cap, free, measured = status.capacity, status.free, status.measured
    return {
        "host": status.name,
        "capacity": {
            "cpus": cap.cpus,
            "memory_mb": cap.memory_mb,
            "cpu_overcommit": cap.cpu_overcommit,
            "memory_overcommit": cap.memory_overcommit,
            "allocatable_cpus": cap.allocatable_cpus,
            "allocatable_memory_mb": cap.allocatable_memory_mb,
        },
        "requested": _usage(status.used),
        "limits": _usage(status.limits),
        "used": {
            "cpus": measured.cpus if measured else None,
            "memory_mb": measured.memory_mb if measured else None,
        },
        "free": {"cpus": free.cpus, "memory_mb": free.memory_mb},
        "memory_pressure": status.pressure,
        "queue": [
            {
                "env_id": q.env_id,
                "owner": q.owner,
                "position": q.position,
                "priority": q.priority,
                "cpus": q.cpus,
                "memory_mb": q.memory_mb,
                "since": q.since.isoformat(),
            }
            for q in status.queue
        ],
        "accelerator": accelerator,
        "runtimes": runtimes,
    }


def pool(status: PoolStatus) -> dict[str, Any]:
    """The JSON of a warm pool."""
    found = status.pool
    spec = json.loads(found.spec_json)
    return {
        "id": found.id,
        "digest": found.digest,
        "size": found.size,
        "ready": status.ready,
        "starting": status.starting,
        "prompt": found.prompt,
        "summary": summary(spec),
        "spec": spec,
        "set_by": found.set_by,
        "created": _when(found.created),
        "updated": _when(found.updated),
    }
