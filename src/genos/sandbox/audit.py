"""Audit record of sandbox decisions: created, policy applied, denied, destroyed.

Records go to a hash-chained, append-only log (:class:`genos.audit.AuditLog`)
at ``<data dir>/audit/sandbox.jsonl``; each carries ``env`` (the environment
id), ``event`` and the event's own fields. ``genos audit verify`` checks the
chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genos.audit import AuditLog
from genos.paths import data_dir


def audit_path() -> Path:
    return data_dir() / "audit" / "sandbox.jsonl"


def record(env_id: str, event: str, **fields: Any) -> None:
    """Append one record for ``env_id`` (never rewrites earlier lines)."""
    AuditLog(audit_path()).append(env=env_id, event=event, **fields)


def read(env_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Records in order, optionally only those of one environment."""
    for entry in AuditLog(audit_path()).records():
        if env_id is None or entry.get("env") == env_id:
            yield entry
