"""Crash test: 20 real provisions, ``kill -9`` of the server at random moments, restarts.

Afterwards every environment is ``running`` or ``failed`` with a reason,
there is exactly one per request id, the host holds exactly the running
ones, and after deleting them nothing of any is left on the host.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from genos.runtime.images import ImageStore, Layer
from genos.spec import EnvironmentSpec, Resources, dump
from tests.api.test_server import start_server, stop
from tests.sandbox.probes import NOTHING, host_traces

pytestmark = [pytest.mark.root, pytest.mark.runc, pytest.mark.server]
COUNT = 20
SETTLED = {"running", "failed"}


def post_all(url: str, token: str, spec: dict[str, Any]) -> list[str | None]:
    """POST the 20 requests concurrently (request ids r0..r19); ids, None where the server died."""
    headers = {"Authorization": f"Bearer {token}"}

    def one(n: int) -> str | None:
        body = {"spec": spec, "request_id": f"r{n}"}
        try:
            response = httpx.post(f"{url}/v1/environments", json=body, headers=headers, timeout=30)
        except httpx.HTTPError:
            return None
        return str(response.json()["id"]) if response.status_code == 201 else None

    with concurrent.futures.ThreadPoolExecutor(COUNT) as pool:
        return list(pool.map(one, range(COUNT)))


def listing(url: str, token: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.get(
        f"{url}/v1/environments", params={"limit": 1000}, headers=headers, timeout=30
    )
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def kill9(process: Any) -> None:
    """SIGKILL the server process (only the server: its containers live on without it)."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.usefixtures("desktop_layers")
def test_kill_9_during_provisioning_loses_nothing_and_orphans_nothing(
    tmp_path: Path,
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    desktop_layers: list[Layer],
) -> None:
    """Two kill -9s mid-provisioning, then a clean restart: all settle, no duplicate, no orphan."""
    root = tmp_path / "data"
    args = [
        "--driver",
        "oci",
        "--cpus",
        "8",
        "--memory-mb",
        "8192",
        "--images-dir",
        str(image_store.root),
    ]
    spec = dump(desktop_spec.model_copy(update={"resources": Resources(cpus=0.25, memory_mb=256)}))
    rng = random.Random(20261124)  # noqa: S311 - kill moments, not secrets
    process, url = start_server(root, *args)
    token = (root / "api" / "admin.token").read_text().strip()
    try:
        for _ in range(2):
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                posting = pool.submit(post_all, url, token, spec)
                time.sleep(rng.uniform(0.3, 1.5))
                kill9(process)
                posting.result()
            process, url = start_server(root, *args, port=int(url.rsplit(":", 1)[1]))
        ids = post_all(url, token, spec)  # the retries: same request ids, same environments
        assert None not in ids
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            envs = listing(url, token)
            if all(e["state"] in SETTLED for e in envs):
                break
            time.sleep(0.5)
        assert len(envs) == COUNT
        assert sorted(e["id"] for e in envs) == sorted(ids)  # type: ignore[type-var]
        for env in envs:
            assert env["state"] in SETTLED, env
            if env["state"] == "failed":
                assert env["failure_reason"], env
        running = {e["id"] for e in envs if e["state"] == "running"}
        assert len(running) >= 1
        for env in envs:
            traces = host_traces(env["id"], root)
            if env["id"] in running:
                assert traces["containers"], env["id"]
            else:
                assert traces == NOTHING, (env["id"], traces)
        headers = {"Authorization": f"Bearer {token}"}
        for env_id in running:
            httpx.delete(f"{url}/v1/environments/{env_id}", headers=headers, timeout=60)
        for env in envs:
            assert host_traces(env["id"], root) == NOTHING, env["id"]
    finally:
        stop(process)
