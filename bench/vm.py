"""VM figures for the QEMU tiers (``microvm``, ``vm``) on this host's accelerator.

1. Boot to display-ready: GenOS ``start`` (QEMU launched unprivileged in its
   namespace and cgroup, until ``genos: display-ready`` on the serial console
   and the RFB banner on QEMU's VNC socket) against the bare
   ``qemu-system-x86_64`` command line with the same kernel, initramfs and a
   fresh qcow2 overlay on the same root image, run as root, until the same
   console line. Rounds alternate; the ratio is GenOS / bare (medians).
2. Deep suspend and resume (``suspend(to_disk=True)``, ``resume``) of a
   microVM booted to its desktop, for several guest memory sizes, with the
   size of the state file.
3. Host memory per VM: QEMU's RSS once the desktop is up, next to what the
   guest itself has in use (``MemTotal - MemFree``); the difference is what
   the host pays beyond guest memory.

Needs root and QEMU; the image is built on first use (cached by content in
``$GENOS_TEST_CACHE/images/qemu``). Guests have no network.

Run: .venv/bin/python bench/vm.py [--rounds 3] [--memory 512,1024,2048]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="genos-bench-vm-", dir="/var/tmp"))
TMP.chmod(0o711)
os.environ["GENOS_DATA_DIR"] = str(TMP / "data")

from genos.ids import new_env_id  # noqa: E402
from genos.runtime.images import ImageStore  # noqa: E402
from genos.runtime.qemu.cmd import Machine, kernel_args  # noqa: E402
from genos.runtime.qemu.driver import QemuDriver  # noqa: E402
from genos.runtime.qemu.guest import READY_MARK  # noqa: E402
from genos.runtime.qemu.image import ensure_boot_files, vm_spec  # noqa: E402
from genos.spec import EnvironmentSpec  # noqa: E402

CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test")) / "images"
MACHINES = {
    "microvm": ["-M", "microvm,acpi=on", "-global", "virtio-mmio.force-legacy=false"],
    "vm": ["-M", "q35"],
}
DEVICE_BUS = {"microvm": "device", "vm": "pci"}
GPU = {"microvm": "virtio-gpu-device", "vm": "virtio-vga"}


def spec(tier: str, memory_mb: int = 512) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate(
        {"name": "bench-vm", "tier": tier, "resources": {"memory_mb": memory_mb}}
    )


RUN_ROOTS: list[Path] = []


def driver(store: ImageStore) -> QemuDriver:
    run_root = Path(tempfile.mkdtemp(prefix="genos-bench-vm-", dir="/run"))
    run_root.chmod(0o711)
    RUN_ROOTS.append(run_root)
    return QemuDriver(store, run_root=run_root / "qemu", data_root=TMP / "data")


async def genos_boot(drv: QemuDriver, tier: str) -> float:
    env_id = new_env_id()
    await drv.create(env_id, spec(tier))
    try:
        began = time.perf_counter()
        await drv.start(env_id, timeout=300)
        return time.perf_counter() - began
    finally:
        await drv.destroy(env_id)


def bare_boot(store: ImageStore, tier: str, accel: str) -> float:
    boot = ensure_boot_files(store.root / "qemu", store.ensure(vm_spec(spec(tier))))
    work = Path(tempfile.mkdtemp(dir=TMP))
    disk, console = work / "disk.qcow2", work / "console.log"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(boot.root), "-F",
                    "raw", str(disk)], check=True)  # fmt: skip
    machine = Machine(tier, accel, 512, 1, 1280, 800, str(boot.kernel), str(boot.initrd),
                      nic=False, spice=False, mac="")  # fmt: skip
    bus = DEVICE_BUS[tier]
    argv = ["qemu-system-x86_64", *MACHINES[tier], "-accel", accel, "-cpu",
            "max" if accel == "tcg" else "host", "-m", "512", "-nodefaults", "-display", "none",
            "-kernel", str(boot.kernel), "-initrd", str(boot.initrd),
            "-append", kernel_args(machine),
            "-drive", f"id=root,file={disk},format=qcow2,if=none",
            "-device", f"virtio-blk-{bus},drive=root", "-device", GPU[tier],
            "-device", f"virtio-keyboard-{bus}", "-device", f"virtio-tablet-{bus}",
            "-serial", f"file:{console}"]  # fmt: skip
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (console.exists() and READY_MARK in console.read_text(errors="replace")):
            if proc.poll() is not None or time.perf_counter() - began > 300:
                raise RuntimeError(f"bare {tier} did not boot")
            time.sleep(0.02)
        return time.perf_counter() - began
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work)


async def boot_figures(store: ImageStore, rounds: int) -> None:
    drv = driver(store)
    print(f"accelerator: {drv.accelerator}; {os.cpu_count()} CPUs")
    print("\n| tier | GenOS start (median s) | bare qemu (median s) | ratio |")
    print("| --- | --- | --- | --- |")
    for tier in ("microvm", "vm"):
        await genos_boot(drv, tier)  # warm-up, builds the image if needed
        ours, bare = [], []
        for _ in range(rounds):
            ours.append(await genos_boot(drv, tier))
            bare.append(await asyncio.to_thread(bare_boot, store, tier, drv.accelerator))
        a, b = statistics.median(ours), statistics.median(bare)
        print(f"| {tier} | {a:.2f} | {b:.2f} | {a / b:.2f} |")


async def suspend_figures(store: ImageStore, sizes: list[int]) -> None:
    drv = driver(store)
    print("\n| guest memory (MiB) | suspend to disk (s) | state file (MiB) | resume (s) |"
          " QEMU RSS (MiB) | guest in use (MiB) | host overhead (MiB) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for memory in sizes:
        env_id = new_env_id()
        await drv.create(env_id, spec("microvm", memory))
        try:
            await drv.start(env_id, timeout=300)
            rss = _rss_mib((await drv.inspect(env_id)).pid or 0)
            used = await _guest_used_mib(drv, env_id)
            began = time.perf_counter()
            await drv.suspend(env_id, to_disk=True)
            saved = time.perf_counter() - began
            state = drv.paths(env_id).state.stat().st_size / 2**20
            began = time.perf_counter()
            await drv.resume(env_id)
            resumed = time.perf_counter() - began
            print(f"| {memory} | {saved:.2f} | {state:.0f} | {resumed:.2f} | {rss:.0f} |"
                  f" {used:.0f} | {rss - used:.0f} |")  # fmt: skip
        finally:
            await drv.destroy(env_id)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _guest_used_mib(drv: QemuDriver, env_id: str) -> float:
    out = (await drv.exec(env_id, "cat /proc/meminfo")).stdout
    info = {line.split(":")[0]: int(line.split()[1]) for line in out.splitlines() if ":" in line}
    return (info["MemTotal"] - info["MemFree"]) / 1024


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", default="512,1024,2048")
    args = parser.parse_args()
    store = ImageStore(CACHE)
    try:
        await boot_figures(store, args.rounds)
        await suspend_figures(store, [int(m) for m in args.memory.split(",")])
    finally:
        for path in (TMP, *RUN_ROOTS):
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
