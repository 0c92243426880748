"""Density: how many idle desktops one host carries with the default settings.

A real ``genos serve --driver oci`` with no capacity setting changed (only its
port, data dir and the warm test image store), then plain idle desktops (the
default spec: openbox, no apps, network ``none``) started one after another
until the scheduler queues one. Reported: how many ran, host memory used per
desktop (MemAvailable before and after, settled), the load average, what
``GET /v1/host`` says (requested, limits, used), and a real frame through the
gateway (WebSocket, RFB, a full Raw FramebufferUpdate) from a sample of them.

Baseline in the same run: the same number of the same desktops (same layers,
same session command) under bare ``runc run -d`` (``bench/_bare.py``), host
memory per desktop and load average the same way. Everything started is
removed at the end, GenOS's through its API.

Needs root, runc and the warm test image store. Takes a few minutes.
Run: .venv/bin/python bench/density.py [--sample 10] [--max 600] [--bare N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.api.test_server import display_token, free_port, start_server, stop

from _bare import bare_bundle, remove_bare, run_detached
from _stream_rfb import RAW, Viewer, WsLink
from genos.runtime.images import ImageStore
from genos.spec import EnvironmentSpec, dump

CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
SETTLE = 90.0  # the 1-minute load average forgets the start-up storm


def available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemAvailable")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def settle(seconds: float) -> None:
    print(f"  settling {seconds:g} s ...", flush=True)
    time.sleep(seconds)


# -- GenOS ------------------------------------------------------------------------


def fill(api: httpx.Client, limit: int) -> tuple[list[str], list[float], str]:
    """Start desktops until one is queued (or ``limit``); their ids, start times, and why it
    stopped."""
    ids: list[str] = []
    took: list[float] = []
    spec = dump(EnvironmentSpec(name="density"))
    while len(ids) < limit:
        t0 = time.perf_counter()
        body = {"spec": spec, "request_id": f"d{len(ids)}"}
        env = api.post("/v1/environments", json=body).json()
        if env.get("state") == "queued":
            api.delete(f"/v1/environments/{env['id']}")
            return ids, took, f"the scheduler queued desktop {len(ids) + 1}"
        while env.get("state") == "provisioning":
            time.sleep(0.01)
            env = api.get(f"/v1/environments/{env['id']}").json()
        if env.get("state") != "running":
            return ids, took, f"desktop {len(ids) + 1} ended {env.get('state')}: {env}"
        ids.append(env["id"])
        took.append(time.perf_counter() - t0)
        if len(ids) % 50 == 0:
            print(f"  {len(ids)} running", flush=True)
    return ids, took, f"the --max of {limit} was reached"


async def frame(url: str, token: str, env_id: str) -> tuple[int, int, int]:
    """One full Raw frame through the gateway: (width, height, distinct colours)."""
    grant = display_token(url, token, env_id)
    ws = url.replace("http://", "ws://") + f"/v1/environments/{env_id}/display?token={grant}"
    link = await WsLink.connect(ws)
    viewer = Viewer(link)
    try:
        await viewer.handshake([RAW])
        await viewer.request(incremental=False)
        pixels = bytearray()
        original = link.read_exact

        async def keep(n: int) -> bytes:
            data = await original(n)
            if n >= 1024:
                pixels.extend(data)
            return data

        link.read_exact = keep  # type: ignore[method-assign]
        update = await asyncio.wait_for(viewer.next_update(), 30)
    finally:
        await viewer.close()
    covered = sum(w * h for _, _, w, h, enc in update.rects if enc == RAW)
    if covered != viewer.width * viewer.height:
        raise RuntimeError(f"{env_id}: the frame covers {covered} pixels, not the screen")
    colours = {bytes(pixels[i : i + 3]) for i in range(0, len(pixels), 4 * 97)}
    return viewer.width, viewer.height, len(colours)


def genos_run(args: argparse.Namespace, top: Path) -> dict[str, Any]:
    root = top / "data"
    process, url = start_server(
        root, "--images-dir", str(CACHE / "images"), port=free_port()
    )  # no capacity setting: the defaults are what is measured
    token = (root / "api" / "admin.token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    api = httpx.Client(base_url=url, headers=headers, timeout=180)
    ids: list[str] = []
    try:
        settle(5)
        before, load_before = available_mib(), loadavg()
        print("GenOS: starting desktops until one is queued", flush=True)
        t0 = time.monotonic()
        ids, took, why = fill(api, args.max)
        fill_s = time.monotonic() - t0
        settle(SETTLE)
        after, load = available_mib(), loadavg()
        host = api.get("/v1/host").json()
        sample = random.Random(7).sample(ids, min(args.sample, len(ids)))  # noqa: S311
        frames = [asyncio.run(frame(url, token, env_id)) for env_id in sample]
        return {
            "count": len(ids), "why": why, "fill_s": fill_s,
            "start_p50": statistics.median(took) if took else 0.0,
            "first_p50": statistics.median(took[:50]) if took else 0.0,
            "last_p50": statistics.median(took[-50:]) if took else 0.0,
            "mib_each": (before - after) / max(1, len(ids)), "load": load,
            "load_before": load_before, "host": host, "frames": frames,
        }  # fmt: skip
    finally:
        print(f"GenOS: removing {len(ids)} desktops", flush=True)
        for env_id in ids:
            api.delete(f"/v1/environments/{env_id}")
        api.close()
        stop(process)


# -- bare runc ----------------------------------------------------------------------


async def wait_sock(sock: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_unix_connection(str(sock))
        except OSError:
            await asyncio.sleep(0.01)
            continue
        banner = await reader.readexactly(12)
        writer.close()
        if banner.startswith(b"RFB"):
            return
    raise RuntimeError(f"no RFB banner on {sock}")


def bare_run(count: int, top: Path) -> dict[str, Any]:
    spec = EnvironmentSpec(name="density")
    layers = ImageStore(CACHE / "images").ensure(spec)
    made: list[tuple[Path, str]] = []
    try:
        settle(5)
        before = available_mib()
        print(f"bare runc: starting {count} desktops", flush=True)
        t0 = time.monotonic()
        for n in range(count):
            where = top / f"bare{n}"
            where.mkdir()
            cid = f"genos-bench-density-{n}"
            bundle, sock = bare_bundle(layers, spec, where)
            made.append((where, cid))
            run_detached(bundle, cid, where / "log")
            asyncio.run(wait_sock(sock))
        fill_s = time.monotonic() - t0
        settle(SETTLE)
        each = (before - available_mib()) / max(1, count)
        return {"count": count, "fill_s": fill_s, "mib_each": each, "load": loadavg()}
    finally:
        print(f"bare runc: removing {len(made)} desktops", flush=True)
        for where, cid in made:
            remove_bare(where, cid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=10, help="desktops to take a frame from")
    parser.add_argument("--max", type=int, default=600, help="stop starting desktops here")
    parser.add_argument("--bare", type=int, default=None, help="bare desktops (default: as many)")
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="genos-density-", dir="/var/tmp"))
    top.chmod(0o711)
    try:
        ours = genos_run(args, top)
        bare = bare_run(args.bare if args.bare is not None else ours["count"], top)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    host = ours["host"]
    print(f"\n## Density ({platform.node()}, {os.cpu_count()} cpus, "
          f"{available_mib() // 1024} GiB available now)")  # fmt: skip
    print(f"GenOS (defaults): {ours['count']} desktops running; stopped because {ours['why']}")
    ms = {k: round(ours[k] * 1000) for k in ("start_p50", "first_p50", "last_p50")}
    print(f"  started in {ours['fill_s']:.0f} s (p50 {ms['start_p50']} ms each; "
          f"first 50 {ms['first_p50']} ms, last 50 {ms['last_p50']} ms)")  # fmt: skip
    print(f"  host memory per desktop {ours['mib_each']:.1f} MiB; load average "
          f"{ours['load']:.2f} (before: {ours['load_before']:.2f})")  # fmt: skip
    req, lim, used, cap = host["requested"], host["limits"], host["used"], host["capacity"]
    print(f"  /v1/host: requested {req['cpus']:.2f} cpus / {req['memory_mb']} MB of "
          f"{cap['allocatable_cpus']:g} / {cap['allocatable_memory_mb']}; limits "
          f"{lim['cpus']:g} cpus / {lim['memory_mb']} MB; used {used['cpus']} cpus / "
          f"{used['memory_mb']} MB")  # fmt: skip
    good = [f for f in ours["frames"] if f[:2] == (1280, 800)]
    print(f"  frames through the gateway: {len(good)}/{len(ours['frames'])} full 1280x800 "
          f"Raw frames (distinct colours sampled: {[f[2] for f in ours['frames']]})")  # fmt: skip
    print(f"bare runc run: {bare['count']} desktops in {bare['fill_s']:.0f} s; host memory per "
          f"desktop {bare['mib_each']:.1f} MiB; load average {bare['load']:.2f}")  # fmt: skip
    if bare["mib_each"] > 0:
        print(f"ratio GenOS/bare memory per desktop: {ours['mib_each'] / bare['mib_each']:.2f}")
    print(f"target >= 250 running with the defaults: "
          f"{'MET' if ours['count'] >= 250 else 'MISSED'} ({ours['count']})")  # fmt: skip


if __name__ == "__main__":
    main()
