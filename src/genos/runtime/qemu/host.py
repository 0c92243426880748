"""One VM's host side: paths, record, QEMU's own user, cgroup and tap.

::

    /run/genos-qemu[-<node>]/<id>/   0711 root (QEMU's user may only pass through)
        env.json                     0600: what create decided, the pid, the saved state
        qemu.log                     QEMU's own stdout and stderr
        qemu/                        0700, owned by QEMU's user
            qmp.sock vnc.sock spice.sock agent.sock   0600 (QEMU runs with umask 077)
            console.log              the guest's serial console
            guest.cfg                the fw_cfg settings file
    /run/genos-qemu/ids/<slot>       QEMU user slots (one uid per VM, host-wide, naming the node)
    <data dir>/vms/<id>/             0711 root
        disk.qcow2                   0600 QEMU's user; the overlay on the cached root.ext4
                                     (a user image: on its qcow2, or blank beside its ISO)
        state.vmstate                0600 root; a deep suspend (opened by us, passed as an fd)

These roots are apart from the OCI driver's (``/run/genos``, ``<data>/envs``,
cgroup ``genos``), so neither driver lists or tears down the other's
environments; a named node's carry its name (:mod:`genos.paths`), cgroup
``genos-vm-<node>`` included. QEMU runs as ``QEMU_UID_BASE + slot`` (no passwd entry, no
groups but ``kvm`` when KVM is used), a range above every container id range.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genos.errors import CapabilityError, ExternalError, NotFoundError
from genos.paths import node_scoped
from genos.sandbox import cgroups, idmap

IDS_DIR = Path("/run/genos-qemu/ids")  # host-wide: every node's VMs need distinct uids
QEMU_UID_BASE = idmap.BASE + idmap.MAX_SLOTS * idmap.SIZE
CGROUP_ROOT = Path("/sys/fs/cgroup")
BASE_CGROUP_PARENT = "genos-vm"


def default_run_root() -> Path:
    """``/run/genos-qemu``, or ``/run/genos-qemu-<node>`` for a named node."""
    return Path("/run") / node_scoped("genos-qemu")


def cgroup_parent() -> str:
    """This node's parent cgroup of every VM (``genos-vm`` or ``genos-vm-<node>``)."""
    return node_scoped(BASE_CGROUP_PARENT)


V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "freezer")
CPU_PERIOD_US = 100_000
_TIMEOUT = 30


@dataclass(frozen=True)
class VmPaths:
    """Every host path of one VM."""

    env_id: str
    root: Path
    data: Path

    @classmethod
    def of(cls, env_id: str, run_root: Path, data_root: Path) -> VmPaths:
        return cls(env_id, run_root / env_id, data_root / "vms" / env_id)

    @property
    def record(self) -> Path:
        return self.root / "env.json"

    @property
    def qemu_log(self) -> Path:
        return self.root / "qemu.log"

    @property
    def private(self) -> Path:
        return self.root / "qemu"

    @property
    def qmp(self) -> Path:
        return self.private / "qmp.sock"

    @property
    def vnc(self) -> Path:
        return self.private / "vnc.sock"

    @property
    def spice(self) -> Path:
        return self.private / "spice.sock"

    @property
    def agent(self) -> Path:
        return self.private / "agent.sock"

    @property
    def console(self) -> Path:
        return self.private / "console.log"

    @property
    def guest_cfg(self) -> Path:
        return self.private / "guest.cfg"

    @property
    def pidfile(self) -> Path:
        return self.private / "qemu.pid"

    @property
    def disk(self) -> Path:
        return self.data / "disk.qcow2"

    @property
    def state(self) -> Path:
        return self.data / "state.vmstate"


def make_dirs(paths: VmPaths, uid: int) -> None:
    """Create the VM's directories (see the module docstring for modes and owners)."""
    paths.root.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    paths.root.mkdir(mode=0o711)
    paths.private.mkdir(mode=0o700)
    os.chown(paths.private, uid, uid)
    paths.data.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    paths.data.mkdir(mode=0o711, exist_ok=True)


