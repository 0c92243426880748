"""The hash-chained audit log: appends, verification, tampering, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

from genos.audit import GENESIS, AuditLog


def _write_many(path: str, writer: int) -> None:
    log = AuditLog(Path(path))
    for i in range(50):
        log.append(actor=f"w{writer}", action="test", n=i)


def test_records_chain_from_genesis(tmp_path: Path) -> None:
    """Each record links to the one before by hash, starting at the genesis hash."""
    log = AuditLog(tmp_path / "a.jsonl")
    first = log.append(actor="admin", action="login", source="127.0.0.1")
    second = log.append(actor="admin", action="create", target="env1")
    assert (first["seq"], first["prev"]) == (1, GENESIS)
    assert (second["seq"], second["prev"]) == (2, first["hash"])
    assert log.verify().ok is True
    assert log.verify().records == 2


def _rewrite(path: Path, edit: int, change: dict[str, object] | None) -> None:
    lines = path.read_text().splitlines()
    if change is None:
        del lines[edit]
    else:
        record = json.loads(lines[edit])
        record.update(change)
        lines[edit] = json.dumps(record, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")


def test_records_longer_than_the_tail_read_still_chain(tmp_path: Path) -> None:
    """A record far longer than the 4 KiB tail read is still found as the last one."""
    log = AuditLog(tmp_path / "a.jsonl")
    log.append(action="short")
    long = log.append(action="long", detail="x" * 50_000)
    after = log.append(action="after")
    assert after["prev"] == long["hash"]
    assert after["seq"] == 3
    assert log.verify().ok


def test_tampering_is_found_at_the_changed_record(tmp_path: Path) -> None:
    """Editing a field of record 3 makes verify fail at record 3."""
    log = AuditLog(tmp_path / "a.jsonl")
    for i in range(5):
        log.append(actor="u", action="act", n=i)
    _rewrite(log.path, 2, {"actor": "mallory"})
    verdict = log.verify()
    assert (verdict.ok, verdict.bad_seq, verdict.reason) == (
        False,
        3,
        "content does not match its hash",
    )


def test_removed_record_breaks_the_chain(tmp_path: Path) -> None:
    """Deleting record 2 is found at the record that took its place."""
    log = AuditLog(tmp_path / "a.jsonl")
    for i in range(4):
        log.append(actor="u", action="act", n=i)
    _rewrite(log.path, 1, None)
    verdict = log.verify()
    assert (verdict.ok, verdict.bad_seq) == (False, 2)


def test_concurrent_processes_keep_one_chain(tmp_path: Path) -> None:
    """Four processes appending 50 records each leave one valid chain of 200."""
    path = tmp_path / "a.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    verdict = AuditLog(path).verify()
    assert (verdict.ok, verdict.records) == (True, 200)


def test_cli_verify_reports_and_exits_nonzero_on_tampering(tmp_path: Path) -> None:
    """`genos audit verify` exits 0 on an intact log and 1 naming the bad record."""
    log = AuditLog(tmp_path / "audit" / "api.jsonl")
    for i in range(3):
        log.append(actor="u", action="act", n=i)
    env = {"GENOS_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "genos", "audit", "verify"]
    done = subprocess.run(run, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "api.jsonl: 3 records, chain intact" in done.stdout
    _rewrite(log.path, 0, {"n": 99})
    done = subprocess.run(run, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "api.jsonl: record 1: content does not match its hash" in done.stderr
