"""Live migration figures: a microVM moved between two QEMU drivers (two nodes) on this machine.

For each guest memory size, one microVM boots on node ``bench-a`` with half
its memory filled with random data in a tmpfs (a working set QEMU must send
page by page: zero pages would cost nothing), and a ticker inside the guest
writes ``T<n>`` to the serial console every 10 ms (perl, no fork). The host
follows both nodes' console files every 0.5 ms and timestamps each tick as it
arrives; the guest's downtime is the largest gap between two ticks (under
TCG the guest's own clock stands still while it is paused, so the gap must be
seen from outside).

1. Live migration to node ``bench-b`` over loopback with TLS (block
   migration of the overlay and RAM): the time to prepare the target
   (provision from the cached image, QEMU started paused), the migration
   itself (``migrate_out`` and ``finish_incoming`` together), QEMU's own
   downtime figure, and the ticker's largest gap.
2. Baseline on the same VM, now on ``bench-b``: moving it "as a file", i.e.
   suspend to disk and restore (the copy of the state file and overlay to
   another host would come on top and is not counted).

Ratios: baseline / migration, for the time the guest is away and the total.
Needs root and QEMU; the image is built on first use (cached by content).

Run: .venv/bin/python bench/migrate.py [--memory 512,1024,2048]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

TMP = Path(tempfile.mkdtemp(prefix="genos-bench-migrate-", dir="/var/tmp"))
TMP.chmod(0o711)
os.environ["GENOS_DATA_DIR"] = str(TMP / "data")

from genos.cluster import pki  # noqa: E402
from genos.ids import new_env_id  # noqa: E402
from genos.paths import acting_as  # noqa: E402
from genos.runtime.images import ImageStore  # noqa: E402
from genos.runtime.qemu.driver import QemuDriver  # noqa: E402
from genos.runtime.qemu.host import remove_parent  # noqa: E402
from genos.spec import EnvironmentSpec  # noqa: E402

T = TypeVar("T")
CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test")) / "images"
A, B = "bench-a", "bench-b"
TICKER = (
    'echo \'$|=1; open(my $t, ">", "/dev/ttyS0") or die; my $i = 0;'
    ' while (1) { print $t "T", $i++, "\\n"; select(undef, undef, undef, 0.01) }\''
    " >/root/ticker.pl && setsid perl /root/ticker.pl </dev/null >/dev/null 2>&1 & echo $!"
)
RUN_ROOTS: list[Path] = []


def spec(memory_mb: int) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate(
        {"name": "bench-migrate", "tier": "microvm", "resources": {"memory_mb": memory_mb}}
    )


async def on(node: str, work: Awaitable[T]) -> T:
    with acting_as(node):
        return await work


def driver(store: ImageStore, node: str) -> QemuDriver:
    run_root = Path(tempfile.mkdtemp(prefix=f"genos-{node}-", dir="/run"))
    run_root.chmod(0o711)
    RUN_ROOTS.append(run_root)
    return QemuDriver(store, run_root=run_root / "qemu", data_root=TMP / node)


class Ticks(threading.Thread):
    """Timestamps the guest's ticks as they reach the console files QEMU writes."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.files: dict[Path, int] = {}
        self.arrivals: list[tuple[float, int]] = []
        self.partial: dict[Path, bytes] = {}
        self.stop = threading.Event()

    def follow(self, path: Path) -> None:
        self.files.setdefault(path, path.stat().st_size if path.exists() else 0)

    def run(self) -> None:
        while not self.stop.is_set():
            for path, offset in list(self.files.items()):
                self._read(path, offset)
            time.sleep(0.0005)

    def _read(self, path: Path, offset: int) -> None:
        try:
            size = path.stat().st_size
            if size < offset:  # a new QEMU truncated it (restore)
                offset, self.partial[path] = 0, b""
            if size == offset:
                return
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(size - offset)
        except OSError:
            return
        now = time.monotonic()
        self.files[path] = offset + len(data)
        lines = (self.partial.get(path, b"") + data).split(b"\n")
        self.partial[path] = lines.pop()
        for line in lines:
            text = line.strip().decode(errors="replace")
            if text.startswith("T") and text[1:].isdigit():
                self.arrivals.append((now, int(text[1:])))

    def gap_ms(self, since: float, until: float) -> float:
        """The largest gap between ticks that arrived in [since, until], and the one before (ms)."""
        times = sorted(t for t, _ in self.arrivals if t <= until)
        first = max(bisect.bisect_left(times, since) - 1, 0)
        times = times[first:]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000

    def lost(self) -> int:
        """Ticks missing in the sequence that arrived."""
        seen = sorted({n for _, n in self.arrivals})
        return (seen[-1] - seen[0] + 1 - len(seen)) if seen else 0


