"""Which processes of an environment still run, and waiting until none does.

A pid alone is not a process: once one exits, its number may be given to
another. A :data:`Snapshot` keeps each pid with its start time (field 22 of
``/proc/<pid>/stat``), so a later check never mistakes a newcomer for the
environment's process. A zombie (state ``Z``) has exited: it holds no memory,
no files and no devices, only its entry until its parent (often init, on
this kind of host a second or two later) reaps it, so it counts as gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

Snapshot = dict[int, int]  # pid -> start time (clock ticks after boot)
POLL = 0.005


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (None: no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``R``, ``S``, ``Z``...; None: no such process)."""
    fields = _stat(pid)
    return None if fields is None else fields[0]


def snapshot(pids: Iterable[int]) -> Snapshot:
    """``pids`` that exist now, with their start times."""
    found: Snapshot = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            found[pid] = int(fields[19])  # starttime: field 22, the 20th after the name
    return found


def running(pid: int, started: int) -> bool:
    """Whether the process ``pid`` that started at ``started`` has not exited yet."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == started


def still_running(processes: Snapshot) -> list[int]:
    """The pids of ``processes`` that have not exited."""
    return sorted(pid for pid, started in processes.items() if running(pid, started))


async def wait_exited(processes: Snapshot, timeout: float) -> list[int]:
    """Poll until every process of ``processes`` has exited.

    Returns:
        The pids still running at the deadline (empty: all exited).
    """
    deadline = time.monotonic() + timeout
    while left := still_running(processes):
        if time.monotonic() > deadline:
            return left
        await asyncio.sleep(POLL)
    return []
