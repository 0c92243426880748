"""API figures: create throughput and latency, list latency at 10,000, 20 concurrent ``genos up``.

1. Creates (fake driver, a real ``genos serve`` process on loopback): N
   ``POST /v1/environments`` with a spec, C at a time, for C in 4, 8, 16 (a
   fresh server each); accepted per second, p50/p99 latency and the server's
   CPU per call (its provisioning in the background included). Baseline in
   the same run: ``GET /healthz`` with the same client and concurrency (the
   HTTP floor of this server), so the ratio is what a create costs over an
   empty request. Every environment must end ``running``. The client runs
   on the same machine and takes CPU from the server.
2. List with 10,000 environments in the registry, SQLite and PostgreSQL 15
   side by side (a throwaway cluster): ``GET /v1/environments`` first page of
   100, a page of 100 from the middle (cursor), and all 10,000 in pages of
   1,000; median of 7. The rows are seeded ``terminated`` (so the start-up
   reconcile has nothing to repair); the query does not depend on the state.
3. ``--real`` (root, runc, the warm test image cache): 20 concurrent
   ``genos up -f desktop.yaml --json`` against ``genos serve --driver oci``,
   time until all are running; baseline one ``genos up`` alone, same run.

Run: .venv/bin/python bench/api.py [--creates 2000] [--concurrency 4 8 16] [--real]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.api.test_server import free_port, start_server, stop
from tests.databases import create_database, postgres_cluster

from genos.orchestrator import Registry
from genos.orchestrator.models import EnvironmentRow
from genos.spec import EnvironmentSpec, Resources, dump

BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Call = tuple[str, str, Any]  # method, path, JSON body (None: none)


async def timed_calls(
    url: str, token: str, n: int, conc: int, make: Callable[[int], Call]
) -> tuple[float, list[float]]:
    """Run ``n`` requests ``conc`` at a time; wall seconds and per-call milliseconds.

    ``make(i)`` gives the ``i``-th request. Each of ``conc`` workers keeps one
    HTTP/1.1 connection open and writes and reads its requests itself: a
    general client (httpx's, earlier) cost 2 ms of this machine's CPU per
    call and stalled a call now and then for 0.5-1.6 s (seen on ``/healthz``,
    which a raw client answered in 3-5 ms at the same time), so what was
    measured was partly the client.
    """
    host, port = _host_port(url)
    latencies: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in todo:
                method, path, body = make(i)
                data = b"" if body is None else json.dumps(body).encode()
                head = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        f"Authorization: Bearer {token}\r\nContent-Length: {len(data)}\r\n"
                        + ("Content-Type: application/json\r\n" if body is not None else "")
                        + "\r\n")  # fmt: skip
                t0 = time.perf_counter()
                writer.write(head.encode() + data)
                status, answer = await _response(reader)
                latencies.append((time.perf_counter() - t0) * 1000)
                if status not in {200, 201}:
                    raise AssertionError(f"{method} {path}: {status} {answer[:200]!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return time.perf_counter() - start, latencies


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or parsed.hostname is None or parsed.port is None:
        raise ValueError(f"timed_calls needs http://host:port, not {url!r}")
    return parsed.hostname, parsed.port


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response's status and body (Content-Length framing, as uvicorn sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    length = {k.strip().lower(): v.strip() for k, v in fields.items()}.get("content-length")
    if length is None:
        raise AssertionError(f"a response without Content-Length: {lines[0]}")
    return status, await reader.readexactly(int(length))


def server_cpu(pid: int) -> float:
    """User plus system CPU seconds the process has used (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def states_of(url: str, token: str) -> dict[str, int]:
    """How many environments are in each state (every page)."""
    counts: dict[str, int] = {}
    cursor = None
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        while True:
            params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/environments", params=params).json()
            for env in page["items"]:
                counts[env["state"]] = counts.get(env["state"], 0) + 1
            cursor = page["next"]
            if cursor is None:
                return counts


def creates(n: int, levels: list[int]) -> None:
    """For each concurrency, a fresh server: healthz baseline, then ``n`` creates."""
    print(f"\n## Creates, fake driver, {n} requests per concurrency")
    print("| concurrency | call | per second | p50 ms | p99 ms | server CPU ms/call |")
    print("| --- | --- | --- | --- | --- | --- |")
    spec = dump(EnvironmentSpec(name="bench", resources=Resources(cpus=0.25, memory_mb=256)))

    def health(_i: int) -> Call:
        return "GET", "/healthz", None

    def create(i: int) -> Call:
        return "POST", "/v1/environments", {"spec": spec, "request_id": f"b{i}"}

    for conc in levels:
        root = Path(tempfile.mkdtemp(prefix="genos-bench-api-")) / "data"
        process, url = start_server(
            root, "--driver", "fake", "--cpus", "1000000", "--memory-mb", "1000000000"
        )
        token = (root / "api" / "admin.token").read_text().strip()
        try:
            asyncio.run(timed_calls(url, token, 50, conc, health))  # warm-up
            rows = []
            for name, call in (
                ("GET /healthz (baseline)", health),
                ("POST /v1/environments", create),
            ):
                cpu0 = server_cpu(process.pid)
                wall, lat = asyncio.run(timed_calls(url, token, n, conc, call))
                time.sleep(1)  # provisioning in the background finishes
                rows.append((name, wall, lat, (server_cpu(process.pid) - cpu0) / n * 1000))
            states = states_of(url, token)
        finally:
            stop(process)
        for name, wall, lat, cpu in rows:
            print(f"| {conc} | {name} | {n / wall:.0f} | {pct(lat, 0.5):.1f} | "
                  f"{pct(lat, 0.99):.1f} | {cpu:.2f} |")  # fmt: skip
        assert states == {"running": n}, states
        create_p50, health_p50 = pct(rows[1][2], 0.5), pct(rows[0][2], 0.5)
        print(f"| {conc} | ratio create/healthz p50 | {create_p50 / health_p50:.2f} | | | |")


async def seed(url: str, owner: str, count: int) -> None:
    """Insert ``count`` terminated environments of ``owner``, straight into the tables."""
    registry = await Registry.open(url)
    spec = dump(EnvironmentSpec(name="seeded"))
    base = datetime.now(UTC) - timedelta(days=1)

    def work(session: Any) -> None:
        for i in range(count):
            when = base + timedelta(milliseconds=i)
            session.add(EnvironmentRow(
                id=secrets.token_hex(5), owner_id=owner, name=None, state="terminated", spec=spec,
                priority=0, request_id=None, cpus=1.0, memory_mb=2048, created=when, updated=when,
                host="bench", last_seq=0,
            ))  # fmt: skip

    await registry.run(work, write=True)
    await registry.aclose()


def list_latency(url: str, token: str) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, list[float]] = {
        "first page (100)": [],
        "middle page (100)": [],
        "all (10 x 1000)": [],
    }
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        ids = [
            e["id"] for e in client.get("/v1/environments", params={"limit": 1000}).json()["items"]
        ]
        middle = client.get("/v1/environments", params={"limit": 1000, "cursor": ids[-1]}).json()[
            "items"
        ][500]["id"]
        for _ in range(7):
            t0 = time.perf_counter()
            client.get("/v1/environments", params={"limit": 100})
            out["first page (100)"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.get("/v1/environments", params={"limit": 100, "cursor": middle})
            out["middle page (100)"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            cursor, pages = None, 0
            while True:
                params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
                page = client.get("/v1/environments", params=params).json()
                pages += 1
                cursor = page["next"]
                if cursor is None:
                    break
            out["all (10 x 1000)"].append(time.perf_counter() - t0)
            assert pages == 10
    return {k: statistics.median(v) * 1000 for k, v in out.items()}


def lists(count: int) -> None:
    results: dict[str, dict[str, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="genos-bench-list-"))
    with postgres_cluster() as pg:
        for backend, url in [
            ("SQLite", f"sqlite:///{tmp / 'sqlite' / 'genos.db'}"),
            ("PostgreSQL", create_database(pg, "bench")),
        ]:
            root = tmp / backend / "data"
            root.mkdir(parents=True)
            (tmp / "sqlite").mkdir(exist_ok=True)
            process, base = start_server(root, "--driver", "fake", "--database-url", url)
            try:
                token = (root / "api" / "admin.token").read_text().strip()
                me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
                asyncio.run(seed(url, me["id"], count))
                results[backend] = list_latency(base, token)
            finally:
                stop(process)
    print(f"\n## GET /v1/environments with {count} environments (median of 7, ms)")
    print("| call | SQLite | PostgreSQL |")
    print("| --- | --- | --- |")
    for call in results["SQLite"]:
        print(f"| {call} | {results['SQLite'][call]:.1f} | {results['PostgreSQL'][call]:.1f} |")


def real_ups(count: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="genos-bench-up-")) / "data"
    spec = root.parent / "desktop.yaml"
    spec.write_text(
        json.dumps(
            dump(EnvironmentSpec(name="up-bench", resources=Resources(cpus=0.25, memory_mb=256)))
        )
    )
    args = [
        "--driver",
        "oci",
        "--cpus",
        "8",
        "--memory-mb",
        "16384",
        "--images-dir",
        str(CACHE / "images"),
    ]
    process, url = start_server(root, *args, port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")} | {
        "GENOS_URL": url, "GENOS_DATA_DIR": str(root),
    }  # fmt: skip
    argv = [str(BIN / "genos"), "up", "-f", str(spec), "--json"]
    made: list[str] = []
    try:
        t0 = time.perf_counter()
        one = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        single = time.perf_counter() - t0
        made.append(json.loads(one.stdout)["id"])
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(count)
        ]
        outs = [json.loads(p.communicate()[0]) for p in procs]
        together = time.perf_counter() - t0
        made += [o["id"] for o in outs]
        states = {o["state"] for o in outs}
    finally:
        for env_id in made:
            subprocess.run(
                [str(BIN / "genos"), "rm", env_id], env=env, capture_output=True, check=False
            )
        stop(process)
    print(f"\n## {count} concurrent genos up (real runc, cached image)")
    print(f"one genos up alone (baseline): {single:.2f} s")
    print(f"{count} at once, until all running: {together:.2f} s (states: {sorted(states)})")
    print(
        f"ratio: {together / single:.1f}x the single one, {together / count:.2f} s per environment"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[4, 8, 16], help="levels to measure"
    )
    parser.add_argument("--list-size", type=int, default=10_000)
    parser.add_argument(
        "--real", action="store_true", help="also 20 concurrent genos up (root, runc)"
    )
    args = parser.parse_args()
    if args.list_size < 2000:
        parser.error("--list-size must be at least 2000 (its middle page starts at row 1,500)")
    creates(args.creates, args.concurrency)
    lists(args.list_size)
    if args.real:
        real_ups(20)


if __name__ == "__main__":
    main()
