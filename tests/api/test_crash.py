"""Crash test: 20 real provisions, ``kill -9`` of the server at random moments, restarts.

Afterwards every environment is ``running`` or ``failed`` with a reason,
there is exactly one per request id, a new request for each failed one
runs, the host holds exactly the running ones, and after deleting them
nothing of any is left on the host.
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


def post_all(
    url: str, token: str, spec: dict[str, Any], request_ids: list[str] | None = None
) -> list[str | None]:
    """POST concurrently (request ids r0..r19 unless given); ids, None where the server died."""
    headers = {"Authorization": f"Bearer {token}"}
    names = request_ids if request_ids is not None else [f"r{n}" for n in range(COUNT)]

    def one(request_id: str) -> str | None:
        body = {"spec": spec, "request_id": request_id}
        try:
            response = httpx.post(f"{url}/v1/environments", json=body, headers=headers, timeout=30)
        except httpx.HTTPError:
            return None
        return str(response.json()["id"]) if response.status_code == 201 else None

    if not names:
        return []
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(one, names))


def listing(url: str, token: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.get(
        f"{url}/v1/environments", params={"limit": 1000}, headers=headers, timeout=30
    )
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def settled(url: str, token: str) -> list[dict[str, Any]]:
    """The listing once every environment is running or failed (or after 240 s)."""
    deadline = time.monotonic() + 240
    while True:
        envs = listing(url, token)
        if all(e["state"] in SETTLED for e in envs) or time.monotonic() > deadline:
            return envs
        time.sleep(0.5)


def state_of(envs: list[dict[str, Any]], env_id: str | None) -> str | None:
    return next((e["state"] for e in envs if e["id"] == env_id), None)


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
        envs = settled(url, token)
        assert len(envs) == COUNT
        assert sorted(e["id"] for e in envs) == sorted(ids)  # type: ignore[type-var]
        for env in envs:
            assert env["state"] in SETTLED, env
            if env["state"] == "failed":
                assert env["failure_reason"], env
        # Whether any had reached running before a kill depends on the
        # machine's speed; what must hold is that a client asking again (a
        # new request id) for each failed one gets it, on the restarted server.
        failed = [n for n, env_id in enumerate(ids) if state_of(envs, env_id) == "failed"]
        again = post_all(url, token, spec, [f"again{n}" for n in failed])
        assert None not in again
        envs = settled(url, token)
        assert len(envs) == COUNT + len(failed)
        running = {e["id"] for e in envs if e["state"] == "running"}
        assert set(again) <= running, [e for e in envs if e["id"] in again]
        assert len(running) == COUNT
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