def write_record(paths: VmPaths, record: dict[str, Any]) -> None:
    """Write ``env.json`` atomically, root-only."""
    tmp = paths.record.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(paths.record)


def read_record(paths: VmPaths) -> dict[str, Any]:
    """``env.json`` of a VM.

    Raises:
        NotFoundError: there is none (or it is torn).
    """
    try:
        data = json.loads(paths.record.read_text())
    except (OSError, ValueError):
        raise NotFoundError("environment", paths.env_id) from None
    if not isinstance(data, dict):
        raise NotFoundError("environment", paths.env_id)
    return data


def claim_uid(env_id: str) -> int:
    """A host uid for this VM's QEMU that nothing else uses."""
    return QEMU_UID_BASE + idmap.claim(IDS_DIR, env_id)


def release_uid(env_id: str) -> None:
    """Free the VM's uid slot (nothing if it has none)."""
    idmap.release(IDS_DIR, env_id)


def uid_holders() -> set[str]:
    """Ids of this node's VMs holding a uid slot."""
    return idmap.holders(IDS_DIR)


def run_tool(argv: list[str], what: str) -> str:
    """Run a host tool; its stdout.

    Raises:
        CapabilityError: the tool is not installed.
        ExternalError: it failed (stderr in ``detail``).
    """
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise CapabilityError(f"{what}: {argv[0]} is not installed") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        raise ExternalError(f"{what} failed (exit {done.returncode})", detail=done.stderr.strip())
    return done.stdout


def create_overlay(base: Path, disk: Path, uid: int, base_format: str = "raw") -> None:
    """The VM's own qcow2 on a shared read-only image, owned by QEMU's user."""
    run_tool(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format,
              str(disk)], "qemu-img create")  # fmt: skip
    os.chown(disk, uid, uid)
    disk.chmod(0o600)


def backing_of(disk: Path) -> str:
    """The image a qcow2 overlay is written over (its backing file's path).

    Raises:
        ExternalError: qemu-img could not read it, or it has no backing file.
    """
    info = json.loads(run_tool(["qemu-img", "info", "--output=json", "-U", str(disk)],
                               "qemu-img info"))  # fmt: skip
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if not backing:
        raise ExternalError(f"{disk} has no backing image")
    return str(backing)


def rebase(disk: Path, backing: Path, base_format: str = "raw") -> None:
    """Point an overlay made on another host at this host's copy of the same image
    (the same content, so only the header changes: an unsafe rebase)."""
    run_tool(["qemu-img", "rebase", "-u", "-b", str(backing), "-F", base_format, str(disk)],
             "qemu-img rebase")  # fmt: skip


def create_blank(disk: Path, size_mb: int, uid: int) -> None:
    """An empty qcow2 disk of ``size_mb`` (grows as the guest writes), owned by QEMU's user."""
    run_tool(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), f"{size_mb}M"],
             "qemu-img create")  # fmt: skip
    os.chown(disk, uid, uid)
    disk.chmod(0o600)


# -- network: a tap in the environment's namespace, bridged to its uplink --


def plumb_tap(netns: str) -> str:
    """Give the namespace's address to the guest: ``tap0`` and ``eth0`` on a bridge.

    ``tap0`` is root's: QEMU gets a queue of it as a descriptor
    (:func:`genos.sandbox.tap.open_tap`), never the right to attach itself.

    Args:
        netns: the environment's network namespace (``genos-<id>``).

    Returns:
        The address (with prefix) ``eth0`` had, which the guest takes over.

    Raises:
        ExternalError: ip(8) failed.
    """
    shown = json.loads(run_tool(["ip", "-n", netns, "-j", "addr", "show", "dev", "eth0"],
                                "ip addr show"))  # fmt: skip
    inet = [a for a in shown[0].get("addr_info", []) if a.get("family") == "inet"]
    if not inet:
        raise ExternalError(f"namespace {netns} has no IPv4 address on eth0")
    address = f"{inet[0]['local']}/{inet[0]['prefixlen']}"
    batch = "\n".join([
        "tuntap add dev tap0 mode tap",
        "addr flush dev eth0",
        "link add br0 type bridge",
        "link set eth0 master br0",
        "link set tap0 master br0",
        "link set br0 up",
        "link set tap0 up",
    ])  # fmt: skip
    try:
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch, capture_output=True,
                       text=True, timeout=_TIMEOUT, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ExternalError(f"tap in {netns} failed", detail=str(detail).strip()) from exc
    return address


