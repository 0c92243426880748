"""Bare ``runc run`` of GenOS's own layers, the baseline of ``provision.py`` and ``density.py``.

An overlay root of the environment's layers (mounted outside the clock) and a
minimal ``runc spec`` config that runs the same session command, its display
socket on a host directory: what GenOS adds (user namespace, seccomp,
network namespace and policy, cgroup limits, the registry, the gateway) is
left out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from genos.runtime.images import (
    DISPLAY_DIR,
    RFB_SOCKET,
    SESSION_ARGV,
    USER_UID,
    Layer,
    mount_root,
    session_env,
    unmount_root,
)
from genos.spec import EnvironmentSpec

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def runc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runc", *args], capture_output=True, text=True, check=check)


def run_detached(bundle: Path, cid: str, log_path: Path) -> None:
    """``runc run -d``; the container inherits runc's stdio, so a log file, not a pipe."""
    with log_path.open("w") as log:
        argv = ["runc", "run", "-d", "--bundle", str(bundle), cid]
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True)


def bare_bundle(layers: list[Layer], spec: EnvironmentSpec, where: Path) -> tuple[Path, Path]:
    """An overlay root of ``layers`` and a minimal config.json; returns (bundle, socket)."""
    bundle, display = where / "bundle", where / "display"
    rootfs = bundle / "rootfs"
    display.mkdir(parents=True)
    os.chown(display, USER_UID, USER_UID)
    mount_root(layers, where / "upper", where / "work", rootfs)
    runc("spec", "--bundle", str(bundle))
    path = bundle / "config.json"
    cfg: dict[str, Any] = json.loads(path.read_text())
    cfg["root"] = {"path": str(rootfs), "readonly": False}
    env = [f"{k}={v}" for k, v in session_env(spec).items()]
    cfg["process"].update(
        terminal=False,
        args=list(SESSION_ARGV),
        env=[PATH_ENV, *env],
        user={"uid": USER_UID, "gid": USER_UID},
    )
    cfg["mounts"] += [
        {"destination": DISPLAY_DIR, "type": "bind", "source": str(display),
         "options": ["rbind", "rw"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",  # noqa: S108 - the guest's
         "options": ["nosuid", "nodev", "mode=1777"]},
    ]  # fmt: skip
    namespaces = cfg["linux"]["namespaces"]
    if not any(ns["type"] == "network" for ns in namespaces):
        namespaces.append({"type": "network"})
    path.write_text(json.dumps(cfg))
    return bundle, display / RFB_SOCKET


def remove_bare(where: Path, cid: str) -> None:
    """Kill and delete the container, unmount its root, remove its directory."""
    runc("kill", cid, "KILL", check=False)
    runc("delete", "--force", cid, check=False)
    unmount_root(where / "bundle" / "rootfs")
    shutil.rmtree(where, ignore_errors=True)
