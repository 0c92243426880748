"""CLI start-up: ``genos --help``, ``genos ls``, ``genos up`` wall time, and up's own overhead.

Against a real ``genos serve --driver fake`` on loopback (room for every
desktop, so nothing queues). Each round runs every command once, in turn,
so a load that comes and goes touches them alike; medians and p90 of
``--rounds`` rounds, in ms.

- ``python -c pass``: the interpreter's own start (the floor of any command).
- ``genos --help``, ``genos ls`` (a table of ``--envs`` environments),
  ``genos ls --json``, ``genos up DESKTOP --json`` (waits for running,
  fetches a sign-in link).
- ``up's HTTP``: the same exchange ``genos up`` makes (create, the event
  stream until running, the record, a sign-in link), made from this already
  running process over ``http.client``: what the server and loopback cost.
  ``genos up`` minus this is the CLI's own overhead (interpreter, imports,
  argument parsing, output).

``--baseline PATH`` runs the commands a second time with ``PYTHONPATH=PATH``:
another source tree (``git archive <rev> src | tar -x -C /tmp/base``), and
if need be a directory with other versions of its dependencies
(``pip install --no-deps --target DIR typer==X``) before it, to compare
before and after in the same run.

Run: .venv/bin/python bench/cli.py [--rounds 30] [--envs 20] [--baseline PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.api.test_server import start_server, stop

PYTHON = sys.executable
DESKTOP = "a desktop with xterm"
RUN_CLI = "import sys; sys.argv[0] = 'genos'; from genos.cli import main; main()"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Milliseconds ``argv`` took; it must succeed."""
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=120)
    took = (time.perf_counter() - start) * 1000
    assert result.returncode == 0, result.stderr.decode()
    return took


def up_exchange(url: str, token: str) -> float:
    """Milliseconds of the HTTP exchange ``genos up`` makes, from this process."""
    parts = urlsplit(url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    start = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    body = json.dumps({"prompt": DESKTOP, "request_id": uuid.uuid4().hex})
    conn.request("POST", "/v1/environments", body=body, headers=headers)
    env = json.loads(conn.getresponse().read())
    if env["state"] != "running":
        stream = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        stream.request("GET", f"/v1/environments/{env['id']}/events", headers=headers)
        response = stream.getresponse()
        while b'"state":"running"' not in (line := response.readline()):
            assert line, "the stream ended before running"
        stream.close()
    conn.request("GET", f"/v1/environments/{env['id']}", headers=headers)
    json.loads(conn.getresponse().read())
    conn.request("POST", "/v1/login-links", headers=headers)
    json.loads(conn.getresponse().read())
    conn.close()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--envs", type=int, default=20, help="environments genos ls lists")
    parser.add_argument("--baseline", help="PYTHONPATH of a baseline to compare (a src tree)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        process, url = start_server(
            root, "--driver", "fake", "--cpus", "1024", "--memory-mb", "4194304"
        )
        try:
            token = (root / "api" / "admin.token").read_text().strip()
            env = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")}
            env |= {"GENOS_URL": url, "GENOS_TOKEN": token}
            for _ in range(args.envs):
                up_exchange(url, token)
            run(args, env, url, token)
        finally:
            stop(process)


def run(args: argparse.Namespace, env: dict[str, str], url: str, token: str) -> None:
    trees = {"": str(Path(__file__).resolve().parents[1] / "src")}
    if args.baseline:
        trees["baseline "] = args.baseline
    commands = {"--help": ["--help"], "ls": ["ls"], "ls --json": ["ls", "--json"]}
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        times.setdefault("python -c pass", []).append(timed([PYTHON, "-c", "pass"], env))
        times.setdefault("up's HTTP (from a running process)", []).append(up_exchange(url, token))
        for label, src in trees.items():
            tree_env = env | {"PYTHONPATH": src}
            for name, argv in commands.items():
                key = f"{label}genos {name}"
                times.setdefault(key, []).append(timed([PYTHON, "-c", RUN_CLI, *argv], tree_env))
            # up adds an environment; the ls rows above stay comparable within a round
            key = f"{label}genos up --json"
            argv = [PYTHON, "-c", RUN_CLI, "up", DESKTOP, "--json"]
            times.setdefault(key, []).append(timed(argv, tree_env))
    print(f"{'command':42} {'p50 ms':>8} {'p90 ms':>8}")
    for key, values in times.items():
        print(f"{key:42} {statistics.median(values):8.1f} {pct(values, 0.9):8.1f}")
    http_ms = statistics.median(times["up's HTTP (from a running process)"])
    for label in trees:
        up_ms = statistics.median(times[f"{label}genos up --json"])
        print(f"{label}genos up: CLI's own overhead {up_ms - http_ms:.1f} ms (p50 up - p50 HTTP)")


if __name__ == "__main__":
    main()
