"""An environment's cgroup: its limits, its freezer and what it uses.

The OCI runtime creates the cgroup from ``linux.cgroupsPath``
(``/genos/<env_id>``) and ``linux.resources``; this module writes those
resources, reads usage back for ``inspect``, freezes and thaws, and finds and
removes whatever a crash left behind. It understands cgroup v1 (one hierarchy
per controller under ``/sys/fs/cgroup/<controller>``, also in the hybrid
layout) and the unified v2 hierarchy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, NamedTuple

from genos.errors import ExternalError, NotFoundError
from genos.paths import node_scoped
from genos.spec import Resources

CGROUP_ROOT = Path("/sys/fs/cgroup")
BASE_PARENT = "genos"  # the node's parent is node_scoped(BASE_PARENT): genos, genos-<node>
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")

# Devices an environment may use (type, major, minor): null, zero, full,
# random, urandom, tty, ptmx and the pseudo-terminals of its own devpts.
ALLOWED_DEVICES = (
    ("c", 1, 3),
    ("c", 1, 5),
    ("c", 1, 7),
    ("c", 1, 8),
    ("c", 1, 9),
    ("c", 5, 0),
    ("c", 5, 2),
    ("c", 136, None),
)


class Counters(NamedTuple):
    """What an environment's cgroup has used so far."""

    cpu_seconds: float
    memory_bytes: int
    pids: int


def parent() -> str:
    """This node's parent cgroup of every environment (``genos`` or ``genos-<node>``)."""
    return node_scoped(BASE_PARENT)


def cgroups_path(env_id: str) -> str:
    """The OCI ``linux.cgroupsPath`` of an environment."""
    return f"/{parent()}/{env_id}"


def unified() -> bool:
    """Whether the host runs the unified (v2-only) hierarchy."""
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def resources(res: Resources, *, extra_pids: int = 0) -> dict[str, Any]:
    """The OCI ``linux.resources`` for a spec's resources.

    Args:
        res: the spec's resources.
        extra_pids: tasks the runtime itself puts in the cgroup (gVisor's
            Sentry and gofer threads), on top of the spec's ``pids``.

    Returns:
        Memory (swap equal to memory: no swapping past the limit), CPU quota
        (``cpus`` x period), pids and the device allowlist.
    """
    memory = res.memory_mb * 1024 * 1024
    devices: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    devices += [
        {"allow": True, "type": kind, "major": major, "minor": minor, "access": "rwm"}
        if minor is not None
        else {"allow": True, "type": kind, "major": major, "access": "rwm"}
        for kind, major, minor in ALLOWED_DEVICES
    ]
    return {
        "memory": {"limit": memory, "swap": memory},
        "cpu": {"quota": int(res.cpus * CPU_PERIOD_US), "period": CPU_PERIOD_US},
        "pids": {"limit": res.pids + extra_pids},
        "devices": devices,
    }


def dirs(env_id: str) -> list[Path]:
    """Every cgroup directory of an environment that exists right now."""
    rel = Path(parent()) / env_id
    if unified():
        candidates = [CGROUP_ROOT / rel]
    else:
        candidates = [CGROUP_ROOT / c / rel for c in (*V1_CONTROLLERS, "systemd", "unified")]
    return [path for path in candidates if path.is_dir()]


def _controller(env_id: str, name: str) -> Path:
    if unified():
        return CGROUP_ROOT / parent() / env_id
    return CGROUP_ROOT / name / parent() / env_id


def _read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def usage(env_id: str) -> Counters:
    """CPU time, memory and process count of an environment, from its cgroup.

    Args:
        env_id: the environment.

    Returns:
        The usage now.

    Raises:
        NotFoundError: the environment has no cgroup.
    """
    try:
        return counters_at(Path(parent()) / env_id)
    except FileNotFoundError as exc:
        raise NotFoundError("cgroup", cgroups_path(env_id)) from exc


def counters_at(rel: Path) -> Counters:
    """What the cgroup at ``rel`` (under each controller, or the unified root) has used.

    Memory is the working set, as the kubelet counts it: usage less the
    inactive file cache, which the kernel reclaims before anything else.

    Raises:
        FileNotFoundError: there is no such cgroup.
    """
    if unified():
        base = CGROUP_ROOT / rel
        cpu = int(_stat(base / "cpu.stat")["usage_usec"]) / 1e6
        memory = _read_int(base / "memory.current")
        inactive = _stat(base / "memory.stat").get("inactive_file", 0)
        pids = _read_int(base / "pids.current")
    else:
        cpu = _read_int(CGROUP_ROOT / "cpuacct" / rel / "cpuacct.usage") / 1e9
        memory = _read_int(CGROUP_ROOT / "memory" / rel / "memory.usage_in_bytes")
        inactive = _stat(CGROUP_ROOT / "memory" / rel / "memory.stat").get("total_inactive_file", 0)
        pids = _read_int(CGROUP_ROOT / "pids" / rel / "pids.current")
    return Counters(cpu_seconds=cpu, memory_bytes=max(0, memory - inactive), pids=pids)