async def guest(drv: QemuDriver, env_id: str, command: str, timeout: float = 300) -> str:
    result = await drv.exec(env_id, command, timeout=timeout)
    if result.code != 0:
        raise RuntimeError(f"{command!r}: {result.stdout}")
    return result.stdout


async def one_size(store: ImageStore, ids: dict[str, pki.Identity], memory: int) -> None:
    src, dst = driver(store, A), driver(store, B)
    env_id, ticks = new_env_id(), Ticks()
    try:
        await on(A, src.create(env_id, spec(memory)))
        await on(A, src.start(env_id, timeout=600))
        half = memory // 2
        await guest(src, env_id, f"mkdir -p /ballast && mount -t tmpfs -o size={half + 16}M "
                    f"tmpfs /ballast && head -c {half}M /dev/urandom >/ballast/data")  # fmt: skip
        ticks.follow(src.paths(env_id).console)
        ticks.start()
        await guest(src, env_id, TICKER)
        await asyncio.sleep(3.0)
        idle = ticks.gap_ms(time.monotonic() - 2.0, time.monotonic())
        began = time.monotonic()
        facts = src.migration_source(env_id)
        port = await on(B, dst.prepare_incoming(env_id, spec(memory), facts, tls=ids[B]))
        ticks.follow(dst.paths(env_id).console)
        prepared = time.monotonic()
        outcome, _ = await asyncio.gather(
            on(A, src.migrate_out(env_id, "127.0.0.1", port, tls=ids[A])),
            on(B, dst.finish_incoming(env_id)),
        )
        moved = time.monotonic()
        await on(A, src.destroy(env_id))
        await asyncio.sleep(2.0)
        live_gap = ticks.gap_ms(prepared, time.monotonic())
        saved_began = time.monotonic()
        await on(B, dst.suspend(env_id, to_disk=True))
        state_mib = dst.paths(env_id).state.stat().st_size / 2**20
        await on(B, dst.resume(env_id))
        restored = time.monotonic()
        await asyncio.sleep(2.0)
        file_gap = ticks.gap_ms(saved_began, time.monotonic())
        ticks.stop.set()
        live_total, file_total = moved - prepared, restored - saved_began
        print(f"| {memory} | {prepared - began:.2f} | {live_total:.2f} | {outcome.downtime_ms} | "
              f"{live_gap:.0f} | {file_total:.2f} | {state_mib:.0f} | {file_gap:.0f} | "
              f"{file_gap / live_gap:.1f} | {file_total / live_total:.2f} | {idle:.0f} | "
              f"{ticks.lost()} |", flush=True)  # fmt: skip
    finally:
        ticks.stop.set()
        await on(A, src.destroy(env_id))
        await on(B, dst.destroy(env_id))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", default="512,1024,2048")
    args = parser.parse_args()
    store = ImageStore(CACHE)
    pki_dir = TMP / "pki"
    ids = {node: pki.issue(pki_dir, node, "node", ["127.0.0.1"]) for node in (A, B)}
    try:
        print(f"accelerator: {driver(store, A).accelerator}; {os.cpu_count()} CPUs; microvm, "
              "1 vCPU, half the memory filled with random data")  # fmt: skip
        print("\n| guest MiB | prepare target (s) | live migration (s) | QEMU downtime (ms) "
              "| ticker gap, live (ms) | suspend+restore (s) | state file (MiB) "
              "| ticker gap, file (ms) | gap ratio file/live | time ratio file/live "
              "| idle ticker gap (ms) | ticks lost |")  # fmt: skip
        print("| " + " | ".join(["---"] * 12) + " |")
        for memory in (int(m) for m in args.memory.split(",")):
            await one_size(store, ids, memory)
    finally:
        for node in (A, B):
            with acting_as(node):
                remove_parent()
        for path in [TMP, *RUN_ROOTS]:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
