"""Provisioning figures: warm start to RFB-ready, idle memory, and (``--cold``) image builds.

1. Warm start: N rounds of GenOS ``create`` + ``start`` until the RFB banner
   answers on ``driver.display(id)``, against a bare ``runc run -d`` of the
   same layers (an overlay mounted beforehand, untimed) with a minimal
   ``runc spec`` config running the same session command, timed until its
   banner answers on the host socket. Rounds alternate; one untimed warm-up
   of each comes first. Network mode ``none`` for both.
2. Memory: one idle desktop, settled for 3 s; the sum of PSS of every process
   in its cgroup, and how many such desktops fit in 20 GiB.
3. ``--cold`` (minutes, downloads from the Debian mirror): a layered build of
   base+desktop+firefox-esr into a fresh store against one plain mmdebstrap
   of the same packages; then a second app set (gimp) reusing base+desktop.

Needs root, runc and the warm test image store (``$GENOS_TEST_CACHE/images``).

Run: .venv/bin/python bench/provision.py [--rounds 10] [--cold]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="genos-bench-"))
# Before importing GenOS: the audit log and env dirs go to a throw-away data dir.
os.environ["GENOS_DATA_DIR"] = str(TMP / "data")

from _bare import bare_bundle, remove_bare, run_detached  # noqa: E402
from genos.errors import GenOSError  # noqa: E402
from genos.ids import new_env_id  # noqa: E402
from genos.runtime.images import (  # noqa: E402
    ImageStore,
    Layer,
    unmount_root,
)
from genos.runtime.images.archive import sources  # noqa: E402
from genos.runtime.images.recipes import BASE_PACKAGES, DESKTOP_PACKAGES, WM_PACKAGES  # noqa: E402
from genos.runtime.oci.driver import OCIDriver  # noqa: E402
from genos.sandbox import cgroups  # noqa: E402
from genos.sandbox.network import NetworkSandbox  # noqa: E402
from genos.spec import App, EnvironmentSpec, WindowManager  # noqa: E402

CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
BANNER = b"RFB 003.008\n"
BUDGET_MIB = 20 * 1024


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def banner(sock: Path) -> bytes:
    """The first 12 bytes the socket sends, or b"" if nothing listens yet."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))
    except OSError:
        return b""
    try:
        return await asyncio.wait_for(reader.readexactly(len(BANNER)), 1.0)
    except (asyncio.IncompleteReadError, OSError, TimeoutError):
        return b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def wait_banner(sock: Path, timeout: float = 20.0) -> None:
    """Poll every millisecond until ``sock`` answers the RFB 3.8 banner."""
    deadline = time.monotonic() + timeout
    while await banner(sock) != BANNER:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no RFB banner on {sock} within {timeout:g}s")
        await asyncio.sleep(0.001)


# -- GenOS -------------------------------------------------------------------------


def make_driver(store: ImageStore) -> OCIDriver:
    data = TMP / "data"
    # No uplink: nothing of the benchmark can reach beyond this host.
    network = NetworkSandbox(data / "network", uplinks=(), dns_servers=())
    return OCIDriver(store, network=network, data_root=data)


async def genos_round(driver: OCIDriver, spec: EnvironmentSpec) -> float:
    env_id = new_env_id()
    try:
        began = time.perf_counter()
        await driver.create(env_id, spec)
        await driver.start(env_id)
        await wait_banner(driver.display(env_id))
        return time.perf_counter() - began
    finally:
        await driver.destroy(env_id)


# -- bare runc ---------------------------------------------------------------------


async def bare_round(layers: list[Layer], spec: EnvironmentSpec, n: int) -> float:
    where = Path(tempfile.mkdtemp(prefix=f"bare{n}-", dir=TMP))
    cid = f"genos-bench-bare-{n}"
    try:
        bundle, sock = bare_bundle(layers, spec, where)
        began = time.perf_counter()
        run_detached(bundle, cid, where / "log")
        await wait_banner(sock)
        return time.perf_counter() - began
    finally:
        remove_bare(where, cid)


# -- the figures -------------------------------------------------------------------