# -- cgroup (v1 controllers or the unified hierarchy) under ``genos-vm`` --


def _unified() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def cgroup_dirs(env_id: str) -> list[Path]:
    """Every cgroup directory of the VM that exists now."""
    rel = Path(cgroup_parent()) / env_id
    bases = [CGROUP_ROOT] if _unified() else [CGROUP_ROOT / c for c in V1_CONTROLLERS]
    return [base / rel for base in bases if (base / rel).is_dir()]


def join_cgroup(env_id: str, pid: int, memory_bytes: int, cpus: float, pids: int) -> None:
    """Put ``pid`` (QEMU) in the VM's cgroup with its limits.

    Raises:
        ExternalError: the cgroup could not be made or joined.
    """
    quota = str(int(cpus * CPU_PERIOD_US))
    try:
        if _unified():
            base = CGROUP_ROOT / cgroup_parent()
            base.mkdir(exist_ok=True)
            (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu +memory +pids")
            (base / "cgroup.subtree_control").write_text("+cpu +memory +pids")
            limits = {"memory.max": str(memory_bytes), "pids.max": str(pids),
                      "cpu.max": f"{quota} {CPU_PERIOD_US}"}  # fmt: skip
            _join(base / env_id, pid, limits)
            return
        v1 = {
            "memory": {"memory.limit_in_bytes": str(memory_bytes)},
            "pids": {"pids.max": str(pids)},
            "cpu": {"cpu.cfs_period_us": str(CPU_PERIOD_US), "cpu.cfs_quota_us": quota},
        }
        for controller in V1_CONTROLLERS:
            _join(CGROUP_ROOT / controller / cgroup_parent() / env_id, pid, v1.get(controller, {}))
    except OSError as exc:
        raise ExternalError(f"cgroup of {env_id}: {exc}") from exc


def _join(path: Path, pid: int, limits: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, value in limits.items():
        (path / name).write_text(value)
    (path / "cgroup.procs").write_text(str(pid))


def usage(env_id: str) -> tuple[float, int, int] | None:
    """CPU seconds, working-set memory bytes and tasks of the VM's cgroup (None if it has none)."""
    try:
        found = cgroups.counters_at(Path(cgroup_parent()) / env_id)
    except (OSError, ValueError, KeyError):
        return None
    return found.cpu_seconds, found.memory_bytes, found.pids


def cgroup_tasks(env_id: str) -> set[int]:
    """Pids in the VM's cgroup (any controller)."""
    found: set[int] = set()
    for path in cgroup_dirs(env_id):
        with contextlib.suppress(OSError, ValueError):
            found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
    return found


def remove_parent() -> None:
    """Remove this node's parent cgroup of VMs where it is empty (a node leaving the machine)."""
    bases = [CGROUP_ROOT] if _unified() else [CGROUP_ROOT / c for c in V1_CONTROLLERS]
    for base in bases:
        with contextlib.suppress(OSError):
            (base / cgroup_parent()).rmdir()


def remove_cgroup(env_id: str) -> list[Path]:
    """Remove the VM's cgroup directories; the ones still busy."""
    left = []
    for path in cgroup_dirs(env_id):
        try:
            path.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            left.append(path)
    return left
