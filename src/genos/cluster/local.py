"""A whole cluster on one machine: ``genos cluster up|down|status`` (``scripts/cluster.sh``).

Three etcd members on loopback (mutual TLS), a PostgreSQL server (the
registry), ``nodes`` ``genos node run`` processes (each its own name, so its
own run roots and cgroups, and its own data directory), and ``replicas``
``genos serve`` processes sharing the registry and etcd, each on its own
port. Every process is ours: started with its own session, stopped by its
pid. ``cluster.json`` in the root says what runs (``status --json``).

``down`` first removes every environment through the API (the nodes destroy
them) and then whatever etcd still assigns to a node (an orphan the leader
has not reconciled yet), then stops the replicas, the nodes, etcd and
PostgreSQL, and removes the root: nothing it made is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from genos.cluster import localpg, pki
from genos.cluster.etcd import EtcdClient, close
from genos.cluster.etcdlocal import EtcdCluster, free_port
from genos.cluster.store import ClusterStore
from genos.errors import ExternalError, InputError
from genos.gateway.tokens import TokenAuthority

STATE = "cluster.json"
START_WAIT = 90.0
STOP_WAIT = 20.0


def _genos() -> list[str]:
    return [sys.executable, "-m", "genos"]


@dataclass
class Proc:
    """A process of the cluster's."""

    name: str
    pid: int
    url: str = ""
    log: str = ""


