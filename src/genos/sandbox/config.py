"""The hardened OCI runtime config (``config.json``, runtime spec 1.0.2) of an environment.

Everything an environment may touch is named here; the spec has no way to ask
for more (no host mounts, no capabilities, no devices). The session runs as
uid 1000 with no capabilities at all; root inside (only reachable through an
operator's ``exec``) keeps the small bounding set below, and
``noNewPrivileges`` stops anyone from gaining more through set-uid files or
file capabilities.

Capabilities root in an environment keeps, and why:

- ``CHOWN``, ``DAC_OVERRIDE``, ``FOWNER``, ``FSETID``: package tools and
  ``install`` fix ownership and modes of files in the environment's own root.
- ``SETUID``, ``SETGID``: dropping to the desktop user (``su``, apt's ``_apt``).
- ``KILL``: signalling the desktop user's processes.

Dropped on purpose, with what they would give: ``SYS_ADMIN`` (mount, almost
everything), ``NET_ADMIN``/``NET_RAW`` (firewall changes, spoofed packets),
``SYS_PTRACE``, ``SYS_MODULE``, ``SYS_RAWIO``, ``SYS_BOOT``, ``MKNOD`` (device
nodes), ``DAC_READ_SEARCH`` (``open_by_handle_at``), ``BPF``, ``PERFMON``,
``SETPCAP``, ``SETFCAP``, ``SYS_CHROOT``, ``AUDIT_WRITE``, ``NET_BIND_SERVICE``
(nothing in a desktop listens on a low port).
"""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genos.sandbox import cgroups, seccomp
from genos.spec import EnvironmentSpec

OCI_VERSION = "1.0.2"
SESSION_UID = 1000
SESSION_GID = 1000
SESSION_HOME = "/home/user"
DISPLAY_DIR_IN_ENV = "/run/genos-display"

ROOT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
)

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")


@dataclass(frozen=True)
class IdMap:
    """A user-namespace mapping: ids ``0..size-1`` inside are ``host_id..`` outside."""

    host_id: int = 100_000
    size: int = 65_536

    def oci(self) -> list[dict[str, int]]:
        """The mapping as OCI ``uidMappings`` / ``gidMappings``."""
        return [{"containerID": 0, "hostID": self.host_id, "size": self.size}]


@dataclass(frozen=True)
class Layout:
    """Where an environment's pieces are on the host, as the config refers to them."""

    env_id: str
    rootfs: Path
    display_dir: Path
    hosts_file: Path
    session_args: tuple[str, ...]
    session_env: Mapping[str, str] = field(default_factory=dict)
    netns_path: str | None = None
    resolv_conf: Path | None = None
    id_map: IdMap | None = None
    extra_pids: int = 0
    home: Path | None = None
    """A volume's plaintext to bind at the home (None: the home in the overlay root)."""


def hostname(env_id: str) -> str:
    """The environment's host name (per env, never the host's)."""
    return f"genos-{env_id}"


def _process(layout: Layout) -> dict[str, Any]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": SESSION_HOME,
        "LANG": "C.UTF-8",
        **layout.session_env,
    }
    # Never above GenOS's own hard limit: raising it needs CAP_SYS_RESOURCE.
    nofile = min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    return {
        "terminal": False,
        "user": {"uid": SESSION_UID, "gid": SESSION_GID, "additionalGids": [SESSION_GID]},
        "args": list(layout.session_args),
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": SESSION_HOME,
        # The session user gets no capability in any set; only the bounding
        # set (what root inside could ever hold) carries the minimal list.
        "capabilities": {
            "bounding": list(ROOT_CAPABILITIES),
            "effective": [],
            "permitted": [],
            "inheritable": [],
            "ambient": [],
        },
        "rlimits": [
            {"type": "RLIMIT_NOFILE", "hard": nofile, "soft": min(4096, nofile)},
            {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
        ],
        "noNewPrivileges": True,
        # The kernel's OOM killer picks environments before host services.
        "oomScoreAdj": 500,
    }


def root_process(base: dict[str, Any], args: list[str]) -> dict[str, Any]:
    """A process spec for ``exec`` as root inside, holding the root capability set.

    Args:
        base: the environment's ``process`` object (from its config).
        args: the command to run.

    Returns:
        A ``process.json`` mapping for ``runc exec --process``.
    """
    caps = list(ROOT_CAPABILITIES)
    return {
        **base,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "cwd": "/",
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            "inheritable": [],
            "ambient": [],
        },
    }


def _tmpfs(dest: str, *opts: str) -> dict[str, Any]:
    return {"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": list(opts)}


def _bind(dest: str, source: Path, *opts: str) -> dict[str, Any]:
    return {"destination": dest, "type": "bind", "source": str(source), "options": ["rbind", *opts]}


def _special(kind: str, dest: str, *opts: str) -> dict[str, Any]:
    return {"destination": dest, "type": kind, "source": kind, "options": list(opts)}


