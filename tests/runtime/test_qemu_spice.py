"""SPICE's agent in a GenOS VM: which specs get it, and a real viewer sharing the clipboard."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genos.ids import new_env_id
from genos.runtime.images import ImageStore
from genos.runtime.images.recipes import plan
from genos.runtime.qemu.cmd import Machine, qemu_argv
from genos.runtime.qemu.driver import QemuDriver
from genos.runtime.qemu.guest import SPICE_PORT, spice_agent
from genos.runtime.qemu.host import VmPaths
from genos.runtime.qemu.image import SPICE_AGENT_PACKAGES, VM_PACKAGES, vm_spec
from genos.spec import EnvironmentSpec
from tests.gateway.helpers import XServer, end_process, run_xvnc
from tests.runtime.test_qemu import assert_nothing_left, guest


def spice_spec(
    clipboard: str, *, protocol: str = "spice", tier: str = "vm", **extra: object
) -> EnvironmentSpec:
    """A small VM without network (a SPICE ``vm`` unless told): 512 MiB, the given clipboard."""
    return EnvironmentSpec.model_validate(
        {"name": "spice-test", "tier": tier, "display": {"protocol": protocol},
         "security": {"clipboard": clipboard}, "network": {"mode": "none"},
         "resources": {"memory_mb": 512}, **extra}
    )  # fmt: skip


def machine(*, agent: bool) -> Machine:
    """A ``vm`` machine served over SPICE, with or without the agent's channel."""
    return Machine(tier="vm", accel="tcg", memory_mb=512, cpus=1, width=1024, height=768,
                   kernel="vmlinuz", initrd="initrd.img", nic=False, spice=True,
                   mac="52:54:00:00:00:01", spice_agent=agent)  # fmt: skip


# -- no QEMU guest needed --------------------------------------------------------


@pytest.mark.parametrize("clipboard", ["none", "to_env", "from_env"])
def test_no_agent_without_a_two_way_clipboard(clipboard: str) -> None:
    """SPICE cannot keep one direction, so a one-way or no clipboard gets no agent, and the
    spec's layers are exactly those of the same VM over VNC (their cache keys do not move)."""
    spec, over_vnc = spice_spec(clipboard), spice_spec(clipboard, protocol="vnc")
    assert spice_agent(spec) is False
    assert vm_spec(spec).extra_packages == sorted(VM_PACKAGES)
    digests = [recipe.digest for recipe in plan(vm_spec(spec), "amd64")]
    assert digests == [recipe.digest for recipe in plan(vm_spec(over_vnc), "amd64")]


def test_two_way_clipboard_gets_the_agent_only_in_a_spice_vm() -> None:
    """Clipboard ``both`` over SPICE adds spice-vdagent to the VM's packages; over VNC, or
    in a microVM (no SPICE), it does not."""
    spec = spice_spec("both")
    assert spice_agent(spec) is True
    assert vm_spec(spec).extra_packages == sorted({*VM_PACKAGES, *SPICE_AGENT_PACKAGES})
    over_vnc, micro = spice_spec("both", protocol="vnc"), spice_spec("both", tier="microvm")
    for other in (over_vnc, micro):
        assert spice_agent(other) is False
        assert vm_spec(other).extra_packages == sorted(VM_PACKAGES)


def test_spice_argv_has_the_agent_channel_only_when_asked(tmp_path: Path) -> None:
    """The vdagent chardev and its port come with ``spice_agent`` only; the pointer never
    goes through the agent and the agent's file transfer is off."""
    paths = VmPaths.of(new_env_id(), tmp_path / "run", tmp_path / "data")
    without = qemu_argv(machine(agent=False), paths)
    with_agent = qemu_argv(machine(agent=True), paths)
    spice = without[without.index("-spice") + 1]
    assert spice.endswith(",agent-mouse=off,disable-agent-file-xfer=on")
    assert "spicevmc,id=vdagent,name=vdagent" not in without
    assert not [arg for arg in without if SPICE_PORT in arg]
    added = with_agent[len(without) :]
    assert added == ["-chardev", "spicevmc,id=vdagent,name=vdagent",
                     "-device", f"virtserialport,chardev=vdagent,name={SPICE_PORT}"]  # fmt: skip


# -- a real guest and a real SPICE viewer -----------------------------------------


@pytest.fixture(scope="module")
def driver(
    image_store: ImageStore, roots: tuple[Path, Path], runner: asyncio.Runner
) -> Iterator[QemuDriver]:
    """A QEMU driver on the shared image store (layers built once, then cached)."""
    run_root, data_root = roots
    made = QemuDriver(image_store, run_root=run_root, data_root=data_root)
    yield made
    left = runner.run(made.list_ids())
    for env_id in left:
        runner.run(made.destroy(env_id))
    assert left == []


