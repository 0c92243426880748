"""Live migration between two nodes' QEMU drivers on this machine (real QEMU under TCG, real TLS).

The two drivers have their own run and data roots and act as nodes ``mig-a``
and ``mig-b`` (:func:`genos.paths.acting_as`: their own cgroup parents and uid
claims), as two hosts would; the migration stream goes over loopback, with
certificates of one test CA.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from genos.cluster import pki
from genos.errors import (
    CapabilityError,
    ExternalError,
    InputError,
    NotFoundError,
    StateError,
    WaitTimeoutError,
)
from genos.ids import new_env_id
from genos.paths import acting_as, node_scoped
from genos.runtime.driver import EnvState
from genos.runtime.images import ImageStore
from genos.runtime.qemu import qmp as qemuqmp
from genos.runtime.qemu.channel import TLS_DIR
from genos.runtime.qemu.driver import QemuDriver
from genos.runtime.qemu.guest import guest_config
from genos.runtime.qemu.host import cgroup_dirs, remove_parent, uid_holders
from genos.runtime.qemu.migrate import Progress, network_command
from genos.sandbox import idmap
from genos.sandbox.network import NetworkSandbox
from genos.spec import EnvironmentSpec
from genos.testing import RFB_BANNER, read_banner
from tests.sandbox.probes import NOTHING, host_traces

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU"),
]

T = TypeVar("T")
MEMORY_MB = 512
SOURCE, TARGET = "mig-a", "mig-b"
LOOPBACK = "127.0.0.1"
# Appends "<n> <guest uptime>" to a file on the guest's disk every 0.1 s (no fork but sleep).
COUNTER = (
    'echo \'i=0; while :; do i=$((i+1)); read up idle </proc/uptime; echo "$i $up" >>/root/count;'
    " sleep 0.1; done' >/root/counter.sh && setsid sh /root/counter.sh </dev/null >/dev/null 2>&1 &"
    " echo $!"
)


def vm_spec() -> EnvironmentSpec:
    """A small microVM: 512 MiB, one CPU, the default desktop, no network."""
    return EnvironmentSpec.model_validate(
        {"name": "migrate-test", "tier": "microvm", "resources": {"memory_mb": MEMORY_MB}}
    )


async def on(node: str, work: Awaitable[T]) -> T:
    """Await ``work`` acting as ``node`` (its cgroups and uid claims)."""
    with acting_as(node):
        return await work


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pki.Identity]:
    """Certificates of one CA for both nodes and a control plane, and a node of another CA."""
    ours, theirs = tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("other-pki")
    return {
        SOURCE: pki.issue(ours, SOURCE, "node", [LOOPBACK]),
        TARGET: pki.issue(ours, TARGET, "node", [LOOPBACK]),
        "control": pki.issue(ours, "control", "control-plane", [LOOPBACK]),
        "foreign": pki.issue(theirs, SOURCE, "node", [LOOPBACK]),
    }


@pytest.fixture(scope="module")
def nodes(
    image_store: ImageStore, data_root: Path, runner: asyncio.Runner
) -> Iterator[dict[str, QemuDriver]]:
    """Two QEMU drivers with their own roots QEMU's user can reach, sharing the image cache
    (and the test's private data dir: network state, audit log)."""
    made: dict[str, QemuDriver] = {}
    dirs = []
    for node in (SOURCE, TARGET):
        run_root = Path(tempfile.mkdtemp(prefix=f"genos-{node}-", dir="/run"))
        vms_root = Path(tempfile.mkdtemp(prefix=f"genos-{node}-", dir="/var/tmp"))
        for path in (run_root, vms_root):
            path.chmod(0o711)
        dirs += [run_root, vms_root]
        network = NetworkSandbox(data_root / "network", dns_servers=())
        made[node] = QemuDriver(image_store, network=network, run_root=run_root / "qemu",
                                data_root=vms_root)  # fmt: skip
    yield made
    left = {}
    for node, driver in made.items():
        left[node] = runner.run(on(node, driver.list_ids()))
        for env_id in left[node]:
            runner.run(on(node, driver.destroy(env_id)))
        with acting_as(node):
            remove_parent()
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    assert left == {SOURCE: [], TARGET: []}
    cgroups = Path("/sys/fs/cgroup")
    assert [*cgroups.glob("genos-vm-mig-*"), *cgroups.glob("*/genos-vm-mig-*")] == []


def qemu_processes(env_id: str) -> list[int]:
    """Pids of every process on the host whose command line names this VM."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"genos-{env_id}".encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def traces(driver: QemuDriver, node: str, env_id: str) -> list[str]:
    """What ``env_id`` has on ``node``: run and data dirs, overlay, cgroups, uid claim."""
    paths = driver.paths(env_id)
    found = [str(p) for p in (paths.root, paths.data, paths.disk) if p.exists()]
    with acting_as(node):
        found += [str(p) for p in cgroup_dirs(env_id)]
        found += ["uid slot"] if env_id in uid_holders() else []
    return found


def assert_nothing_left(nodes: dict[str, QemuDriver], env_id: str) -> None:
    """Neither node has anything of ``env_id``: no QEMU, dirs, cgroups, uid, netns, veth or nft."""
    assert {node: traces(driver, node, env_id) for node, driver in nodes.items()} == {
        SOURCE: [],
        TARGET: [],
    }
    assert qemu_processes(env_id) == []
    for node, driver in nodes.items():
        with acting_as(node):
            assert host_traces(env_id, driver.data_root) == NOTHING


async def guest(driver: QemuDriver, env_id: str, command: str) -> str:
    """Run ``command`` in the guest and return its output (it must succeed)."""
    result = await driver.exec(env_id, command)
    assert result.code == 0, result.stdout
    return result.stdout


async def count_lines(driver: QemuDriver, env_id: str) -> int:
    """How many lines the guest's counter has written."""
    return int((await guest(driver, env_id, "wc -l </root/count")).strip())


async def until_counted(driver: QemuDriver, env_id: str, lines: int, timeout: float = 60) -> None:
    """Wait until the guest's counter has written more than ``lines`` lines."""
    deadline = time.monotonic() + timeout
    while await count_lines(driver, env_id) <= lines:
        if time.monotonic() > deadline:
            pytest.fail(f"the counter in {env_id} is stuck at {lines} lines")
        await asyncio.sleep(0.3)


async def boot_counting(driver: QemuDriver, env_id: str) -> tuple[str, str]:
    """Create and start a microVM on the source, start its counter; (pid, start time) of it."""
    await driver.create(env_id, vm_spec())
    await driver.start(env_id, timeout=300)
    pid = (await guest(driver, env_id, COUNTER)).strip()
    await until_counted(driver, env_id, 5)
    return pid, await started_at(driver, env_id, pid)


async def started_at(driver: QemuDriver, env_id: str, pid: str) -> str:
    """The guest process's start time (field 22 of /proc/PID/stat): a restart changes it."""
    stat = await guest(driver, env_id, f"cat /proc/{pid}/stat")
    return stat.rpartition(")")[2].split()[19]


def check_lines(text: str) -> tuple[float, float]:
    """The counter's lines are 1, 2, 3 ... without a gap; the smallest and largest step of the
    guest's uptime between them."""
    rows = [line.split() for line in text.splitlines()]
    assert [int(n) for n, _ in rows] == list(range(1, len(rows) + 1))
    steps = [b - a for a, b in itertools.pairwise(float(up) for _, up in rows)]
    return min(steps), max(steps)


def migration_parameters(driver: QemuDriver, env_id: str, runner: asyncio.Runner) -> Any:
    """The source QEMU's migration parameters (after a failure they must be the plain ones)."""

    async def ask() -> Any:
        async with qemuqmp.monitor(driver.paths(env_id).qmp) as client:
            return await qemuqmp.call(client, "query-migrate-parameters")

    return runner.run(ask())


# -- no QEMU needed ------------------------------------------------------------------------


def test_each_task_acts_as_its_own_node_and_releases_only_its_own_claims(tmp_path: Path) -> None:
    """Two tasks acting as two nodes see their own names and cgroup parents; a uid claim for the
    same id by both is released per node (the source's destroy keeps the target's claim)."""

    async def claim_and_report(node: str) -> tuple[str, int]:
        with acting_as(node):
            await asyncio.sleep(0.01)  # both tasks are inside their contexts at once
            return node_scoped("genos-vm"), idmap.claim(tmp_path, "abcdefghij")

    async def both() -> list[tuple[str, int]]:
        return list(await asyncio.gather(claim_and_report(SOURCE), claim_and_report(TARGET)))

    (a_parent, a_slot), (b_parent, b_slot) = asyncio.run(both())
    assert (a_parent, b_parent) == (f"genos-vm-{SOURCE}", f"genos-vm-{TARGET}")
    assert a_slot != b_slot
    with acting_as(SOURCE):
        idmap.release(tmp_path, "abcdefghij")
        assert idmap.holders(tmp_path) == set()
    with acting_as(TARGET):
        assert idmap.holders(tmp_path) == {"abcdefghij"}
        idmap.release(tmp_path, "abcdefghij")
    assert sorted(tmp_path.iterdir()) == []
    with pytest.raises(InputError):
        acting_as("Not A Node").__enter__()


# -- the good path ------------------------------------------------------------------------


def test_a_counting_microvm_moves_to_the_other_node_without_a_restart(
    nodes: dict[str, QemuDriver], identities: dict[str, pki.Identity], runner: asyncio.Runner
) -> None:
    """A microVM counting into a file every 0.1 s moves with its disk and RAM over TLS: the same
    process counts on at the target, the file has every line, the display and agent answer,
    and destroying the source leaves nothing of it there."""
    source, target = nodes[SOURCE], nodes[TARGET]
    env_id = new_env_id()
    try:
        pid, started = runner.run(on(SOURCE, boot_counting(source, env_id)))
        runner.run(guest(source, env_id, "echo moved >/root/on-disk && sync"))
        before = runner.run(guest(source, env_id, "cat /root/count"))
        old_qemu = runner.run(source.inspect(env_id)).pid
        base = Path(source.migration_source(env_id)["machine"]["kernel"]).with_name("root.ext4")
        seen: list[Progress] = []
        outcome = runner.run(_migrate(nodes, identities, env_id, seen.append))
        # Only the overlay travelled (block-incremental), not the image below it.
        arrived = target.paths(env_id).disk.stat().st_blocks * 512
        assert 0 < arrived < base.stat().st_size // 4
        assert 0 < outcome.overlay_bytes < base.stat().st_size // 4
        assert runner.run(on(SOURCE, source.inspect(env_id))).state is EnvState.SUSPENDED
        runner.run(on(SOURCE, source.destroy(env_id)))
        assert traces(source, SOURCE, env_id) == []
        assert old_qemu not in qemu_processes(env_id)
        assert len(qemu_processes(env_id)) == 1  # the target's QEMU
        _progress_was_reported(seen, outcome.ram_bytes)
        assert 0 < outcome.downtime_ms < outcome.total_ms
        runner.run(_runs_on_target(target, env_id, pid, started, before))
    finally:
        for node, driver in nodes.items():
            runner.run(on(node, driver.destroy(env_id)))
    assert_nothing_left(nodes, env_id)


async def _migrate(
    nodes: dict[str, QemuDriver],
    identities: dict[str, pki.Identity],
    env_id: str,
    progress: Any = None,
) -> Any:
    source, target = nodes[SOURCE], nodes[TARGET]
    facts = source.migration_source(env_id)
    port = await on(TARGET, target.prepare_incoming(env_id, vm_spec(), facts,
                                                    tls=identities[TARGET]))  # fmt: skip
    state = (await on(TARGET, target.inspect(env_id))).state
    assert state is EnvState.CREATED  # QEMU waits paused for the state
    outcome, _ = await asyncio.gather(
        on(SOURCE, source.migrate_out(env_id, LOOPBACK, port, tls=identities[SOURCE],
                                      progress=progress)),
        on(TARGET, target.finish_incoming(env_id)),
    )  # fmt: skip
    assert not (source.paths(env_id).private / TLS_DIR).exists()
    assert not (target.paths(env_id).private / TLS_DIR).exists()
    return outcome


def _progress_was_reported(seen: list[Progress], ram_bytes: int) -> None:
    assert seen[-1].status == "completed"
    assert {p.status for p in seen} >= {"active", "completed"}
    active = [p for p in seen if p.status == "active"]
    assert MEMORY_MB << 20 <= active[0].ram_total < (MEMORY_MB + 64) << 20  # plus ROMs
    assert max(p.disk_total for p in seen) > 0  # the overlay went in the stream
    sent = [p.ram_transferred for p in seen]
    assert sent == sorted(sent)
    assert ram_bytes == sent[-1]


async def _runs_on_target(
    target: QemuDriver, env_id: str, pid: str, started: str, before: str
) -> None:
    assert (await on(TARGET, target.inspect(env_id))).state is EnvState.RUNNING
    assert await read_banner(target.display(env_id)) == RFB_BANNER
    assert await started_at(target, env_id, pid) == started  # the same process, not a new one
    # Read back from the target's overlay, not the page cache that came with the RAM.
    check = "sync && echo 3 >/proc/sys/vm/drop_caches && cat /root/on-disk"
    assert await guest(target, env_id, check) == "moved\n"
    counted = await count_lines(target, env_id)
    await until_counted(target, env_id, counted + 10)
    after = await guest(target, env_id, "cat /root/count")
    assert after.startswith(before)
    # Under TCG the guest's clock stands still while it is paused, so its steps stay what they
    # are on this busy 2-CPU host (0.2-2 s: a fork and exec of sleep each) across the move; a
    # clock that jumped (another TSC on the target) would show as a step back or of minutes.
    smallest, largest = check_lines(after)
    assert 0 < smallest <= largest < 5.0
    # The migration's settings are gone: a deep suspend here is a plain one.
    await on(TARGET, target.suspend(env_id, to_disk=True))
    await on(TARGET, target.resume(env_id))
    assert await started_at(target, env_id, pid) == started


def test_a_suspended_microvm_moves_as_files_and_resumes_on_the_other_node(
    nodes: dict[str, QemuDriver], runner: asyncio.Runner
) -> None:
    """A counting microVM paused in memory is saved to disk for the move; its overlay and
    state are written into the target's new environment, which holds it suspended (no
    QEMU); resumed there, the same process counts on, its disk has what was written."""
    source, target = nodes[SOURCE], nodes[TARGET]
    env_id = new_env_id()
    try:
        pid, started = runner.run(on(SOURCE, boot_counting(source, env_id)))
        runner.run(guest(source, env_id, "echo moved >/root/on-disk && sync"))
        before = runner.run(guest(source, env_id, "cat /root/count"))
        runner.run(on(SOURCE, source.suspend(env_id)))
        facts, disk, state = runner.run(on(SOURCE, source.saved_for_move(env_id)))
        assert qemu_processes(env_id) == []  # saved for the move: QEMU has ended
        assert state.stat().st_size > 0
        here_disk, here_state = runner.run(on(TARGET, target.adopt_saved(env_id, vm_spec(),
                                                                           facts)))  # fmt: skip
        owner = here_disk.stat().st_uid
        here_disk.write_bytes(disk.read_bytes())
        here_state.write_bytes(state.read_bytes())
        runner.run(on(TARGET, target.finish_adopt(env_id)))
        assert here_disk.stat().st_uid == owner  # still QEMU's user's
        assert runner.run(on(TARGET, target.inspect(env_id))).state is EnvState.SUSPENDED
        runner.run(on(SOURCE, source.destroy(env_id)))
        assert traces(source, SOURCE, env_id) == []
        runner.run(on(TARGET, target.resume(env_id)))
        assert not here_state.exists()  # restored: the state file is spent
        runner.run(_runs_on_target(target, env_id, pid, started, before))
    finally:
        for node, driver in nodes.items():
            runner.run(on(node, driver.destroy(env_id)))
    assert_nothing_left(nodes, env_id)


def test_a_running_vm_is_not_moved_as_files_and_a_bad_adoption_leaves_nothing(
    nodes: dict[str, QemuDriver], runner: asyncio.Runner
) -> None:
    """saved_for_move refuses a running VM (it runs on); adopt_saved with facts of another
    id is refused and makes nothing."""
    source, target = nodes[SOURCE], nodes[TARGET]
    env_id = new_env_id()
    try:
        runner.run(on(SOURCE, boot_counting(source, env_id)))
        with pytest.raises(StateError):
            runner.run(on(SOURCE, source.saved_for_move(env_id)))
        assert runner.run(on(SOURCE, source.inspect(env_id))).state is EnvState.RUNNING
        facts = source.migration_source(env_id)
        other = new_env_id()
        with pytest.raises(InputError):
            runner.run(on(TARGET, target.adopt_saved(other, vm_spec(), facts)))
        assert traces(target, TARGET, other) == []
    finally:
        for node, driver in nodes.items():
            runner.run(on(node, driver.destroy(env_id)))
    assert_nothing_left(nodes, env_id)


def test_a_guest_with_a_network_takes_the_target_nodes_address(
    nodes: dict[str, QemuDriver], runner: asyncio.Runner
) -> None:
    """The command finish_incoming sends a networked guest gives eth0 the address, route,
    resolvers and host pins of the target's guest.cfg (two nodes on one machine cannot hold
    one environment's namespace both, so this runs on one node, without the move)."""
    source = nodes[SOURCE]
    env_id = new_env_id()
    spec = EnvironmentSpec.model_validate(
        {"name": "migrate-net", "tier": "microvm", "resources": {"memory_mb": MEMORY_MB},
         "network": {"mode": "internet"}}
    )  # fmt: skip
    # What a target node with another pool would have written (addresses of no real host).
    elsewhere = guest_config(spec, address="10.99.0.6/30", gateway="10.99.0.5",
                             dns=("10.99.0.5",), hosts=(("peer", "10.99.0.9"),))  # fmt: skip
    command = network_command(elsewhere)
    assert command is not None
    assert network_command(guest_config(spec, address=None)) is None
    try:
        runner.run(on(SOURCE, source.create(env_id, spec)))
        runner.run(on(SOURCE, source.start(env_id, timeout=300)))
        runner.run(guest(source, env_id, command))
        shown = runner.run(guest(source, env_id, "busybox ip -4 -o addr show dev eth0"))
        assert [line.split()[3] for line in shown.splitlines()] == ["10.99.0.6/30"]
        route = runner.run(guest(source, env_id, "busybox ip route show default"))
        assert route.startswith("default via 10.99.0.5 dev eth0")
        files = runner.run(guest(source, env_id, "cat /etc/resolv.conf /etc/hosts"))
        assert files == "nameserver 10.99.0.5\n127.0.0.1 localhost genos\n10.99.0.9 peer\n"
    finally:
        runner.run(on(SOURCE, source.destroy(env_id)))
    assert_nothing_left(nodes, env_id)


# -- failures -----------------------------------------------------------------------------


def test_a_target_killed_mid_way_leaves_the_source_running_and_the_target_clean(
    nodes: dict[str, QemuDriver], identities: dict[str, pki.Identity], runner: asyncio.Runner
) -> None:
    """SIGKILL of the target's QEMU mid-stream: migrate_out says so in one line, the guest counts
    on at the source (same QEMU, settings reset), abort_incoming clears the target; a target
    lost after the source completed: finish_incoming fails and resume runs the guest at the
    source again; a last migration then succeeds."""
    source, target = nodes[SOURCE], nodes[TARGET]
    env_id = new_env_id()
    try:
        pid, started = runner.run(on(SOURCE, boot_counting(source, env_id)))
        old_qemu = runner.run(source.inspect(env_id)).pid
        killed: list[Progress] = []
        error = runner.run(_kill_target_mid_way(nodes, identities, env_id, killed))
        assert killed  # the target died while RAM was streaming
        assert killed[0].ram_transferred < killed[0].ram_total
        assert str(error).startswith(f"live migration of {env_id} failed: ")
        assert "\n" not in str(error)
        seen = runner.run(source.inspect(env_id))
        assert (seen.state, seen.pid) == (EnvState.RUNNING, old_qemu)
        counted = runner.run(count_lines(source, env_id))
        runner.run(until_counted(source, env_id, counted + 5))
        assert runner.run(started_at(source, env_id, pid)) == started
        params = migration_parameters(source, env_id, runner)
        assert (params["tls-creds"], params["block-incremental"]) == ("", False)
        assert not (source.paths(env_id).private / TLS_DIR).exists()
        runner.run(on(TARGET, target.abort_incoming(env_id)))
        assert traces(target, TARGET, env_id) == []
        runner.run(on(TARGET, target.abort_incoming(env_id)))  # idempotent
        runner.run(_target_lost_after_the_source_completed(nodes, identities, env_id, pid, started))
        runner.run(_migrate(nodes, identities, env_id))
        assert runner.run(started_at(target, env_id, pid)) == started
    finally:
        for node, driver in nodes.items():
            runner.run(on(node, driver.destroy(env_id)))
    assert_nothing_left(nodes, env_id)


async def _kill_target_mid_way(
    nodes: dict[str, QemuDriver],
    identities: dict[str, pki.Identity],
    env_id: str,
    killed: list[Progress],
) -> ExternalError:
    source, target = nodes[SOURCE], nodes[TARGET]
    port = await on(TARGET, target.prepare_incoming(env_id, vm_spec(),
                                                    source.migration_source(env_id),
                                                    tls=identities[TARGET]))  # fmt: skip
    target_qemu = (await on(TARGET, target.inspect(env_id))).pid
    assert target_qemu is not None

    def kill_once_streaming(seen: Progress) -> None:
        if not killed and seen.ram_transferred > 4 << 20:
            os.kill(target_qemu, signal.SIGKILL)
            killed.append(seen)

    with pytest.raises(ExternalError) as failed:
        await on(SOURCE, source.migrate_out(env_id, LOOPBACK, port, tls=identities[SOURCE],
                                            progress=kill_once_streaming,
                                            bandwidth=16 << 20))  # fmt: skip
    return failed.value


async def _target_lost_after_the_source_completed(
    nodes: dict[str, QemuDriver],
    identities: dict[str, pki.Identity],
    env_id: str,
    pid: str,
    started: str,
) -> None:
    source, target = nodes[SOURCE], nodes[TARGET]
    facts = source.migration_source(env_id)
    port = await on(TARGET, target.prepare_incoming(env_id, vm_spec(), facts,
                                                    tls=identities[TARGET]))  # fmt: skip
    target_qemu = (await on(TARGET, target.inspect(env_id))).pid
    assert target_qemu is not None
    await on(SOURCE, source.migrate_out(env_id, LOOPBACK, port, tls=identities[SOURCE]))
    os.kill(target_qemu, signal.SIGKILL)
    with pytest.raises(ExternalError):
        await on(TARGET, target.finish_incoming(env_id))
    await on(TARGET, target.abort_incoming(env_id))
    assert traces(target, TARGET, env_id) == []
    assert (await on(SOURCE, source.inspect(env_id))).state is EnvState.SUSPENDED
    await on(SOURCE, source.resume(env_id))
    assert (await on(SOURCE, source.inspect(env_id))).state is EnvState.RUNNING
    counted = await count_lines(source, env_id)
    await until_counted(source, env_id, counted + 5)
    assert await started_at(source, env_id, pid) == started
    check = "sync && echo 3 >/proc/sys/vm/drop_caches && tail -n 1 /root/count"
    assert (await guest(source, env_id, check)).split()[0].isdigit()  # its disk works again


def test_bad_input_and_wrong_certificates_leave_the_source_untouched(
    nodes: dict[str, QemuDriver], identities: dict[str, pki.Identity], runner: asyncio.Runner
) -> None:
    """Unknown envs, a port nothing listens on, facts that do not fit, a timeout, a cancelled
    call, a control plane's or another CA's certificate: one-line errors, the source runs on,
    the target keeps nothing."""
    source, target = nodes[SOURCE], nodes[TARGET]
    env_id = new_env_id()
    try:
        runner.run(on(SOURCE, boot_counting(source, env_id)))
        old_qemu = runner.run(source.inspect(env_id)).pid
        runner.run(_bad_calls(nodes, identities, env_id))
        runner.run(_timeout_and_cancellation(nodes, identities, env_id))
        for who in ("control", "foreign"):
            error = runner.run(_refused(nodes, identities, env_id, identities[who]))
            assert str(error).startswith(f"live migration of {env_id} failed: "), who
            assert traces(target, TARGET, env_id) == []
        seen = runner.run(source.inspect(env_id))
        assert (seen.state, seen.pid) == (EnvState.RUNNING, old_qemu)
        counted = runner.run(count_lines(source, env_id))
        runner.run(until_counted(source, env_id, counted + 3))
        assert not (source.paths(env_id).private / TLS_DIR).exists()
    finally:
        for node, driver in nodes.items():
            runner.run(on(node, driver.destroy(env_id)))
    assert_nothing_left(nodes, env_id)


async def _bad_calls(
    nodes: dict[str, QemuDriver], identities: dict[str, pki.Identity], env_id: str
) -> None:
    source, target = nodes[SOURCE], nodes[TARGET]
    tls = identities[SOURCE]
    with pytest.raises(NotFoundError):
        await on(SOURCE, source.migrate_out(new_env_id(), LOOPBACK, 1, tls=tls))
    with pytest.raises(InputError):
        await on(SOURCE, source.migrate_out("../etc", LOOPBACK, 1, tls=tls))
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind((LOOPBACK, 0))
        free = probe.getsockname()[1]
    with pytest.raises(ExternalError) as refused:
        await on(SOURCE, source.migrate_out(env_id, LOOPBACK, free, tls=tls))
    assert str(refused.value) == (
        f"cannot reach the migration target {LOOPBACK}:{free}: Connection refused"
    )
    facts = source.migration_source(env_id)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({**facts, "env_id": new_env_id()}, InputError, "not the migration facts"),
        ({**facts, "accel": "kvm" if facts["accel"] == "tcg" else "tcg"}, CapabilityError,
         "QEMU cannot migrate between them"),
        ({**facts, "image": "0" * 64}, CapabilityError, "differs between the nodes"),
    ]  # fmt: skip
    for bad, kind, words in cases:
        with pytest.raises(kind, match=words):
            await on(TARGET, target.prepare_incoming(env_id, vm_spec(), bad,
                                                     tls=identities[TARGET]))  # fmt: skip
        assert traces(target, TARGET, env_id) == []
    for verb in (source.finish_incoming(env_id), source.abort_incoming(env_id)):
        with pytest.raises(StateError):
            await on(SOURCE, verb)


