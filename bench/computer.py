"""The computer API's latencies against a plain RFB client on the same display, same run.

A real ``genos serve --driver oci`` (warm test image cache) runs one headless
xterm desktop (1280x800). Each figure is measured two ways, rounds
interleaved so both see the same machine:

* **API**: what an agent does over HTTP on loopback: ``GET .../screenshot``
  (PNG, full and ``?width=1024``); ``POST .../click`` or ``.../type`` then
  ``POST .../wait {"until": "change"}`` (action to changed screen);
* **RFB**: ``bench/_stream_rfb.py``'s independent viewer straight on the
  environment's display socket (no gateway, no HTTP, no PNG): a full Raw
  framebuffer read; the same pointer or key events, then incremental requests
  until an update carries a frame rectangle (a full read before each action,
  untimed, so that update is the action's own).

Clicks alternate a double click (xterm selects a word) and a single click
(the selection goes); typing alternates ``a`` and Backspace, so every action
changes the screen. Rounds are 0.3 s apart (xterm's multi-click time).

Needs root and runc. Run: .venv/bin/python bench/computer.py [--rounds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from tests.api.test_server import start_server, stop

from _stream_rfb import RAW, SocketLink, Viewer
from genos.runtime.oci.driver import default_run_root
from genos.spec import EnvironmentSpec, dump

CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
WORD = (24, 6)  # a word of the first line xterm shows (the typed command)
GAP = 0.3


def pct(samples: list[float], q: float) -> float:
    """The q-quantile (nearest rank) in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def machine() -> str:
    """CPU model, cores, memory and kernel, one line."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    return f"{model}, {os.cpu_count()} cores, {int(mem) // 1024} MiB, Linux {platform.release()}"


class Api:
    """An agent on one environment's computer."""

    def __init__(self, url: str, token: str, env_id: str) -> None:
        self.base = f"{url}/v1/environments/{env_id}/computer"
        self.http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)

    async def post(self, path: str, **body: Any) -> dict[str, Any]:
        answer = await self.http.post(f"{self.base}/{path}", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text}")
        data: dict[str, Any] = answer.json()
        return data

    async def screenshot(self, **params: int) -> None:
        answer = await self.http.get(f"{self.base}/screenshot", params=params)
        if answer.status_code != 200 or answer.content[:4] != b"\x89PNG":
            raise RuntimeError(f"screenshot: {answer.status_code}")

    async def until_changed(self) -> None:
        if not (await self.post("wait", until="change", timeout=5))["changed"]:
            raise RuntimeError("the action did not change the screen in 5 s")


class Rfb:
    """The baseline: a plain RFB viewer on the display socket."""

    def __init__(self, viewer: Viewer) -> None:
        self.v = viewer

    async def full(self) -> None:
        await self.v.request(incremental=False)
        covered = 0
        while covered < self.v.width * self.v.height:
            update = await self.v.next_update()
            covered += sum(w * h for _x, _y, w, h, enc in update.rects if enc >= 0)

    async def until_changed(self) -> None:
        while True:
            await self.v.request(incremental=True)
            update = await asyncio.wait_for(self.v.next_update(), 5)
            if any(enc >= 0 for *_rect, enc in update.rects):
                return

    async def click(self, x: int, y: int, count: int) -> None:
        events = struct.pack("!BBHH", 5, 0, x, y)
        events += (struct.pack("!BBHH", 5, 1, x, y) + struct.pack("!BBHH", 5, 0, x, y)) * count
        await self.v.link.write(events)

    async def key(self, keysym: int) -> None:
        down, up = struct.pack("!BB2xI", 4, 1, keysym), struct.pack("!BB2xI", 4, 0, keysym)
        await self.v.link.write(down + up)


async def timed(action: Callable[[], Awaitable[None]]) -> float:
    began = time.perf_counter()
    await action()
    return time.perf_counter() - began


