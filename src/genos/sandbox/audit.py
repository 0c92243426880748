"""Append-only audit record of sandbox decisions, one JSON object per line.

Each record: ``time`` (UTC ISO 8601), ``env`` (environment id), ``event``
(``created``, ``policy_applied``, ``denied``, ``destroyed``, ...), and the
event's own fields. The file is opened with ``O_APPEND`` for every write so
records from several processes never interleave mid-line.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genos.paths import data_dir

_LOCK = threading.Lock()


def audit_path() -> Path:
    return data_dir() / "audit" / "sandbox.jsonl"


def record(env_id: str, event: str, **fields: Any) -> None:
    """Append one record for ``env_id`` (never rewrites earlier lines)."""
    entry = {"time": datetime.now(UTC).isoformat(), "env": env_id, "event": event, **fields}
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
    path = audit_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _LOCK:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def read(env_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Records in order, optionally only those of one environment."""
    try:
        with audit_path().open(encoding="utf-8") as fh:
            for line in fh:
                entry: dict[str, Any] = json.loads(line)
                if env_id is None or entry.get("env") == env_id:
                    yield entry
    except FileNotFoundError:
        return