async def warm_start(store: ImageStore, spec: EnvironmentSpec, rounds: int) -> None:
    layers = store.ensure(spec)
    driver = make_driver(store)
    await genos_round(driver, spec)  # warm-up, untimed
    await bare_round(layers, spec, -1)
    ours: list[float] = []
    bare: list[float] = []
    for n in range(rounds):
        ours.append(await genos_round(driver, spec))
        bare.append(await bare_round(layers, spec, n))
    await driver.aclose()
    med_o, med_b = statistics.median(ours) * 1000, statistics.median(bare) * 1000
    ratio = med_o / med_b
    print(f"warm start to RFB banner, N={rounds} each (alternating, after one warm-up):")
    print(f"  GenOS create+start   median {med_o:7.1f} ms  p90 {pct(ours, 0.9) * 1000:7.1f} ms")
    print(f"  bare runc run -d     median {med_b:7.1f} ms  p90 {pct(bare, 0.9) * 1000:7.1f} ms")
    print(f"  ratio GenOS/bare (median) {ratio:.2f}  (p90 {pct(ours, 0.9) / pct(bare, 0.9):.2f})")
    print(f"  target ratio <= 1.5: {'HOLDS' if ratio <= 1.5 else 'MISSED'}")
    print(f"  target GenOS median < 150 ms: {'HOLDS' if med_o < 150 else 'MISSED'}")


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # exited meanwhile
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def env_pss(env_id: str) -> tuple[list[str], float]:
    """Names of the env's processes (from its cgroup) and their summed PSS in MiB."""
    pids = cgroups.tasks(env_id)
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            names.append("?")
    return names, sum(pss_kib(pid) for pid in pids) / 1024


async def idle_memory(store: ImageStore, spec: EnvironmentSpec) -> None:
    driver = make_driver(store)
    env_id = new_env_id()
    try:
        await driver.create(env_id, spec)
        await driver.start(env_id)
        await asyncio.sleep(3)
        names, mib = env_pss(env_id)
    finally:
        await driver.destroy(env_id)
        await driver.aclose()
    print("idle desktop memory (openbox, no apps, 3 s after RFB-ready):")
    print(f"  {len(names)} processes: {', '.join(sorted(names))}")
    print(f"  PSS total {mib:.1f} MiB -> {int(BUDGET_MIB // mib)} desktops fit in 20 GiB")


def cold_builds(where: Path) -> None:
    firefox = EnvironmentSpec(
        apps=[App(name="Firefox", packages=["firefox-esr"], command="firefox-esr")]
    )
    gimp = EnvironmentSpec(apps=[App(name="GIMP", packages=["gimp"], command="gimp")])
    store = ImageStore(where / "store")
    plain = where / "plain"
    packages = [*BASE_PACKAGES, *DESKTOP_PACKAGES, *WM_PACKAGES[WindowManager.OPENBOX]]
    argv = ["mmdebstrap", "--mode=root", "--variant=minbase",
            "--include=" + ",".join([*packages, "firefox-esr"]),
            "bookworm", str(plain), *sources("bookworm")]  # fmt: skip
    try:
        began = time.perf_counter()
        store.ensure(firefox)
        layered = time.perf_counter() - began
        began = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)
        flat = time.perf_counter() - began
        began = time.perf_counter()
        store.ensure(gimp)
        second = time.perf_counter() - began
    finally:
        unmount_root(plain)
        shutil.rmtree(where, ignore_errors=True)
    print("cold builds (fresh store, downloads included):")
    print(f"  layered base+desktop+firefox-esr  {layered:7.1f} s")
    print(f"  plain mmdebstrap, same packages   {flat:7.1f} s")
    print(f"  second app set (gimp), reuses base+desktop  {second:7.1f} s")
    ratio, reuse = layered / flat, second / layered
    print(f"  layered/plain {ratio:.2f}: target <= 1.2 {'HOLDS' if ratio <= 1.2 else 'MISSED'}")
    print(f"  second/first {reuse:.2f}: target <= 0.5 {'HOLDS' if reuse <= 0.5 else 'MISSED'}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--cold", action="store_true", help="also the slow cold builds")
    args = parser.parse_args()
    store = ImageStore(CACHE / "images")
    spec = EnvironmentSpec()  # network mode none
    await warm_start(store, spec, args.rounds)
    print()
    await idle_memory(store, spec)
    if args.cold:
        print()
        await asyncio.to_thread(cold_builds, TMP / "cold")


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks tear everything down


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    try:
        asyncio.run(main())
    except GenOSError as exc:
        raise SystemExit(f"bench failed: {exc}") from exc
    finally:
        unmount_root(TMP)
        shutil.rmtree(TMP, ignore_errors=True)