@pytest.mark.qemu
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU")
@pytest.mark.skipif(shutil.which("remote-viewer") is None, reason="needs virt-viewer")
@pytest.mark.skipif(shutil.which("xclip") is None, reason="needs xclip")
def test_viewer_and_guest_share_the_clipboard_both_ways(
    driver: QemuDriver, runner: asyncio.Runner, tmp_path: Path
) -> None:
    """A ``vm`` with clipboard ``both`` runs spice-vdagentd and the session's spice-vdagent;
    text copied on a real remote-viewer's display reaches the guest's clipboard and text
    copied in the guest reaches the viewer's display. A ``none`` VM gets no agent channel."""
    env_id = new_env_id()
    try:
        runner.run(driver.create(env_id, spice_spec("both", extra_packages=["xclip"])))
        assert json.loads(driver.paths(env_id).record.read_text())["machine"]["spice_agent"]
        runner.run(driver.start(env_id))
        ports = runner.run(guest(driver, env_id, "readlink /dev/virtio-ports/" + SPICE_PORT))
        assert ports.startswith("../vport")
        both_agents = "busybox pidof spice-vdagentd && busybox pidof spice-vdagent"
        wait_for_guest(driver, runner, env_id, both_agents)
        autostart = "test -e /etc/xdg/autostart/spice-vdagent.desktop; echo $?"
        assert runner.run(guest(driver, env_id, autostart)) == "1\n"
        # SPICE's audio and USB redirection channels have their devices in the guest.
        cards = runner.run(guest(driver, env_id, "cat /proc/asound/cards"))
        assert "HDA-Intel" in cards, cards
        hubs = runner.run(guest(driver, env_id, "cat /sys/bus/usb/devices/usb*/product"))
        assert "xHCI Host Controller" in hubs, hubs
        with (
            run_xvnc(tmp_path, "800x600", retro=False) as xserver,
            viewer(xserver, driver.endpoint(env_id, "spice"), tmp_path),
        ):
            viewer_to_guest(driver, runner, env_id, xserver)
            guest_to_viewer(driver, runner, env_id, xserver)
    finally:
        runner.run(driver.destroy(env_id))
    assert_nothing_left(driver, env_id)
    none_machine_has_no_agent(driver, runner)


def none_machine_has_no_agent(driver: QemuDriver, runner: asyncio.Runner) -> None:
    """Created (not booted) with clipboard ``none``: QEMU's command line has no vdagent."""
    env_id = new_env_id()
    try:
        runner.run(driver.create(env_id, spice_spec("none")))
        paths = driver.paths(env_id)
        record = json.loads(paths.record.read_text())
        argv = qemu_argv(Machine(**record["machine"]), paths)
        assert argv[argv.index("-spice") + 1].startswith(f"unix=on,addr={paths.spice},")
        assert record["machine"]["spice_agent"] is False
        assert not [arg for arg in argv if "vdagent" in arg or SPICE_PORT in arg]
    finally:
        runner.run(driver.destroy(env_id))
    assert_nothing_left(driver, env_id)


def wait_for_guest(
    driver: QemuDriver, runner: asyncio.Runner, env_id: str, command: str, timeout: float = 60
) -> str:
    """Run ``command`` in the guest until it succeeds; its output."""
    deadline = time.monotonic() + timeout
    while True:
        result = runner.run(driver.exec(env_id, command))
        if result.code == 0:
            return result.stdout
        if time.monotonic() > deadline:
            pytest.fail(f"{command!r} still fails in the guest: {result.stdout}")
        time.sleep(0.5)


@contextlib.contextmanager
def viewer(xserver: XServer, socket: Path, tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """remote-viewer on our own X display, connected to the VM's SPICE socket; ended by pid."""
    env = {**xserver.env, "HOME": str(tmp), "XDG_RUNTIME_DIR": str(tmp), "NO_AT_BRIDGE": "1"}
    with (tmp / "remote-viewer.log").open("wb") as log:
        argv = ["remote-viewer", f"spice+unix://{socket}"]
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            end_process(proc)


def viewer_to_guest(
    driver: QemuDriver, runner: asyncio.Runner, env_id: str, xserver: XServer
) -> None:
    """Text owned by xclip on the viewer's display is what the guest's clipboard reads."""
    read = "DISPLAY=:0 timeout 5 xclip -o -selection clipboard"
    deadline = time.monotonic() + 60
    attempt = 0
    while True:
        attempt += 1
        text = f"from the viewer {attempt}"
        owner = subprocess.Popen(
            ["xclip", "-quiet", "-selection", "clipboard", "-i"], env=xserver.env,
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert owner.stdin is not None
            owner.stdin.write(text.encode())
            owner.stdin.close()
            seen = ""
            until = time.monotonic() + 8
            while time.monotonic() < until and seen != text:
                seen = runner.run(driver.exec(env_id, read)).stdout
                time.sleep(0.3)
        finally:
            owner.kill()
            owner.wait(10)
        if seen == text:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the guest's clipboard never read {text!r} (last: {seen!r})")


def guest_to_viewer(
    driver: QemuDriver, runner: asyncio.Runner, env_id: str, xserver: XServer
) -> None:
    """Text xclip owns in the guest is what the viewer's display's clipboard reads."""
    text = "from the guest"
    copy = f"printf %s '{text}' | DISPLAY=:0 xclip -selection clipboard -i"
    runner.run(guest(driver, env_id, copy))
    deadline = time.monotonic() + 30
    seen = ""
    while seen != text:
        if time.monotonic() > deadline:
            pytest.fail(f"the viewer's clipboard never read {text!r} (last: {seen!r})")
        done = subprocess.run(["xclip", "-o", "-selection", "clipboard"], env=xserver.env,
                              capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
        seen = done.stdout
        time.sleep(0.3)
