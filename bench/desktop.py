"""Desktop shell: the idle memory the panel, menus and wallpaper add.

The default desktop (openbox, no apps, network ``none``) on real runc, once
with the shell (``genos-shell``: tint2, the wallpaper) and once without it
(``GENOS_SHELL=0`` in the session's environment, the same layers), in
alternation. For each, after the desktop has settled: the cgroup's memory
(``memory.current``, what the environment is charged) and the sum of the
proportional set sizes of its processes (``/proc/*/smaps_rollup``), plus the
shell's own processes and the idle sound server's (pulseaudio, socat). Everything
started is destroyed at the end.

Needs root, runc and the warm test image store.
Run: .venv/bin/python bench/desktop.py [--rounds 2] [--settle 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.sandbox.probes import running_env

from genos.runtime.images import ImageStore
from genos.runtime.oci import provision
from genos.spec import EnvironmentSpec

CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
PSS = (
    "for p in /proc/[0-9]*; do c=$(cat $p/comm 2>/dev/null) || continue;"
    " k=$(awk '/^Pss:/ {print $2}' $p/smaps_rollup 2>/dev/null); echo \"$c ${k:-0}\"; done"
)
SHELL_PROCS = {"tint2", "genos-shell", "hsetroot"}
SOUND_PROCS = {"pulseaudio", "socat"}


def measure(shell: bool, settle: float, data: Path) -> dict[str, float]:
    """One desktop with or without the shell: cgroup MiB, PSS MiB, the shell's PSS MiB."""
    real_env = provision.session_env

    def env_with_switch(spec: EnvironmentSpec) -> dict[str, str]:
        return {**real_env(spec), "GENOS_SHELL": "1" if shell else "0"}

    provision.session_env = env_with_switch  # type: ignore[assignment]
    try:
        store = ImageStore(CACHE / "images")
        spec = EnvironmentSpec(name="desktop-bench")
        with asyncio.Runner() as runner, running_env(runner, store, spec, data) as env:
            time.sleep(settle)
            usage = runner.run(env.driver.inspect(env.env_id)).usage
            rows = [line.split() for line in env.sh(PSS).stdout.splitlines()]
            pss = {name: int(kib) for name, kib in (r for r in rows if len(r) == 2)}
            total = sum(int(r[1]) for r in rows if len(r) == 2)
            own = sum(int(r[1]) for r in rows if len(r) == 2 and r[0] in SHELL_PROCS)
            sound = sum(int(r[1]) for r in rows if len(r) == 2 and r[0] in SOUND_PROCS)
            return {
                "cgroup": (usage.memory_bytes if usage else 0) / 2**20,
                "pss": total / 1024,
                "shell": own / 1024,
                "xvnc": pss.get("Xvnc", 0) / 1024,
                "sound": sound / 1024,
            }
    finally:
        provision.session_env = real_env  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=8.0)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="genos-bench-desktop-", dir="/var/tmp"))
    os.environ["GENOS_DATA_DIR"] = str(data)
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    try:
        for _ in range(args.rounds):
            for shell in (False, True):
                results[shell].append(measure(shell, args.settle, data))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(
        "| desktop | cgroup memory MiB | PSS of all processes MiB | Xvnc PSS MiB"
        " | shell PSS MiB | sound server PSS MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for shell in (False, True):
        rows = results[shell]

        def med(key: str, rows: list[dict[str, float]] = rows) -> str:
            return f"{statistics.median(r[key] for r in rows):.1f}"

        label = "openbox + shell" if shell else "openbox only"
        figures = " | ".join(med(k) for k in ("cgroup", "pss", "xvnc", "shell", "sound"))
        print(f"| {label} | {figures} |")
    add = {
        k: statistics.median(r[k] for r in results[True])
        - statistics.median(r[k] for r in results[False])
        for k in ("cgroup", "pss")
    }
    print(f"\nthe shell adds {add['cgroup']:.1f} MiB of cgroup memory, {add['pss']:.1f} MiB of PSS")


if __name__ == "__main__":
    main()
