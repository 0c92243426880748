"""How long ``destroy`` takes, and whether any process of the environment outlives it.

For a container (runc) and a microVM (QEMU) booted to their desktops: the
pids of the environment just before ``destroy`` (the cgroup's processes, and
QEMU's pid), the time ``destroy`` takes, how many of those pids still run
when it returns (state other than Z), how many are still in ``/proc`` at all
(zombies included), and how long after ``destroy`` the last of them left
``/proc``.

Needs root, runc and QEMU; images come from ``$GENOS_TEST_CACHE/images``
(built on first use). Environments have no network uplink.

Run: .venv/bin/python bench/destroy.py [--rounds 3] [--tiers container,microvm]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="genos-bench-destroy-", dir="/var/tmp"))
TMP.chmod(0o711)
os.environ["GENOS_DATA_DIR"] = str(TMP / "data")

from genos.ids import new_env_id  # noqa: E402
from genos.runtime.driver import Driver  # noqa: E402
from genos.runtime.images import ImageStore  # noqa: E402
from genos.runtime.oci.driver import OCIDriver  # noqa: E402
from genos.runtime.qemu import host as qemuhost  # noqa: E402
from genos.runtime.qemu.driver import QemuDriver  # noqa: E402
from genos.sandbox import cgroups  # noqa: E402
from genos.sandbox.network import NetworkSandbox  # noqa: E402
from genos.spec import EnvironmentSpec  # noqa: E402

CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test")) / "images"
RUN_ROOT = Path(tempfile.mkdtemp(prefix="genos-bench-destroy-", dir="/run"))
RUN_ROOT.chmod(0o711)


def state_of(pid: int) -> str | None:
    """The one-letter state of ``pid`` (None: not in /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


async def env_pids(drv: Driver, env_id: str, tier: str) -> set[int]:
    """Every process of the environment now: its cgroup's, and its init's or QEMU's pid."""
    inspection = await drv.inspect(env_id)
    tasks = qemuhost.cgroup_tasks(env_id) if tier == "microvm" else set(cgroups.tasks(env_id))
    return tasks | ({inspection.pid} if inspection.pid else set())


async def one_round(drv: Driver, tier: str) -> tuple[float, int, int, float]:
    """(destroy seconds, pids running after it, pids in /proc after it, seconds until none)."""
    env_id = new_env_id()
    spec = EnvironmentSpec.model_validate(
        {"name": "bench-destroy", "tier": tier, "resources": {"memory_mb": 512},
         "network": {"mode": "none"}}
    )  # fmt: skip
    await drv.create(env_id, spec)
    try:
        await drv.start(env_id, timeout=300)
        pids = await env_pids(drv, env_id, tier)
    except BaseException:
        await drv.destroy(env_id)
        raise
    began = time.perf_counter()
    await drv.destroy(env_id)
    took = time.perf_counter() - began
    states = [state_of(pid) for pid in pids]
    running = sum(1 for s in states if s not in (None, "Z"))
    present = sum(1 for s in states if s is not None)
    while any(state_of(pid) is not None for pid in pids):
        if time.perf_counter() - began > 30:
            break
        await asyncio.sleep(0.005)
    return took, running, present, time.perf_counter() - began - took


def make(tier: str, store: ImageStore) -> Driver:
    network = NetworkSandbox(TMP / "data" / "network", uplinks=(), dns_servers=())
    if tier == "microvm":
        return QemuDriver(store, network=network, run_root=RUN_ROOT / "qemu",
                          data_root=TMP / "data")  # fmt: skip
    return OCIDriver(store, network=network, data_root=TMP / "data")


async def main(rounds: int, tiers: list[str]) -> None:
    store = ImageStore(CACHE)
    print(f"{'tier':<10}{'destroy s':>11}{'running after':>15}{'in /proc after':>16}"
          f"{'gone +s':>9}")  # fmt: skip
    for tier in tiers:
        drv = make(tier, store)
        results = [await one_round(drv, tier) for _ in range(rounds)]
        for took, running, present, gone in results:
            print(f"{tier:<10}{took:>11.3f}{running:>15}{present:>16}{gone:>9.3f}")
        median = statistics.median(r[0] for r in results)
        print(f"{tier:<10} median destroy {median:.3f} s; "
              f"max running after {max(r[1] for r in results)}; "
              f"max in /proc after {max(r[2] for r in results)}")  # fmt: skip
        await drv.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiers", default="container,microvm")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.rounds, args.tiers.split(",")))
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
        shutil.rmtree(RUN_ROOT, ignore_errors=True)