async def measure(api: Api, rfb: Rfb, rounds: int) -> dict[str, list[float]]:
    """Every figure's samples, rounds of the two ways interleaved."""
    out: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        out.setdefault(name, []).append(value)

    for _ in range(rounds):
        add("screenshot full: API", await timed(api.screenshot))
        add("screenshot 1024 wide: API", await timed(lambda: api.screenshot(width=1024)))
        add("screenshot full: RFB", await timed(rfb.full))
    # Actions alternate so each changes the screen: double click (a word selected),
    # single click (selection gone); "a", Backspace. The two ways take turns first.
    for i in range(rounds):
        api_first = i % 2 == 0

        async def api_click(n: int = 2 if api_first else 1) -> None:
            await api.post("click", x=WORD[0], y=WORD[1], count=n)
            await api.until_changed()

        async def rfb_click(n: int = 1 if api_first else 2) -> None:
            await rfb.click(*WORD, n)
            await rfb.until_changed()

        for name, action in [("API", api_click), ("RFB", rfb_click)][:: 1 if api_first else -1]:
            await asyncio.sleep(GAP)
            if name == "RFB":
                await rfb.full()  # untimed: its next update shows only what its action did
            add(f"click to changed screen: {name}", await timed(action))
    for i in range(rounds):
        api_first = i % 2 == 0

        async def api_type(text: str = "a" if api_first else "\b") -> None:
            await api.post("type", text=text)
            await api.until_changed()

        async def rfb_type(keysym: int = 0xFF08 if api_first else ord("a")) -> None:
            await rfb.key(keysym)
            await rfb.until_changed()

        for name, action in [("API", api_type), ("RFB", rfb_type)][:: 1 if api_first else -1]:
            await asyncio.sleep(GAP / 3)
            if name == "RFB":
                await rfb.full()
            add(f"type to changed screen: {name}", await timed(action))
    return out


def report(samples: dict[str, list[float]], rounds: int) -> None:
    print(f"\nmachine: {machine()}")
    print(f"rounds: {rounds} of each\n")
    print(f"{'figure':40} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in samples.items():
        mean = statistics.fmean(values) * 1000
        print(f"{name:40} {pct(values, 0.5):8.1f} {pct(values, 0.99):8.1f} {mean:8.1f}")
    print()
    for figure in ("click to changed screen", "type to changed screen", "screenshot full"):
        api, rfb = samples[f"{figure}: API"], samples[f"{figure}: RFB"]
        ratio = pct(api, 0.5) / pct(rfb, 0.5)
        print(f"{figure}: API / RFB at p50 = {ratio:.2f}x")
    scaled, rfb = samples["screenshot 1024 wide: API"], samples["screenshot full: RFB"]
    print(f"screenshot 1024 wide: API / RFB full at p50 = {pct(scaled, 0.5) / pct(rfb, 0.5):.2f}x")


async def run(url: str, token: str, env_id: str, rounds: int) -> dict[str, list[float]]:
    api = Api(url, token, env_id)
    socket = default_run_root() / env_id / "display" / "rfb.sock"
    viewer = Viewer(await SocketLink.unix(str(socket)))
    try:
        await viewer.handshake([RAW, 1])  # Raw and CopyRect: what the API's client asks for
        await api.post("wait", until="settle", quiet=1.0, timeout=30)
        await api.post("click", x=640, y=400)
        await api.post("type", text="echo genos computer benchmark\n")
        await api.post("wait", until="settle", quiet=0.5, timeout=10)
        # Warm both paths (first PNG encode, first connection) before timing.
        await api.screenshot()
        await Rfb(viewer).full()
        return await measure(api, Rfb(viewer), rounds)
    finally:
        await viewer.close()
        await api.http.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="genos-bench-computer-", dir="/var/tmp"))
    top.chmod(0o711)
    root = top / "data"
    server_args = ["--driver", "oci", "--cpus", "2", "--memory-mb", "4096"]
    process, url = start_server(root, *server_args, "--images-dir", str(CACHE / "images"))
    token = (root / "api" / "admin.token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    env_id = ""
    try:
        spec = {**dump(EnvironmentSpec(name="bench-computer")), "display": {"headless": True}}
        body = {"spec": spec, "wait": True, "timeout": 120}
        env = httpx.post(f"{url}/v1/environments", json=body, headers=headers, timeout=180).json()
        if env.get("state") != "running":
            raise SystemExit(f"the desktop did not start: {env}")
        env_id = env["id"]
        samples = asyncio.run(run(url, token, env_id, args.rounds))
        report(samples, args.rounds)
    finally:
        if env_id:
            httpx.delete(f"{url}/v1/environments/{env_id}", headers=headers, timeout=120)
        stop(process)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
