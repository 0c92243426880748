"""The QEMU driver against real QEMU (TCG is fine): microVMs and full VMs up to their display."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genos.errors import CapabilityError, InputError, NotFoundError, StateError
from genos.ids import new_env_id
from genos.runtime.driver import EnvState
from genos.runtime.images import ImageStore
from genos.runtime.qemu import qmp as qemuqmp
from genos.runtime.qemu.accel import PROBE_BYTES, accelerator, guest_progress, probe_kvm
from genos.runtime.qemu.driver import QemuDriver
from genos.runtime.qemu.host import cgroup_dirs, uid_holders
from genos.runtime.qemu.image import module_order
from genos.sandbox.network import NetworkSandbox
from genos.spec import EnvironmentSpec
from genos.testing import EXPECTED_STATES, RFB_BANNER, check_driver, read_banner

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU"),
]

MEMORY_MB = 512


def vm_spec(tier: str, **extra: object) -> EnvironmentSpec:
    """A small VM: 512 MiB, one CPU, the default desktop."""
    return EnvironmentSpec.model_validate(
        {"name": f"{tier}-test", "tier": tier, "resources": {"memory_mb": MEMORY_MB}, **extra}
    )


@pytest.fixture(scope="module")
def driver(
    image_store: ImageStore, roots: tuple[Path, Path], runner: asyncio.Runner
) -> Iterator[QemuDriver]:
    """A QEMU driver on the shared image store (the VM image is built once, then cached)."""
    run_root, data_root = roots
    network = NetworkSandbox(data_root / "network", dns_servers=())
    made = QemuDriver(image_store, network=network, run_root=run_root, data_root=data_root)
    yield made
    left = runner.run(made.list_ids())
    for env_id in left:
        runner.run(made.destroy(env_id))
    assert left == []


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


def assert_nothing_left(driver: QemuDriver, env_id: str) -> None:
    """No QEMU process, socket, overlay, state file, cgroup, uid slot or netns of ``env_id``."""
    paths = driver.paths(env_id)
    assert qemu_processes(env_id) == []
    assert not paths.root.exists()
    assert not paths.disk.exists()
    assert not paths.state.exists()
    assert cgroup_dirs(env_id) == []
    assert env_id not in uid_holders()
    assert not Path(f"/run/netns/genos-{env_id}").exists()


async def guest(driver: QemuDriver, env_id: str, command: str) -> str:
    """Run ``command`` in the guest and return its output (it must succeed)."""
    result = await driver.exec(env_id, command)
    assert result.code == 0, result.stdout
    return result.stdout


# -- no QEMU guest needed --------------------------------------------------------


def test_module_order_loads_dependencies_first(tmp_path: Path) -> None:
    """Modules come after everything they depend on, once each; built-ins are skipped."""
    dep = tmp_path / "modules.dep"
    dep.write_text(
        "kernel/a/virtio_blk.ko: kernel/v/virtio.ko kernel/v/virtio_ring.ko\n"
        "kernel/v/virtio.ko: kernel/v/virtio_ring.ko\n"
        "kernel/v/virtio_ring.ko:\n"
        "kernel/c/crc32c-intel.ko:\n"
    )
    order = module_order(dep, ["virtio_blk", "virtio", "crc32c_intel", "ext4"])
    assert order == [
        "kernel/v/virtio_ring.ko",
        "kernel/v/virtio.ko",
        "kernel/a/virtio_blk.ko",
        "kernel/c/crc32c-intel.ko",
    ]


def test_kvm_probe_agrees_with_the_probe_guest() -> None:
    """The probe guest makes progress under TCG, and KVM is chosen only if it does under KVM."""
    assert guest_progress("tcg", 20.0) >= PROBE_BYTES
    kvm = probe_kvm()
    assert accelerator() == ("kvm" if kvm else "tcg")


def test_bad_input_gives_genos_errors(driver: QemuDriver, runner: asyncio.Runner) -> None:
    """Unknown ids, malformed ids and non-VM tiers get GenOS errors and leave nothing behind."""
    unknown = new_env_id()
    for call in (driver.inspect(unknown), driver.start(unknown), driver.resume(unknown)):
        with pytest.raises(NotFoundError):
            runner.run(call)
    with pytest.raises(NotFoundError):
        driver.display(unknown)
    with pytest.raises(InputError):
        runner.run(driver.inspect("../etc"))
    with pytest.raises(CapabilityError, match="not container"):
        runner.run(driver.create(unknown, EnvironmentSpec()))
    assert_nothing_left(driver, unknown)


# -- real guests ------------------------------------------------------------------


def test_microvm_passes_the_driver_conformance_suite(
    driver: QemuDriver, runner: asyncio.Runner
) -> None:
    """A microVM goes through the whole lifecycle, deep suspend included, like every driver."""
    assert runner.run(check_driver(lambda: driver_copy(driver), vm_spec("microvm"))) == (
        EXPECTED_STATES
    )


def test_vm_passes_the_driver_conformance_suite(driver: QemuDriver, runner: asyncio.Runner) -> None:
    """A full q35 VM with a NIC in its network namespace goes through the whole lifecycle."""
    spec = vm_spec("vm", network={"mode": "internet"})
    assert runner.run(check_driver(lambda: driver_copy(driver), spec)) == EXPECTED_STATES


def driver_copy(driver: QemuDriver) -> QemuDriver:
    """A second driver on the same roots (check_driver closes the one it gets)."""
    return QemuDriver(
        driver.images,
        network=driver.network,
        run_root=driver.run_root,
        data_root=driver.data_root,
        cache_dir=driver.cache_dir,
    )


def test_destroy_returns_once_qemu_has_exited_and_been_reaped(
    driver: QemuDriver, runner: asyncio.Runner
) -> None:
    """QEMU is GenOS's child: when destroy returns its pid is gone from /proc, not even a
    zombie waiting for init, and nothing of the VM is left."""
    env_id = new_env_id()
    runner.run(driver.create(env_id, vm_spec("microvm")))
    try:
        runner.run(driver.start(env_id, timeout=300))
        pid = runner.run(driver.inspect(env_id)).pid
        assert pid is not None
        assert qemu_processes(env_id) == [pid]
        assert os.getsid(pid) == pid  # its own session: the control plane's signals miss it
    finally:
        runner.run(driver.destroy(env_id))
    assert not Path(f"/proc/{pid}").exists()
    assert_nothing_left(driver, env_id)
    assert env_id not in driver._locks  # nor does the driver keep a lock of it


def test_microvm_pause_stops_the_guest_clock_and_deep_suspend_keeps_its_state(
    driver: QemuDriver, runner: asyncio.Runner
) -> None:
    """QMP stop freezes the guest; a save to disk ends QEMU and a restore brings back processes
    and files; destroy leaves nothing."""
    env_id = new_env_id()
    paths = driver.paths(env_id)
    try:
        runner.run(driver.create(env_id, vm_spec("microvm")))
        with pytest.raises(StateError) as twice:
            runner.run(driver.create(env_id, vm_spec("microvm")))
        assert (twice.value.current, twice.value.required) == ("created", ("absent",))
        runner.run(driver.start(env_id))
        assert runner.run(read_banner(driver.display(env_id))) == RFB_BANNER
        assert oct(paths.qmp.stat().st_mode & 0o777) == "0o600"
        assert paths.qmp.stat().st_uid != 0
        assert "genos: display-ready" in paths.console.read_text()
        assert runner.run(guest(driver, env_id, "ls /sys/class/net")) == "lo\n"
        runner.run(_pause_freezes_guest_clock(driver, env_id))
        runner.run(_deep_suspend_keeps_state(driver, env_id))
    finally:
        runner.run(driver.destroy(env_id))
    assert_nothing_left(driver, env_id)
    assert env_id not in runner.run(driver.list_ids())


async def _pause_freezes_guest_clock(driver: QemuDriver, env_id: str) -> None:
    before = float((await guest(driver, env_id, "cut -d' ' -f1 /proc/uptime")).strip())
    host_before = time.monotonic()
    await driver.suspend(env_id)
    assert (await driver.inspect(env_id)).state is EnvState.SUSPENDED
    paused_until = time.monotonic() + 2.0
    while time.monotonic() < paused_until:  # the guest must stay paused the whole time
        assert (await driver.inspect(env_id)).state is EnvState.SUSPENDED
        await asyncio.sleep(0.1)
    await driver.resume(env_id)
    after = float((await guest(driver, env_id, "cut -d' ' -f1 /proc/uptime")).strip())
    host_elapsed = time.monotonic() - host_before
    assert after > before
    assert after - before < host_elapsed - 1.5


async def _deep_suspend_keeps_state(driver: QemuDriver, env_id: str) -> None:
    paths = driver.paths(env_id)
    spawn = (
        "setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $! >/tmp/sleeper; cat /tmp/sleeper"
    )
    sleeper = (await guest(driver, env_id, spawn)).strip()
    await guest(driver, env_id, "echo kept >/root/on-disk && sync")
    old_pid = (await driver.inspect(env_id)).pid
    await driver.suspend(env_id, to_disk=True)
    seen = await driver.inspect(env_id)
    assert (seen.state, seen.pid) == (EnvState.SUSPENDED, None)
    assert seen.runtime == f"qemu-{driver.accelerator}"
    assert qemu_processes(env_id) == []
    assert oct(paths.state.stat().st_mode & 0o777) == "0o600"
    assert paths.state.stat().st_size > 1 << 20
    await driver.resume(env_id)
    seen = await driver.inspect(env_id)
    assert seen.state is EnvState.RUNNING
    assert seen.pid not in (None, old_pid)
    check = f"kill -0 {sleeper} && cat /tmp/sleeper /root/on-disk"
    assert await guest(driver, env_id, check) == f"{sleeper}\nkept\n"
    assert not paths.state.exists()
    assert await read_banner(driver.display(env_id)) == RFB_BANNER


def test_vm_guest_takes_over_the_namespace_address(
    driver: QemuDriver, runner: asyncio.Runner
) -> None:
    """A full VM's NIC takes the env's address on a tap bridged in its netns; destroy ends it."""
    env_id = new_env_id()
    netns = f"genos-{env_id}"
    try:
        runner.run(driver.create(env_id, vm_spec("vm", network={"mode": "internet"})))
        assert json.loads(driver.paths(env_id).record.read_text())["netns"] == netns
        runner.run(driver.start(env_id))
        handle = driver.network.handle(env_id) if driver.network else None
        assert handle is not None
        shown = runner.run(guest(driver, env_id, "busybox ip -4 -o addr show dev eth0"))
        assert f"inet {handle.address}/30 " in shown
        route = runner.run(guest(driver, env_id, "busybox ip route show default"))
        assert route.startswith(f"default via {handle.gateway} dev eth0")
        links = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "master", "br0"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert sorted(line.split(": ")[1].split("@")[0] for line in links.splitlines()) == [
            "eth0",
            "tap0",
        ]
    finally:
        runner.run(driver.destroy(env_id))
    assert_nothing_left(driver, env_id)


# QMP qcodes for the characters typed below.
QCODES = {" ": "spc", "/": "slash", "\n": "ret"}


def test_keys_at_the_console_reach_the_guest_desktop(
    driver: QemuDriver, runner: asyncio.Runner
) -> None:
    """Keys QEMU's console sends reach Xorg in the guest: the headless xterm runs what is typed."""
    env_id = new_env_id()
    try:
        runner.run(driver.create(env_id, vm_spec("microvm", display={"headless": True})))
        runner.run(driver.start(env_id))
        runner.run(_typed_command_runs(driver, env_id))
    finally:
        runner.run(driver.destroy(env_id))
    assert_nothing_left(driver, env_id)


