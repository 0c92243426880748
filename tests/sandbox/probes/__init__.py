"""Running real environments for sandbox tests, and the static C probe that pokes at them.

The probe (``probe.c``) is compiled with ``gcc -static`` once per test
session and copied into an environment's home through the host side of its
overlay root, so it needs nothing from the image. Environments run with the
real :class:`~genos.runtime.oci.driver.OCIDriver` on an :class:`asyncio.Runner`
shared by a module's tests.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from genos.ids import new_env_id
from genos.runtime.images import ImageStore
from genos.runtime.oci.driver import ExecResult, OCIDriver
from genos.sandbox import idmap
from genos.sandbox.network import NetworkSandbox
from genos.spec import EnvironmentSpec
from genos.testing import read_banner

PROBE_SOURCE = Path(__file__).with_name("probe.c")
PROBE_IN_ENV = "/home/user/.genos-probe"


def build_probe(out_dir: Path) -> Path:
    """Compile the probe statically into ``out_dir``; its path."""
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc is needed to build the sandbox probe")
    out = out_dir / "probe"
    subprocess.run(
        ["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(PROBE_SOURCE)],
        check=True,
        capture_output=True,
    )
    return out


def parse_calls(text: str) -> dict[str, tuple[int, str]]:
    """``probe syscalls`` output as ``name -> (return, errno name)``."""
    calls = {}
    for line in text.splitlines():
        name, ret, err = line.split()
        calls[name] = (int(ret), err)
    return calls


@dataclass
class Env:
    """A running environment and the loop its driver runs on."""

    runner: asyncio.Runner
    driver: OCIDriver
    env_id: str
    spec: EnvironmentSpec

    def exec(self, *argv: str, root: bool = False, timeout: float = 60.0) -> ExecResult:
        """Run a command inside (as uid 1000, or root with the root capability set)."""
        return self.runner.run(
            self.driver.exec(self.env_id, list(argv), root=root, timeout=timeout)
        )

    def probe(self, *args: str, root: bool = False, timeout: float = 60.0) -> ExecResult:
        """Run the probe inside."""
        return self.exec(PROBE_IN_ENV, *args, root=root, timeout=timeout)

    def sh(self, script: str, *, root: bool = False) -> ExecResult:
        """Run a POSIX sh script inside."""
        return self.exec("/bin/sh", "-c", script, root=root)

    def banner(self, timeout: float = 5.0) -> bytes:
        """The first bytes the env's display socket sends."""
        return self.runner.run(read_banner(self.driver.display(self.env_id), timeout))

    def host_id(self) -> int | None:
        """Host uid of root in the env (None without a user namespace)."""
        record = json.loads(self.driver.paths(self.env_id).record.read_text())
        slot = record.get("id_slot")
        return None if slot is None else idmap.id_map(slot).host_id

    def install_probe(self, probe: Path) -> None:
        """Copy the probe into the env's home through the host side of its root."""
        target = self.driver.paths(self.env_id).rootfs / PROBE_IN_ENV.lstrip("/")
        shutil.copy(probe, target)
        target.chmod(0o755)


def offline_network(data_root: Path) -> NetworkSandbox:
    """A network sandbox with no uplink: environments reach nothing beyond this host."""
    return NetworkSandbox(data_root / "network", uplinks=(), dns_servers=())


@contextmanager
def running_env(
    runner: asyncio.Runner,
    store: ImageStore,
    spec: EnvironmentSpec,
    data_root: Path,
    probe: Path | None = None,
    **options: Any,
) -> Iterator[Env]:
    """Create and start an environment; destroy it on exit (``options`` go to the driver)."""
    options.setdefault("network", offline_network(data_root))
    driver = OCIDriver(store, data_root=data_root, **options)
    env = Env(runner, driver, new_env_id(), spec)
    try:
        runner.run(driver.create(env.env_id, spec))
        runner.run(driver.start(env.env_id))
        if probe is not None:
            env.install_probe(probe)
        yield env
    finally:
        runner.run(driver.destroy(env.env_id))
        runner.run(driver.aclose())


@contextmanager
def probed_env(
    store: ImageStore, spec: EnvironmentSpec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    """A running env with the probe installed, its own loop and a private data dir."""
    probe = build_probe(tmp_path_factory.mktemp("probe"))
    data_root = tmp_path_factory.mktemp("genos-data")
    with pytest.MonkeyPatch.context() as patch, asyncio.Runner() as runner:
        patch.setenv("GENOS_DATA_DIR", str(data_root))
        with running_env(runner, store, spec, data_root, probe) as env:
            yield env


def pss_bytes(pids: list[int]) -> int:
    """Sum of the proportional set size of ``pids`` (``/proc/<pid>/smaps_rollup``)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def _processes_of(env_id: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cgroup = (proc / "cgroup").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            zombie = (proc / "stat").read_text().rpartition(")")[2].split()[0] == "Z"
        except OSError:
            continue
        # A zombie holds nothing but its pid until the host's init reaps it.
        if not zombie and (f"/{env_id}\n" in cgroup or env_id in cmdline):
            found.append(f"{proc.name} {cmdline.strip()}")
    return found


def host_traces(env_id: str, data_root: Path) -> dict[str, list[str]]:
    """Everything of ``env_id`` on the host: processes, containers, mounts, dirs, cgroups, network.

    Args:
        env_id: the environment.
        data_root: the driver's data root (its ``envs/<id>`` holds the overlay dirs).

    Returns:
        Kind -> what is there; every list is empty when nothing is left.
    """
    # Under any node's roots (/run/genos, /run/genos-<node>): a trace is a trace.
    state_roots = Path("/run").glob(f"genos*/runtime/*/{env_id}")
    mounts = [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if env_id in m]
    dirs = [*Path("/run").glob(f"genos*/{env_id}"), data_root / "envs" / env_id]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    tables = subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout
    return {
        "processes": _processes_of(env_id),
        "containers": [str(p) for p in state_roots],
        "mounts": mounts,
        "dirs": [str(d) for d in dirs if d.exists()],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/genos*/{env_id}")],
        "netns": [str(p) for p in Path("/run/netns").glob(f"genos-{env_id}*")],
        "veths": [
            line.split(":")[1].strip().split("@")[0]
            for line in links.splitlines()
            if env_id in line
        ],
        "nft": [line for line in tables.splitlines() if env_id in line],
    }


NOTHING = {
    k: [] for k in ("processes", "containers", "mounts", "dirs", "cgroups", "netns", "veths", "nft")
}
"""What :func:`host_traces` answers when an environment left nothing behind."""