def _kernel_mounts(spec: EnvironmentSpec, layout: Layout) -> list[dict[str, Any]]:
    shm_mb = max(64, spec.resources.memory_mb // 4)
    pts = ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")
    return [
        _special("proc", "/proc", "nosuid", "noexec", "nodev"),
        _tmpfs("/dev", "nosuid", "noexec", "strictatime", "mode=755", "size=65536k"),
        _special("devpts", "/dev/pts", *pts),
        # S108: /dev/shm, /tmp and /var/tmp are the guest's own fresh tmpfs mounts.
        _tmpfs("/dev/shm", "nosuid", "nodev", "noexec", "mode=1777", f"size={shm_mb}m"),  # noqa: S108
        _special("mqueue", "/dev/mqueue", "nosuid", "noexec", "nodev"),
        _sysfs(layout),
    ]


def _mounts(spec: EnvironmentSpec, layout: Layout) -> list[dict[str, Any]]:
    tmp_mb = spec.resources.disk_mb // 4
    quiet = ("nosuid", "nodev", "noexec")
    home = layout.home or layout.rootfs / SESSION_HOME.lstrip("/")
    mounts = [
        *_kernel_mounts(spec, layout),
        _tmpfs("/tmp", "nosuid", "nodev", "mode=1777", f"size={tmp_mb}m"),  # noqa: S108
        _tmpfs("/var/tmp", "nosuid", "nodev", "mode=1777", "size=256m"),  # noqa: S108
        _tmpfs("/run", "nosuid", "nodev", "mode=755", "size=64m"),
        _bind(DISPLAY_DIR_IN_ENV, layout.display_dir, "rw", *quiet),
        # The root is read-only; the user's home is the one writable part of
        # it (its writes land in the overlay's upper dir, or in a volume).
        _bind(SESSION_HOME, home, "rw", "nosuid", "nodev"),
        _bind("/etc/hosts", layout.hosts_file, "ro", *quiet),
    ]
    if layout.resolv_conf is not None:
        mounts.append(_bind("/etc/resolv.conf", layout.resolv_conf, "ro", *quiet))
    return mounts


def _sysfs(layout: Layout) -> dict[str, Any]:
    if layout.id_map is not None and layout.netns_path is not None:
        # sysfs may only be mounted by an owner of the network namespace; a
        # joined one belongs to the host's user namespace. An empty read-only
        # /sys then, rather than a bind of the host's (which shows its devices).
        return _tmpfs("/sys", "nosuid", "noexec", "nodev", "ro", "size=4k")
    return _special("sysfs", "/sys", "nosuid", "noexec", "nodev", "ro")


def _namespaces(layout: Layout) -> list[dict[str, str]]:
    names = [*NAMESPACES, "user"] if layout.id_map else list(NAMESPACES)
    out = []
    for name in names:
        entry = {"type": name}
        if name == "network" and layout.netns_path:
            entry["path"] = layout.netns_path
        out.append(entry)
    return out


def _linux(spec: EnvironmentSpec, layout: Layout, *, with_seccomp: bool) -> dict[str, Any]:
    linux: dict[str, Any] = {
        "namespaces": _namespaces(layout),
        "cgroupsPath": cgroups.cgroups_path(layout.env_id),
        "resources": cgroups.resources(spec.resources, extra_pids=layout.extra_pids),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "rootfsPropagation": "private",
    }
    if with_seccomp:
        linux["seccomp"] = seccomp.profile()
    if layout.id_map:
        linux["uidMappings"] = layout.id_map.oci()
        linux["gidMappings"] = layout.id_map.oci()
    return linux


def build(spec: EnvironmentSpec, layout: Layout, *, with_seccomp: bool = True) -> dict[str, Any]:
    """The whole ``config.json`` for one environment.

    Args:
        spec: the environment's spec (resources, display, apps).
        layout: host paths and namespaces the environment uses.
        with_seccomp: attach the syscall allowlist (gVisor filters inside its own kernel).

    Returns:
        A JSON-ready mapping.
    """
    return {
        "ociVersion": OCI_VERSION,
        "process": _process(layout),
        "root": {"path": str(layout.rootfs), "readonly": True},
        "hostname": hostname(layout.env_id),
        "mounts": _mounts(spec, layout),
        "linux": _linux(spec, layout, with_seccomp=with_seccomp),
    }


def hosts_file(env_id: str, pins: Sequence[tuple[str, str]] = ()) -> str:
    """Contents of the environment's ``/etc/hosts``.

    Args:
        env_id: the environment.
        pins: ``(name, address)`` pairs the network policy resolved in advance.

    Returns:
        The file's text.
    """
    lines = [
        "127.0.0.1\tlocalhost",
        f"127.0.1.1\t{hostname(env_id)}",
        "::1\tlocalhost ip6-localhost",
    ]
    lines += [f"{address}\t{name}" for name, address in pins]
    return "\n".join(lines) + "\n"


def summary(layout: Layout) -> dict[str, Any]:
    """What the config enforces, for the audit record."""
    return {
        "namespaces": [n["type"] for n in _namespaces(layout)],
        "user": f"{SESSION_UID}:{SESSION_GID}",
        "capabilities": [c.removeprefix("CAP_") for c in ROOT_CAPABILITIES],
        "no_new_privileges": True,
        "readonly_root": True,
        "masked_paths": len(MASKED_PATHS),
        "readonly_paths": len(READONLY_PATHS),
        "seccomp": seccomp.summary(),
        "user_namespace": layout.id_map is not None,
    }