async def _typed_command_runs(driver: QemuDriver, env_id: str) -> None:
    await _until(driver, env_id, "pidof xterm")
    xorg_log = await guest(driver, env_id, "cat /run/Xorg.log")
    assert "PreInit returned" not in xorg_log  # both input devices were taken
    # xterm's process exists before its window takes keys (under TCG, seconds later):
    # type the (idempotent) line again until it has run, at most five times.
    for _attempt in range(5):
        async with qemuqmp.monitor(driver.paths(env_id).qmp) as qmp:
            for char in "\ntouch /tmp/typed\n":
                key = {"type": "qcode", "data": QCODES.get(char, char)}
                await qemuqmp.call(qmp, "send-key", {"keys": [key]})
                await asyncio.sleep(0.05)
        if await _runs_within(driver, env_id, "test -e /tmp/typed", 12):
            return
    pytest.fail("what QEMU's console typed never ran in the guest's xterm")


async def _runs_within(driver: QemuDriver, env_id: str, command: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while (await driver.exec(env_id, command)).code != 0:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


async def _until(driver: QemuDriver, env_id: str, command: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (await driver.exec(env_id, command)).code != 0:
        if time.monotonic() > deadline:
            pytest.fail(f"{command!r} still fails in the guest")
        await asyncio.sleep(0.5)
