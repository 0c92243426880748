"""Time from ``genos up`` (image cached) to the first frame drawn in the browser.

A real ``genos serve --driver oci`` over the warm test image cache and
Debian's chromium (headless, Playwright). Each round: ``genos up -f
desktop.json --json`` of an xterm desktop, then the printed sign-in URL opened
in a fresh browser context (opened before the clock starts, as a person's
browser is open before they type), until the noVNC canvas shows the app.
Baseline in the same run: the same page opened for an environment that is
already running (sign-in link, page, WebSocket, RFB, first frame only), so the
difference is what creating and starting the environment costs.

Needs root and runc. Run: .venv/bin/python bench/firstframe.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from playwright.sync_api import sync_playwright
from tests.api.test_server import BIN, free_port, start_server, stop
from tests.web.test_browser import CANVAS_PIXELS

from genos.spec import App, EnvironmentSpec, dump

CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
CHROMIUM = os.environ.get("GENOS_CHROMIUM", "/usr/bin/chromium")


def up(env: dict[str, str], spec: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(BIN / "genos"), "up", "-f", str(spec), "--json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def link(env: dict[str, str], env_id: str, url: str) -> str:
    """A fresh sign-in URL for an environment that already runs."""
    token = (Path(env["GENOS_DATA_DIR"]) / "api" / "admin.token").read_text().strip()
    import httpx  # noqa: PLC0415

    code = httpx.post(f"{url}/v1/login-links", headers={"Authorization": f"Bearer {token}"})
    return f"{url}/#/env/{env_id}?login={code.json()['code']}"


def first_frame(page: Any, url: str) -> float:
    """Seconds from opening ``url`` in ``page`` until the desktop canvas has drawn pixels."""
    t0 = time.perf_counter()
    page.goto(url)
    deadline = t0 + 60
    while page.evaluate(CANVAS_PIXELS)["drawn"] <= 100:  # CSP forbids wait_for_function's eval
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no frame drawn at {url} in 60 s")
        page.wait_for_timeout(5)
    return time.perf_counter() - t0


def fresh_page(browser: Any) -> Any:
    """A new context (no session) with one open tab, like a browser window already open."""
    return browser.new_context(viewport={"width": 1280, "height": 800}).new_page()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="genos-bench-ff-")) / "data"
    serve = ["--driver", "oci", "--cpus", "2", "--memory-mb", "8192"]
    serve += ["--images-dir", str(CACHE / "images")]
    process, url = start_server(root, *serve, port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")}
    env |= {"GENOS_URL": url, "GENOS_DATA_DIR": str(root)}
    spec = root.parent / "desktop.json"
    desk = EnvironmentSpec(
        name="first-frame", apps=[App(name="XTerm", packages=["xterm"], command="xterm")]
    )
    spec.write_text(json.dumps(dump(desk)))
    totals, ups, warm = [], [], []
    made: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            context = browser.new_context()
            context.new_page().goto(f"{url}/")  # warm the browser and the static files
            context.close()
            for _ in range(args.rounds):
                page = fresh_page(browser)  # the person's browser is open before they type
                t0 = time.perf_counter()
                created = up(env, spec)
                made.append(created["id"])
                t_up = time.perf_counter() - t0
                first_frame(page, created["login_url"])
                totals.append(time.perf_counter() - t0)
                ups.append(t_up)
                page.context.close()
                page = fresh_page(browser)
                warm.append(first_frame(page, link(env, created["id"], url)))
                page.context.close()
                subprocess.run(
                    [str(BIN / "genos"), "rm", created["id"]],
                    env=env,
                    capture_output=True,
                    check=False,
                )
            browser.close()
    finally:
        stop(process)
    med = statistics.median
    print(f"\n## genos up to first frame in the browser ({args.rounds} rounds, medians)")
    print("| step | seconds |")
    print("| --- | --- |")
    print(f"| genos up (create + start, until running) | {med(ups):.2f} |")
    print(f"| page to first frame, environment already running (baseline) | {med(warm):.2f} |")
    print(f"| genos up to first frame drawn (total) | {med(totals):.2f} |")
    rounds = [round(t, 2) for t in totals]
    print(f"ratio total/baseline: {med(totals) / med(warm):.1f}; all rounds: {rounds}")


if __name__ == "__main__":
    main()