async def _timeout_and_cancellation(
    nodes: dict[str, QemuDriver], identities: dict[str, pki.Identity], env_id: str
) -> None:
    source, target = nodes[SOURCE], nodes[TARGET]
    facts, tls = source.migration_source(env_id), identities[SOURCE]
    for way in ("timeout", "cancel"):
        port = await on(TARGET, target.prepare_incoming(env_id, vm_spec(), facts,
                                                        tls=identities[TARGET]))  # fmt: skip
        slow = source.migrate_out(env_id, LOOPBACK, port, tls=tls, timeout=1.0, bandwidth=4 << 20)
        if way == "timeout":
            with pytest.raises(WaitTimeoutError, match=r"did not finish in 1s \(RAM \d+ MiB"):
                await on(SOURCE, slow)
        else:
            task = asyncio.ensure_future(on(SOURCE, slow))
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert (await on(SOURCE, source.inspect(env_id))).state is EnvState.RUNNING, way
        async with qemuqmp.monitor(source.paths(env_id).qmp) as client:
            migration = await qemuqmp.call(client, "query-migrate")
        assert migration["status"] == "cancelled", way
        await on(TARGET, target.abort_incoming(env_id))
        assert traces(target, TARGET, env_id) == []


async def _refused(
    nodes: dict[str, QemuDriver],
    identities: dict[str, pki.Identity],
    env_id: str,
    client: pki.Identity,
) -> ExternalError:
    source, target = nodes[SOURCE], nodes[TARGET]
    port = await on(TARGET, target.prepare_incoming(env_id, vm_spec(),
                                                    source.migration_source(env_id),
                                                    tls=identities[TARGET]))  # fmt: skip
    try:
        with pytest.raises(ExternalError) as failed:
            await on(SOURCE, source.migrate_out(env_id, LOOPBACK, port, tls=client, timeout=60))
    finally:
        await on(TARGET, target.abort_incoming(env_id))
    return failed.value
