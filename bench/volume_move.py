"""What carrying a container's volume to another node costs, against its size.

A drain's container move stops the container, carries its volume from the
source node's relay to the target's through the control plane (mutual TLS
both ways, a tar staged in a file on each side, :func:`genos.node.relay.carry_volume`),
and starts it there. This measures the carry, the part that grows with the
volume: two real relays on loopback with their own volume stores, a control
plane's certificate, volumes of N MiB (files of 1 MiB of random bytes, so
nothing compresses). Baseline in the same run: ``cp -a`` of the same tree
on the same disk (what a move would cost with no network, TLS or staging).

Run as root (the volumes' files belong to uid 1000):
    .venv/bin/python bench/volume_move.py [--sizes 16,128,512]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genos.cluster import pki
from genos.node.local import DemoDriver
from genos.node.relay import Relay, carry_volume, client_context
from genos.runtime.volumes import VolumeStore

MIB = 1 << 20


def fill(store: VolumeStore, name: str, mib: int) -> Path:
    """A plain volume of ``mib`` files of 1 MiB of random bytes."""
    data = store.ensure("bench", name, encrypted=False).data
    for n in range(mib):
        path = data / f"f{n:05d}"
        path.write_bytes(os.urandom(MIB))
        os.chown(path, 1000, 1000)
    return data


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


async def carry(top: Path, sizes: list[int]) -> list[tuple[int, float, float]]:
    """(MiB, carry seconds, cp -a seconds) per size."""
    certs = top / "pki"
    stores = {n: VolumeStore(top / n / "volumes") for n in ("a", "b")}
    relays = {n: Relay(DemoDriver(top / n / "d"), pki.issue(certs, n, "node", ["127.0.0.1"]),
                       "127.0.0.1", 0, stores[n]) for n in ("a", "b")}  # fmt: skip
    for relay in relays.values():
        await relay.start()
    context = client_context(pki.issue(certs, "cp", "control-plane", ["127.0.0.1"]))
    rows = []
    try:
        for mib in sizes:
            name = f"v{mib}"
            data = fill(stores["a"], name, mib)
            copy = top / f"copy-{mib}"
            began = time.perf_counter()
            await asyncio.to_thread(_sh, "cp", "-a", str(data), str(copy))
            await asyncio.to_thread(_sh, "sync")
            baseline = time.perf_counter() - began
            shutil.rmtree(copy)
            began = time.perf_counter()
            await carry_volume(("127.0.0.1", relays["a"].port), ("127.0.0.1", relays["b"].port),
                               "bench", name, context)  # fmt: skip
            await asyncio.to_thread(_sh, "sync")
            took = time.perf_counter() - began
            assert len(list(stores["b"].volume("bench", name).data.iterdir())) == mib
            stores["b"].rm("bench", name)
            rows.append((mib, took, baseline))
    finally:
        for relay in relays.values():
            await relay.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="16,128,512", help="volume sizes in MiB")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    top = Path(tempfile.mkdtemp(prefix="genos-bench-volume-", dir="/var/tmp"))
    try:
        rows = asyncio.run(carry(top, sizes))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print(f"# bench/volume_move.py on {os.cpu_count()} CPUs")
    print("| volume MiB | carried s | MiB/s | cp -a s (baseline) | carry / cp -a |")
    print("| --- | --- | --- | --- | --- |")
    for mib, took, baseline in rows:
        print(f"| {mib} | {took:.2f} | {mib / took:.0f} | {baseline:.2f} | {took / baseline:.1f} |")


if __name__ == "__main__":
    main()