def _stat(path: Path) -> dict[str, int]:
    pairs = (line.split() for line in path.read_text().splitlines())
    return {key: int(value) for key, value in pairs}


def _freezer_file(env_id: str) -> tuple[Path, str, str]:
    if unified():
        return _controller(env_id, "") / "cgroup.freeze", "1", "0"
    return _controller(env_id, "freezer") / "freezer.state", "FROZEN", "THAWED"


def frozen(env_id: str) -> bool:
    """Whether every process of the environment is frozen."""
    path, on, _ = _freezer_file(env_id)
    if unified():
        return "frozen 1" in (path.parent / "cgroup.events").read_text()
    return path.read_text().strip() == on


async def freeze(env_id: str, *, timeout: float = 5.0) -> None:
    """Freeze every process of the environment and wait until the kernel says so.

    Args:
        env_id: the environment.
        timeout: seconds to wait for ``FROZEN``.

    Raises:
        ExternalError: the cgroup did not freeze in time (it is thawed again).
        NotFoundError: the environment has no cgroup.
    """
    await _set_freezer(env_id, frozen_wanted=True, timeout=timeout)


async def thaw(env_id: str, *, timeout: float = 5.0) -> None:
    """Thaw a frozen environment.

    Raises:
        ExternalError: the cgroup did not thaw in time.
        NotFoundError: the environment has no cgroup.
    """
    await _set_freezer(env_id, frozen_wanted=False, timeout=timeout)


async def _set_freezer(env_id: str, *, frozen_wanted: bool, timeout: float) -> None:
    path, on, off = _freezer_file(env_id)
    deadline = time.monotonic() + timeout
    try:
        # v1 may stay FREEZING while a task is in an uninterruptible sleep;
        # writing again retries (what runc does too).
        while True:
            path.write_text(on if frozen_wanted else off)
            if frozen(env_id) == frozen_wanted:
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.001)
    except FileNotFoundError as exc:
        raise NotFoundError("cgroup", cgroups_path(env_id)) from exc
    if frozen_wanted:
        path.write_text(off)
    raise ExternalError(f"cgroup of {env_id} did not {'freeze' if frozen_wanted else 'thaw'}")


def remove(env_id: str) -> list[Path]:
    """Remove the environment's cgroup directories (they must have no processes).

    Args:
        env_id: the environment.

    Returns:
        The directories that could not be removed (still busy).
    """
    left = []
    for path in dirs(env_id):
        with contextlib.suppress(FileNotFoundError):
            try:
                path.rmdir()
            except OSError:
                left.append(path)
    return left


def remove_parent() -> list[Path]:
    """Remove this node's parent cgroup where it is empty (a node leaving the machine).

    Returns:
        The parent directories still holding environments.
    """
    rel = Path(parent())
    if unified():
        candidates = [CGROUP_ROOT / rel]
    else:
        candidates = [CGROUP_ROOT / c / rel for c in (*V1_CONTROLLERS, "systemd", "unified")]
    left = []
    for path in candidates:
        with contextlib.suppress(FileNotFoundError):
            try:
                path.rmdir()
            except OSError:
                left.append(path)
    return left


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def denials(env_id: str) -> dict[str, int]:
    """How often the environment hit a limit: OOM kills and refused forks.

    Args:
        env_id: the environment.

    Returns:
        ``{"oom_kills": n, "forks_refused": m}`` (zeros when there is no cgroup).
    """
    if unified():
        base = _controller(env_id, "")
        oom, pids = base / "memory.events", base / "pids.events"
    else:
        oom = _controller(env_id, "memory") / "memory.oom_control"
        pids = _controller(env_id, "pids") / "pids.events"
    return {"oom_kills": _counter(oom, "oom_kill"), "forks_refused": _counter(pids, "max")}


def tasks(env_id: str) -> list[int]:
    """Pids of every process in the environment's cgroup (any controller)."""
    pids: set[int] = set()
    for path in dirs(env_id):
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(p) for p in (path / "cgroup.procs").read_text().split())
    return sorted(pids)
