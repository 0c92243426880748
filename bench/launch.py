"""Launch: from a request to a desktop, with a warm pool and without one.

A real ``genos serve --driver oci`` (default settings) over the warm test
image store; the request is the words of an xterm desktop. Three figures,
each with the pool against without it in the same run (rounds alternate):

1. Server side, request to RFB-ready: from a pool, the ``Server-Timing`` of
   ``POST /v1/environments`` (the answer is ``running``: its display answers
   already); without, the server's own clock from the ``requested`` event to
   the ``running`` transition (``display ready`` comes with it).
2. ``genos up "<words>" --json`` wall time, end to end (a process started the
   way a person starts it, until it prints the sign-in URL).
3. The web client: Launch clicked (the prompt composed already, as a person
   reads the spec first) until the desktop's canvas has drawn the xterm, in
   Debian's chromium (headless, Playwright), on the page's own clock: from
   the click event to the first animation frame that shows it.

Between rounds the pool is refilled outside the clock.
Needs root and runc. Run: .venv/bin/python bench/launch.py [--rounds 15] [--size 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from playwright.sync_api import sync_playwright
from tests.api.test_server import BIN, free_port, start_server, stop
from tests.web.test_browser import CANVAS_PIXELS

CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
CHROMIUM = os.environ.get("GENOS_CHROMIUM", "/usr/bin/chromium")
POOLED = "a desktop with xterm"
UNPOOLED = "a desktop with xterm and no clipboard"  # the same desktop, another digest


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    """The server, an admin client, and the environments made (removed at the end)."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root
        self.token = (root / "api" / "admin.token").read_text().strip()
        self.api = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120
        )
        self.made: list[str] = []
        self.pool = ""

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")}
        return clean | {"GENOS_URL": self.url, "GENOS_DATA_DIR": str(self.root)}

    def set_pool(self, size: int) -> None:
        pool = self.api.put("/v1/pools", json={"prompt": POOLED, "size": size}).json()
        self.pool = pool["id"]
        self.refilled(size)

    def refilled(self, size: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pools = {p["id"]: p for p in self.api.get("/v1/pools").json()}
            if pools[self.pool]["ready"] >= size:
                return
            time.sleep(0.05)
        raise RuntimeError("the pool did not refill in 120 s")

    def remove(self, env_id: str) -> None:
        self.api.delete(f"/v1/environments/{env_id}")

    def post(self, prompt: str) -> tuple[dict[str, Any], float]:
        answer = self.api.post("/v1/environments", json={"prompt": prompt})
        answer.raise_for_status()
        env: dict[str, Any] = answer.json()
        self.made.append(env["id"])
        return env, float(answer.headers["Server-Timing"].split("dur=")[1]) / 1000

    def provisioned(self, env_id: str) -> float:
        """Seconds on the server's clock from ``requested`` to ``running``."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            events = self.api.get(f"/v1/environments/{env_id}/events",
                                  params={"follow": "false"}).text  # fmt: skip
            stamps = {}
            for line in events.splitlines():
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event["type"] == "state":
                        stamps.setdefault(event["state"], datetime.fromisoformat(event["time"]))
            if "running" in stamps:
                return (stamps["running"] - stamps["requested"]).total_seconds()
            if "failed" in stamps:
                raise RuntimeError(f"{env_id} failed")
            time.sleep(0.05)
        raise RuntimeError(f"{env_id} did not run in 120 s")


def server_side(bench: Bench, rounds: int, size: int) -> tuple[list[float], list[float]]:
    pooled, fresh = [], []
    for _ in range(rounds):
        env, took = bench.post(POOLED)
        assert (env["state"], env["pool"]) == ("running", bench.pool), env
        pooled.append(took)
        bench.remove(env["id"])
        env, took = bench.post(UNPOOLED)
        fresh.append(bench.provisioned(env["id"]))
        bench.remove(env["id"])
        bench.refilled(size)
    return pooled, fresh


def cli_up(bench: Bench, prompt: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    done = subprocess.run([str(BIN / "genos"), "up", prompt, "--json"], env=bench.env(),
                          capture_output=True, text=True, check=True)  # fmt: skip
    took = time.perf_counter() - t0
    env: dict[str, Any] = json.loads(done.stdout)
    bench.made.append(env["id"])
    return took, env


def cli(bench: Bench, rounds: int, size: int) -> tuple[list[float], list[float], list[float]]:
    pooled, fresh, floor = [], [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "genos"), "--help"], env=bench.env(), capture_output=True,
                       check=True)  # fmt: skip
        floor.append(time.perf_counter() - t0)
        took, env = cli_up(bench, POOLED)
        assert (env["state"], env["pool"]) == ("running", bench.pool), env
        pooled.append(took)
        bench.remove(env["id"])
        took, env = cli_up(bench, UNPOOLED)
        fresh.append(took)
        bench.remove(env["id"])
        bench.refilled(size)
    return pooled, fresh, floor


def browser(bench: Bench, rounds: int, size: int) -> tuple[list[float], list[float]]:
    password = "correct horse battery staple"  # noqa: S105 - a throw-away user of the bench
    bench.api.post("/v1/users", json={"name": "launcher", "password": password})
    pooled, fresh = [], []
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=["--no-sandbox"])  # fmt: skip
        page = chromium.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(bench.url + "/")
        page.get_by_test_id("login-username").fill("launcher")
        page.get_by_test_id("login-password").fill(password)
        page.get_by_test_id("login-submit").click()
        page.get_by_test_id("prompt-input").wait_for()
        for _ in range(rounds):
            pooled.append(click_to_frame(page, bench, POOLED))
            fresh.append(click_to_frame(page, bench, UNPOOLED))
            bench.refilled(size)
        chromium.close()
    return pooled, fresh


# Armed on the Launch button: the page's own clock from the click to the first
# animation frame whose canvas shows the xterm (what the person sees, at the
# screen's refresh; no polling from outside in the figure).
ARM = f"""() => {{
  const pixels = {CANVAS_PIXELS};
  window.__launch = {{ clicked: null, drawn: null }};
  const button = document.querySelector('[data-testid=launch]');
  button.addEventListener('click', () => {{
    window.__launch.clicked = performance.now();
    const check = () => {{
      if (pixels().drawn > 100) window.__launch.drawn = performance.now();
      else requestAnimationFrame(check);
    }};
    requestAnimationFrame(check);
  }}, {{ capture: true, once: true }});
}}"""
DRAWN = "() => window.__launch && window.__launch.drawn && window.__launch"


def click_to_frame(page: Any, bench: Bench, prompt: str) -> float:
    page.goto(bench.url + "/#/")
    page.get_by_test_id("prompt-input").fill(prompt)
    page.get_by_test_id("prompt-input").press("Control+Enter")
    page.get_by_test_id("launch").wait_for()
    page.evaluate(ARM)
    page.get_by_test_id("launch").click()
    deadline = time.monotonic() + 120
    while not (stamps := page.evaluate(DRAWN)):
        if time.monotonic() > deadline:
            raise TimeoutError("no frame in 120 s")
        page.wait_for_timeout(20)
    env_id = page.url.split("#/env/")[1].split("?")[0]
    bench.made.append(env_id)
    bench.remove(env_id)
    return float(stamps["drawn"] - stamps["clicked"]) / 1000


def report(name: str, pooled: list[float], fresh: list[float], target: float) -> None:
    p50, f50 = statistics.median(pooled), statistics.median(fresh)
    verdict = "MET" if p50 < target else "MISSED"
    print(f"| {name} | {p50 * 1000:.1f} | {pct(pooled, 0.9) * 1000:.1f} | {f50 * 1000:.0f} | "
          f"{f50 / p50:.1f}x | < {target * 1000:.0f} ms: {verdict} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", type=int, default=3)
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="genos-launch-", dir="/var/tmp"))
    top.chmod(0o711)
    process, url = start_server(top / "data", "--images-dir", str(CACHE / "images"),
                                port=free_port())  # fmt: skip
    bench = Bench(url, top / "data")
    try:
        bench.set_pool(args.size)
        for prompt in (POOLED, UNPOOLED):  # warm-up: images, composer, caches (untimed)
            env, _ = bench.post(prompt)
            bench.provisioned(env["id"])
            bench.remove(env["id"])
        bench.refilled(args.size)
        server = server_side(bench, args.rounds, args.size)
        up = cli(bench, args.rounds, args.size)
        web = browser(bench, args.rounds, args.size)
    finally:
        for env_id in bench.made:
            bench.remove(env_id)
        bench.api.delete(f"/v1/pools/{bench.pool}")
        bench.api.close()
        stop(process)
        shutil.rmtree(top, ignore_errors=True)
    print(f"\n## Launch ({args.rounds} rounds each, pool of {args.size}; medians in ms)")
    print("| figure | from a pool p50 | p90 | without a pool p50 | ratio | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    report("server: request to RFB-ready", *server, 0.020)
    report("`genos up` end to end", up[0], up[1], 0.250)
    report("browser: Launch clicked to first frame", *web, 0.300)
    print(
        f"`genos --help` (the CLI's start-up floor): p50 {statistics.median(up[2]) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
