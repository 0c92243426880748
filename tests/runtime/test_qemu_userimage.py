"""User disk images booted by the QEMU driver: a real GRUB ISO and a qcow2 of it (TCG or KVM)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from genos.errors import CapabilityError, NotFoundError
from genos.ids import new_env_id
from genos.runtime.driver import EnvState
from genos.runtime.images import ImageStore
from genos.runtime.qemu.driver import QemuDriver
from genos.runtime.userimages import UserImages
from genos.spec import EnvironmentSpec
from genos.testing import RFB_BANNER, read_banner
from tests.runtime.diskimages import VGA_BLUE, genos_cli, grub_iso, to_qcow2, wait_for_colour
from tests.runtime.test_qemu import assert_nothing_left, qemu_processes

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU"),
    pytest.mark.skipif(shutil.which("grub-mkrescue") is None, reason="needs grub-pc-bin"),
]


def image_spec(name: str, **extra: object) -> EnvironmentSpec:
    """A VM booting the user image ``name``: 256 MiB, a 512 MiB disk, no network."""
    return EnvironmentSpec.model_validate(
        {"tier": "vm", "base": {"image": name}, "network": {"mode": "none"},
         "resources": {"memory_mb": 256, "disk_mb": 512}, **extra}
    )  # fmt: skip


@pytest.fixture(scope="module")
def driver(roots: tuple[Path, Path], runner: asyncio.Runner) -> Iterator[QemuDriver]:
    """A QEMU driver whose user images are registered under ``<data root>/images/user``."""
    run_root, data_root = roots
    made = QemuDriver(ImageStore(data_root / "images"), run_root=run_root, data_root=data_root,
                      stop_timeout=2.0)  # fmt: skip
    yield made
    left = runner.run(made.list_ids())
    for env_id in left:
        runner.run(made.destroy(env_id))
    assert left == []


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real BIOS-bootable GRUB ISO, made by grub-mkrescue."""
    return grub_iso(tmp_path_factory.mktemp("user-image"))


def qemu_img_info(path: Path) -> dict[str, object]:
    """``qemu-img info`` of a VM's own qcow2 disk (format explicit)."""
    done = subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", str(path)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    info: dict[str, object] = json.loads(done.stdout)
    return info


def test_iso_boots_in_two_vms_at_once_and_leaves_nothing(
    driver: QemuDriver, iso: Path, runner: asyncio.Runner
) -> None:
    """An ISO added with `genos images add` boots (CD-ROM first, beside a blank disk) to its
    own picture in two VMs at once; rm is refused while they exist; pause, deep suspend and
    destroy work, and nothing of either VM is left."""
    data_root = driver.data_root
    added = genos_cli(data_root, "images", "add", "grub-iso", str(iso))
    assert added.returncode == 0, added.stderr
    image = UserImages(data_root / "images" / "user").get("grub-iso")
    first, second = new_env_id(), new_env_id()
    try:
        for env_id in (first, second):
            runner.run(driver.create(env_id, image_spec("grub-iso")))
            runner.run(driver.start(env_id))
        for env_id in (first, second):
            assert runner.run(read_banner(driver.display(env_id))) == RFB_BANNER
            assert runner.run(wait_for_colour(driver.display(env_id), VGA_BLUE)) > 0.5
        disk = qemu_img_info(driver.paths(first).disk)
        assert (disk["virtual-size"], "backing-filename" in disk) == (512 << 20, False)
        assert oct(image.path.stat().st_mode & 0o777) == "0o600"
        assert image.path.stat().st_uid == 0  # QEMU reads it through a descriptor it inherits
        refused = genos_cli(data_root, "images", "rm", "grub-iso")
        assert (refused.returncode, refused.stderr.count("\n")) == (1, 1)
        assert f"in use by {', '.join(sorted((first, second)))}" in refused.stderr
        with pytest.raises(CapabilityError, match="no GenOS agent"):
            runner.run(driver.exec(first, "true"))
        runner.run(_pause_and_deep_suspend(driver, first))
    finally:
        for env_id in (first, second):
            runner.run(driver.destroy(env_id))
    for env_id in (first, second):
        assert_nothing_left(driver, env_id)
    removed = genos_cli(data_root, "images", "rm", "grub-iso")
    assert removed.returncode == 0, removed.stderr
    assert not image.path.exists()


async def _pause_and_deep_suspend(driver: QemuDriver, env_id: str) -> None:
    await driver.suspend(env_id)
    assert (await driver.inspect(env_id)).state is EnvState.SUSPENDED
    await driver.resume(env_id)
    assert (await driver.inspect(env_id)).state is EnvState.RUNNING
    await driver.suspend(env_id, to_disk=True)
    seen = await driver.inspect(env_id)
    assert (seen.state, seen.pid, qemu_processes(env_id)) == (EnvState.SUSPENDED, None, [])
    await driver.resume(env_id)
    assert (await driver.inspect(env_id)).state is EnvState.RUNNING
    assert await wait_for_colour(driver.display(env_id), VGA_BLUE) > 0.5


def test_qcow2_boots_through_its_own_overlay(
    driver: QemuDriver, iso: Path, runner: asyncio.Runner, tmp_path: Path
) -> None:
    """A qcow2 image boots from the VM's own overlay (backing format explicit) and stays
    unchanged; destroy removes the overlay and the claim on the image."""
    data_root = driver.data_root
    disk = to_qcow2(iso, tmp_path / "grub.qcow2")
    added = genos_cli(data_root, "images", "add", "grub-disk", str(disk), "--format", "qcow2")
    assert added.returncode == 0, added.stderr
    image = driver.user_images.get("grub-disk")
    before = hashlib.sha256(image.path.read_bytes()).hexdigest()
    assert before == image.digest
    env_id = new_env_id()
    try:
        runner.run(driver.create(env_id, image_spec("grub-disk")))
        overlay = qemu_img_info(driver.paths(env_id).disk)
        assert (overlay["backing-filename"], overlay["backing-filename-format"]) == (
            str(image.path),
            "qcow2",
        )
        runner.run(driver.start(env_id))
        assert runner.run(wait_for_colour(driver.display(env_id), VGA_BLUE)) > 0.5
        assert driver.user_images.users("grub-disk") == [env_id]
    finally:
        runner.run(driver.destroy(env_id))
    assert_nothing_left(driver, env_id)
    assert driver.user_images.users("grub-disk") == []
    assert hashlib.sha256(image.path.read_bytes()).hexdigest() == before
    assert genos_cli(data_root, "images", "rm", "grub-disk").returncode == 0


def test_unknown_image_fails_at_create_and_leaves_nothing(
    driver: QemuDriver, runner: asyncio.Runner
) -> None:
    """A spec naming no registered image fails at create with a clear error, before anything
    is made."""
    env_id = new_env_id()
    with pytest.raises(NotFoundError, match="no user image named 'not-there'"):
        runner.run(driver.create(env_id, image_spec("not-there")))
    assert_nothing_left(driver, env_id)
