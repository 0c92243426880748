"""Three etcd members on loopback with mutual TLS: the store of a cluster on one machine.

Each member listens for clients and peers on 127.0.0.1 only, at ports chosen
free when the cluster is made, with its own certificate from the cluster's
CA (:mod:`genos.cluster.pki`) for both, and requires a certificate of that
CA from every client and peer. Members are processes of ours: stopped by
their pid (SIGTERM, then SIGKILL), and a stopped member can be started again
(it rejoins with its data). Tests use :meth:`kill` and :meth:`start` to take
members away and bring them back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from genos.cluster import pki
from genos.cluster.etcd import SERVER_NAME
from genos.errors import CapabilityError, ExternalError

ETCD = "etcd"
STOP_WAIT = 10.0


def free_port() -> int:
    """A TCP port nothing listens on now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Member:
    """One etcd member: its name, ports and (while it runs) process."""

    name: str
    client_port: int
    peer_port: int
    pid: int | None = None

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    """Three (or ``size``) members under ``root`` (data, logs, certificates in ``pki``)."""

    root: Path
    pki_dir: Path
    members: list[Member] = field(default_factory=list)
    token: str = "genos"  # noqa: S105 - etcd's initial-cluster-token: a name, not a secret
    # The members this object started (kept, so they are reaped, not garbage-collected).
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @classmethod
    def plan(cls, root: Path, pki_dir: Path, size: int = 3) -> EtcdCluster:
        """Names and free ports for ``size`` members (nothing runs yet)."""
        members = [Member(f"etcd{n}", free_port(), free_port()) for n in range(1, size + 1)]
        return cls(root, pki_dir, members, token=f"genos-{os.getpid()}-{time.monotonic_ns()}")

    @property
    def endpoints(self) -> list[str]:
        """The members' client URLs."""
        return [m.client_url for m in self.members]

    def start_all(self, attempts: int = 3) -> None:
        """Start every member that does not run. If one exits at once, the members this
        call started are stopped again; a new cluster (no member has data yet) is then
        tried on other free ports (a port may have been taken since it was planned), up
        to ``attempts`` times.

        Raises:
            CapabilityError: etcd is not installed.
            ExternalError: a member exited at once (its log in ``detail``); nothing this
                call started is left running.
        """
        if shutil.which(ETCD) is None:
            raise CapabilityError("etcd is not installed (apt install etcd-server)")
        fresh = not any((self.root / m.name).exists() for m in self.members)
        for attempt in range(1, attempts + 1):
            started: list[str] = []
            try:
                for member in self.members:
                    if member.pid is None:
                        self.start(member.name)
                        started.append(member.name)
            except ExternalError:
                for name in started:
                    member = self._member(name)
                    if member.pid is not None:
                        _end(member.pid, signal.SIGTERM, self.processes.pop(name, None))
                        member.pid = None
                if not fresh or attempt == attempts:
                    raise
                for member in self.members:
                    shutil.rmtree(self.root / member.name, ignore_errors=True)
                    member.client_port, member.peer_port = free_port(), free_port()
                self.token = f"genos-{os.getpid()}-{time.monotonic_ns()}"
            else:
                return

    def _member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def start(self, name: str) -> None:
        """Start member ``name`` (again, with its data, if it ran before)."""
        member = self._member(name)
        ident = pki.issue(
            self.pki_dir, member.name, "etcd", ["127.0.0.1", "localhost", SERVER_NAME]
        )
        data = self.root / member.name
        fresh = not data.exists()
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        tls = [f"--cert-file={ident.cert}", f"--key-file={ident.key}", "--client-cert-auth",
               f"--trusted-ca-file={ident.ca}", f"--peer-cert-file={ident.cert}",
               f"--peer-key-file={ident.key}", "--peer-client-cert-auth",
               f"--peer-trusted-ca-file={ident.ca}"]  # fmt: skip
        argv = [
            ETCD, f"--name={member.name}", f"--data-dir={data}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={cluster}", f"--initial-cluster-token={self.token}",
            f"--initial-cluster-state={'new' if fresh else 'existing'}",
            "--heartbeat-interval=100", "--election-timeout=1000",
            "--logger=zap", f"--log-outputs={self.root / (member.name + '.log')}", *tls,
        ]  # fmt: skip
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        time.sleep(0.05)
        if process.poll() is not None:
            log = self.root / f"{member.name}.log"
            raise ExternalError(f"etcd member {member.name} exited at once",
                                detail=log.read_text()[-2000:] if log.exists() else "")  # fmt: skip
        member.pid = process.pid
        self.processes[member.name] = process

    def kill(self, name: str) -> None:
        """Stop member ``name`` at once (SIGKILL), keeping its data."""
        member = self._member(name)
        if member.pid is not None:
            _end(member.pid, signal.SIGKILL, self.processes.pop(name, None))
            member.pid = None

    def stop_all(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL) and remove their data."""
        for member in self.members:
            if member.pid is not None:
                _end(member.pid, signal.SIGTERM, self.processes.pop(member.name, None))
                member.pid = None
        shutil.rmtree(self.root, ignore_errors=True)

    def to_json(self) -> dict[str, object]:
        """What ``genos cluster status`` keeps of the members."""
        return {"token": self.token, "members": [m.__dict__ for m in self.members]}

    @classmethod
    def from_json(cls, root: Path, pki_dir: Path, data: dict[str, object]) -> EtcdCluster:
        """The cluster a status file describes."""
        members = [Member(**m) for m in json.loads(json.dumps(data["members"]))]
        return cls(root, pki_dir, members, token=str(data["token"]))


def _end(pid: int, first: signal.Signals, process: subprocess.Popen[bytes] | None) -> None:
    """Signal ``pid`` and wait for it to go (SIGKILL after :data:`STOP_WAIT`)."""
    try:
        os.kill(pid, first)
    except ProcessLookupError:
        return
    if process is not None:
        try:
            process.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = 0 if _alive(pid) else pid
        if done == pid:
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
