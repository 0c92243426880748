"""Append-only audit logs whose records are chained by hash.

Each record is one JSON line::

    {"seq": 7, "time": "...", "prev": "<hash of record 6>", "hash": "<sha256>", ...fields}

``hash`` is SHA-256 over ``prev`` and the canonical JSON of the record without
``hash``, so changing, removing or reordering any earlier line breaks every
hash after it; :func:`verify` finds the first broken record. Writers take an
exclusive ``flock`` on the file, read the last record and append, so records
from several processes never interleave or fork the chain.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{record['prev']}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: ``ok``, how many records, and the first bad one."""

    ok: bool
    records: int
    bad_seq: int | None = None
    reason: str = ""


class AuditLog:
    """One hash-chained JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, **fields: Any) -> dict[str, Any]:
        """Append one record with ``fields``; returns it with seq, time, prev, hash."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = _last_record(fd)
            record = {
                "seq": (last["seq"] + 1) if last else 1,
                "time": datetime.now(UTC).isoformat(),
                "prev": last["hash"] if last else GENESIS,
                **fields,
            }
            record["hash"] = _digest(record)
            os.write(fd, (json.dumps(record, sort_keys=True, default=str) + "\n").encode())
            return record
        finally:
            os.close(fd)  # closing releases the lock

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in order (a missing file has none)."""
        try:
            with self.path.open(encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)
        except FileNotFoundError:
            return

    def verify(self) -> Verdict:
        """Walk the chain; the first record whose hash or link is wrong fails it."""
        prev, count = GENESIS, 0
        try:
            for count, record in enumerate(self.records(), start=1):
                if record.get("seq") != count:
                    return Verdict(False, count, count, f"expected seq {count}")
                if record.get("prev") != prev:
                    return Verdict(False, count, count, "does not link to the record before")
                if record.get("hash") != _digest(record):
                    return Verdict(False, count, count, "content does not match its hash")
                prev = record["hash"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            return Verdict(False, count + 1, count + 1, f"unreadable record ({exc})")
        return Verdict(True, count)


def _last_record(fd: int) -> dict[str, Any] | None:
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return None
    chunk = 4096  # a record is far smaller; read more only when the line is longer
    while True:
        chunk = min(chunk, size)
        tail = os.pread(fd, chunk, size - chunk).rstrip(b"\n")
        if b"\n" in tail or chunk == size:
            break
        chunk *= 4
    last: dict[str, Any] = json.loads(tail.rsplit(b"\n", 1)[-1])
    return last