@dataclass
class LocalCluster:
    """See the module docstring."""

    root: Path
    driver: str = "oci"
    images_dir: Path | None = None
    etcd: EtcdCluster | None = None
    database_url: str = ""
    nodes: list[Proc] = field(default_factory=list)
    replicas: list[Proc] = field(default_factory=list)
    # The processes this object started (kept, so they are reaped, not garbage-collected).
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def admin_token_file(self) -> Path:
        return self.root / "cp" / "cp1" / "api" / "admin.token"

    # -- up ----------------------------------------------------------------------------

    def up(self, nodes: int = 2, replicas: int = 2, node_args: tuple[str, ...] = ()) -> None:
        """Start everything (see the module docstring).

        Raises:
            InputError: a cluster runs in ``root`` already.
            ExternalError: a part did not come up (the log's tail in ``detail``).
        """
        if (self.root / STATE).exists():
            raise InputError(f"a cluster runs in {self.root} already (genos cluster down first)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        pki.ensure_ca(self.pki_dir)
        TokenAuthority.from_data_dir(self.pki_dir)  # the replicas' shared gateway key, made once
        try:
            self.etcd = EtcdCluster.plan(self.root / "etcd", self.pki_dir)
            self.etcd.start_all()
            base = localpg.start(self.root / "pg", free_port())
            _create_database(base, "genos")
            self.database_url = f"{base}/genos"
            self.save()
            for n in range(1, nodes + 1):
                self.add_node(f"node{n}", *node_args)
            for n in range(1, replicas + 1):
                self.add_replica(f"cp{n}")
        except BaseException:
            self.down()
            raise

    def add_node(self, name: str, *extra: str) -> Proc:
        """Start node ``name`` (a certificate of its own)."""
        pki.issue(self.pki_dir, name, "node", ["127.0.0.1", "localhost"])
        data = self.root / "nodes" / name
        argv = [*_genos(), "node", "run", "--name", name, "--etcd", ",".join(self._endpoints()),
                "--pki", str(self.pki_dir), "--driver", self.driver, *extra]  # fmt: skip
        if self.images_dir is not None:
            argv += ["--images-dir", str(self.images_dir)]
        proc = self._spawn(name, argv, data)
        self.nodes = [p for p in self.nodes if p.name != name] + [proc]
        self.save()
        return proc

    def add_replica(self, name: str) -> Proc:
        """Start control-plane replica ``name`` and wait until it answers."""
        pki.issue(self.pki_dir, name, "control-plane", ["127.0.0.1", "localhost"])
        port = free_port()
        argv = [*_genos(), "serve", "--port", str(port), "--etcd", ",".join(self._endpoints()),
                "--pki", str(self.pki_dir), "--replica", name,
                "--database-url", self.database_url]  # fmt: skip
        proc = self._spawn(name, argv, self.root / "cp" / name)
        proc.url = f"http://127.0.0.1:{port}"
        self.replicas = [p for p in self.replicas if p.name != name] + [proc]
        self.save()
        self._wait_ready(proc)
        return proc

    def _endpoints(self) -> list[str]:
        if self.etcd is None:
            raise InputError("etcd is not running")
        return self.etcd.endpoints

    def _spawn(self, name: str, argv: list[str], data: Path) -> Proc:
        data.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_")}
        env["GENOS_DATA_DIR"] = str(data)
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=out, start_new_session=True)  # fmt: skip
        self.processes[name] = process
        return Proc(name, process.pid, log=str(log))

    def kill(self, name: str) -> None:
        """SIGKILL process ``name`` (a node or a replica) at once: a fault."""
        proc = next(p for p in [*self.nodes, *self.replicas] if p.name == name)
        kill(proc.pid, self.processes.pop(name, None))

    def _wait_ready(self, proc: Proc) -> None:
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if not _alive(proc.pid):
                raise ExternalError(f"{proc.name} exited", detail=_tail(Path(proc.log)))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{proc.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise ExternalError(f"{proc.name} did not become ready", detail=_tail(Path(proc.log)))

    # -- state ---------------------------------------------------------------------------

    def save(self) -> None:
        """Write ``cluster.json``."""
        data = {
            "root": str(self.root), "driver": self.driver,
            "images_dir": str(self.images_dir) if self.images_dir else None,
            "etcd": self.etcd.to_json() if self.etcd else None,
            "database_url": self.database_url,
            "nodes": [p.__dict__ for p in self.nodes],
            "replicas": [p.__dict__ for p in self.replicas],
        }  # fmt: skip
        (self.root / STATE).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, root: Path) -> LocalCluster:
        """The cluster ``root``'s ``cluster.json`` describes.

        Raises:
            InputError: no cluster there.
        """
        try:
            data = json.loads((root / STATE).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"no cluster in {root}") from exc
        made = cls(root, data["driver"], Path(data["images_dir"]) if data["images_dir"] else None)
        if data["etcd"]:
            made.etcd = EtcdCluster.from_json(root / "etcd", made.pki_dir, data["etcd"])
        made.database_url = data["database_url"]
        made.nodes = [Proc(**p) for p in data["nodes"]]
        made.replicas = [Proc(**p) for p in data["replicas"]]
        return made

    def status(self) -> dict[str, Any]:
        """What runs: control-plane URLs, the admin token file, each node's name, pid, state."""
        states: dict[str, str] = {}
        leader = None
        for replica in self.replicas:
            if _alive(replica.pid):
                with contextlib.suppress(httpx.HTTPError, ValueError, OSError):
                    token = self.admin_token_file.read_text().strip()
                    headers = {"Authorization": f"Bearer {token}"}
                    answer = httpx.get(f"{replica.url}/v1/nodes", timeout=5, headers=headers)
                    states = {n["name"]: n["state"] for n in answer.json()}
                    answer = httpx.get(f"{replica.url}/v1/cluster", timeout=5, headers=headers)
                    leader = answer.json()["leader"]
                    break
        return {
            "root": str(self.root),
            "control_plane": [
                {"name": p.name, "url": p.url, "pid": p.pid, "alive": _alive(p.pid)}
                for p in self.replicas
            ],
            "leader": leader,
            "admin_token_file": str(self.admin_token_file),
            "nodes": [
                {
                    "name": p.name,
                    "pid": p.pid,
                    "alive": _alive(p.pid),
                    "state": states.get(p.name, "down" if not _alive(p.pid) else "unknown"),
                }
                for p in self.nodes
            ],
            "etcd": self.etcd.endpoints if self.etcd else [],
            "database_url": self.database_url,
        }

    # -- down ------------------------------------------------------------------------------

    def remove_environments(self) -> None:
        """End every environment through a live replica and wait until each is over."""
        live = [p for p in self.replicas if _alive(p.pid)]
        if not live or not self.admin_token_file.exists():
            return
        headers = {"Authorization": f"Bearer {self.admin_token_file.read_text().strip()}"}
        with httpx.Client(base_url=live[0].url, headers=headers, timeout=60) as api:
            with contextlib.suppress(httpx.HTTPError):
                for pool in api.get("/v1/pools").json():
                    api.delete(f"/v1/pools/{pool['id']}")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    items = api.get("/v1/environments", params={"limit": 1000}).json()["items"]
                except (httpx.HTTPError, ValueError, KeyError):
                    return
                left = [e for e in items if e["state"] not in {"terminated", "failed", "lost"}]
                if not left:
                    return
                for env in left:
                    with contextlib.suppress(httpx.HTTPError):
                        api.delete(f"/v1/environments/{env['id']}")
                time.sleep(0.5)

    def clear_assignments(self, timeout: float = 30.0) -> list[str]:
        """Take from the nodes whatever etcd still assigns them once every environment has
        ended (an orphan the leader has not reconciled yet: a create that failed while etcd
        had no quorum, say) and wait until each node has destroyed it and said so. A node
        that stops keeps what it holds (a restart must not lose it), so this comes first.

        Returns:
            The ids that were still assigned.
        """
        if self.etcd is None or not self.nodes:
            return []
        identity = pki.issue(self.pki_dir, "down", "control-plane", ["127.0.0.1"])

        async def clear() -> list[str]:
            client = EtcdClient(self._endpoints(), identity)
            store = ClusterStore(client)
            try:
                owners = await store.owners()
                for env_id, node in owners.items():
                    await store.unassign(env_id, node)
                async with asyncio.timeout(timeout):
                    quiet = 0  # checks in a row that found nothing of any (a second's)
                    while quiet < 5:
                        held = [
                            e
                            for e, node in owners.items()
                            if _on_host(node, e) or await store.status(node, e) is not None
                        ]
                        quiet = 0 if held else quiet + 1
                        await asyncio.sleep(0.2)
                return sorted(owners)
            finally:
                await close(client)

        return asyncio.run(clear())

    def down(self) -> None:
        """End every environment, stop every process, remove the root."""
        with contextlib.suppress(Exception):
            self.remove_environments()
        with contextlib.suppress(Exception):
            self.clear_assignments()
        for proc in [*self.replicas, *self.nodes]:
            stop(proc.pid, self.processes.pop(proc.name, None))
        if self.etcd is not None:
            self.etcd.stop_all()
        localpg.stop(self.root / "pg")
        shutil.rmtree(self.root, ignore_errors=True)


def _on_host(node: str, env_id: str) -> bool:
    """Whether ``node`` (a process on this machine) still has a run directory of ``env_id``."""
    from genos.node.local import run_roots  # noqa: PLC0415
    from genos.paths import acting_as  # noqa: PLC0415

    with acting_as(node):
        roots = run_roots()
    return any((root / env_id).exists() for root in roots)


def _create_database(base: str, name: str) -> None:
    import psycopg  # noqa: PLC0415 - only a local cluster makes databases

    dsn = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop(
    pid: int, process: subprocess.Popen[bytes] | None = None, timeout: float = STOP_WAIT
) -> None:
    """SIGTERM ``pid``, then SIGKILL after ``timeout``; reaped if it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if process is not None:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def kill(pid: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILL ``pid`` at once (a fault) and reap it if it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if process is not None:
        process.wait()
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""
