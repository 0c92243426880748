"""Starting a local etcd cluster (``genos.cluster.etcdlocal``): a taken port is survived."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from genos.cluster.etcdlocal import EtcdCluster

pytestmark = pytest.mark.root


def test_a_member_whose_port_was_taken_is_started_again_elsewhere(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A new cluster whose third member finds its planned port taken (it exits at once):
    start_all stops the two it started, plans other ports and starts all three; nothing of
    the failed attempt is left running."""
    root = tmp_path_factory.mktemp("taken")
    cluster = EtcdCluster.plan(root / "etcd", root / "pki")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", cluster.members[2].client_port))
    squatter.listen()
    planned = [m.client_port for m in cluster.members]
    try:
        cluster.start_all()
        pids = [m.pid for m in cluster.members]
        assert None not in pids
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        assert [m.client_port for m in cluster.members] != planned
        ours = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
        running = [p for p in ours if _etcd_of(p, root)]
        assert sorted(int(p.name) for p in running) == sorted(pids)  # type: ignore[type-var]
    finally:
        squatter.close()
        cluster.stop_all()
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _etcd_of(p, root)]


def _etcd_of(proc: Path, root: Path) -> bool:
    """Whether ``proc`` is an etcd member whose data lives under ``root``."""
    try:
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return cmdline.startswith(b"etcd") and str(root).encode() in cmdline
