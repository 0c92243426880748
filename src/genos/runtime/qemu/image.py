"""A VM's boot files, made from the same content-addressed layers as a container's root.

The layers come from the :class:`~genos.runtime.images.ImageStore` for the
spec plus :data:`VM_PACKAGES` (Debian's kernel, a static busybox, Xorg and its
libinput driver), which land in the spec's apps layer, and
:data:`SPICE_AGENT_PACKAGES` for a spec that gets SPICE's agent
(:func:`~genos.runtime.qemu.guest.spice_agent`); any other spec's layers stay
the same. From them GenOS makes, once per content::

    <store>/qemu/<key>/root.ext4     the merged layers plus the guest init, as a raw ext4 image
    <store>/qemu/<key>/vmlinuz       the layers' kernel
    <store>/qemu/<key>/initrd.img    busybox + the modules of qemuguest.MODULES + /init
    <store>/qemu/<key>/meta.json     what it was made from

``key`` is the sha256 of the layer digests, the guest scripts and
:data:`FORMAT`, so a change to any of them makes a new image and a cached one
is never stale. The ext4 image is written by ``mkfs.ext4 -d`` from the layers
merged by overlayfs in a private mount namespace, so no mount is ever visible
on the host. Every environment gets a qcow2 overlay on ``root.ext4``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from genos.errors import ExternalError
from genos.runtime.images.locks import file_lock
from genos.runtime.images.mounts import HasPath, overlay_options
from genos.runtime.qemu.guest import (
    INITRAMFS_INIT,
    MODULES,
    VM_INIT_PATH,
    VM_SESSION,
    VM_SESSION_PATH,
    spice_agent,
    vm_init,
)
from genos.spec import EnvironmentSpec

FORMAT = 1
VM_PACKAGES = (
    "busybox-static",
    "linux-image-amd64",
    "xserver-xorg-core",
    "xserver-xorg-input-libinput",
)
SPICE_AGENT_PACKAGES = ("spice-vdagent",)
FREE_MB = 1024  # room for the user's files beyond the image's content
_TIMEOUT = 600


@dataclass(frozen=True)
class BootFiles:
    """A built VM image (see the module docstring)."""

    key: str
    root: Path
    kernel: Path
    initrd: Path


def vm_spec(spec: EnvironmentSpec) -> EnvironmentSpec:
    """``spec`` with the packages a VM guest needs on top of its own."""
    extra = {*spec.extra_packages, *VM_PACKAGES}
    if spice_agent(spec):
        extra.update(SPICE_AGENT_PACKAGES)
    return spec.model_copy(update={"extra_packages": sorted(extra)})


def image_key(layers: Sequence[HasPath]) -> str:
    """The content address of the boot files made from ``layers``."""
    identity = {
        "format": FORMAT,
        "layers": [str(getattr(layer, "digest", layer.path)) for layer in layers],
        "init": hashlib.sha256(INITRAMFS_INIT.encode()).hexdigest(),
        "vm_init": hashlib.sha256(vm_init().encode()).hexdigest(),
        "session": hashlib.sha256(VM_SESSION.encode()).hexdigest(),
        "modules": list(MODULES),
    }
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def ensure_boot_files(cache: Path, layers: Sequence[HasPath]) -> BootFiles:
    """The boot files of ``layers``, made now if they are not cached.

    Args:
        cache: ``<store>/qemu``.
        layers: the spec's layers, base first (from :func:`vm_spec`).

    Returns:
        The paths QEMU is given (world-readable, so QEMU's own user can open them).

    Raises:
        ExternalError: a tool failed or the layers hold no kernel.
    """
    key = image_key(layers)
    final = cache / key
    files = BootFiles(key, final / "root.ext4", final / "vmlinuz", final / "initrd.img")
    if (final / "meta.json").exists():
        return files
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    (cache / "locks").mkdir(mode=0o700, exist_ok=True)
    with file_lock(cache / "locks" / f"{key}.lock"):
        if not (final / "meta.json").exists():
            _build(cache, final, layers)
    return files


def _build(cache: Path, final: Path, layers: Sequence[HasPath]) -> None:
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        top_first = [layer.path for layer in reversed(layers)]
        version = _kernel_version(top_first)
        shutil.copyfile(_find(top_first, f"boot/vmlinuz-{version}"), work / "vmlinuz")
        write_initrd(work / "initrd.img", top_first, version)
        stage = work / "stage"
        _stage_guest_files(stage)
        size_mb = _image_size_mb(layers)
        _make_ext4([*(layer.path for layer in layers), stage], work / "root.ext4", size_mb)
        shutil.rmtree(stage)
        meta = {"format": FORMAT, "kernel": version, "size_mb": size_mb,
                "layers": [str(getattr(layer, "digest", "")) for layer in layers]}  # fmt: skip
        (work / "meta.json").write_text(json.dumps(meta, indent=1))
        for path in work.iterdir():
            path.chmod(0o644)
        work.chmod(0o755)
        os.sync()
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _find(top_first: Sequence[Path], rel: str) -> Path:
    merged_usr = rel.split("/", 1)[0] in {"bin", "lib", "sbin"}
    for root in top_first:
        for candidate in (rel, f"usr/{rel}") if merged_usr else (rel,):
            if (root / candidate).exists():
                return root / candidate
    raise ExternalError(f"the image's layers hold no {rel}")


def _kernel_version(top_first: Sequence[Path]) -> str:
    for root in top_first:
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        if kernels:
            return kernels[-1].name.removeprefix("vmlinuz-")
    raise ExternalError("the image's layers hold no kernel (linux-image-amd64)")


def _image_size_mb(layers: Sequence[HasPath]) -> int:
    used = 0
    for layer in layers:
        meta = getattr(layer, "meta", None)
        used += int(getattr(meta, "size", 0))
    return int(used * 1.25) // 2**20 + FREE_MB


def _stage_guest_files(stage: Path) -> None:
    for rel, text in ((VM_INIT_PATH, vm_init()), (VM_SESSION_PATH, VM_SESSION)):
        path = stage / rel.lstrip("/")
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    for directory in [stage, *(p for p in stage.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)


def _make_ext4(lowers: Sequence[Path], image: Path, size_mb: int) -> None:
    merged = image.parent / "merged"
    merged.mkdir()
    options = overlay_options(lowers, None, None)
    script = (
        'mount -t overlay overlay -o "$1" "$2" && '
        'exec mkfs.ext4 -q -F -L genos-root -m 0 -E root_owner=0:0 -d "$2" "$3" "$4"'
    )
    isolate = ["unshare", "--mount", "--propagation", "private", "--"]
    argv = [*isolate, "sh", "-c", script, "mkfs", options, str(merged), str(image), f"{size_mb}M"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"building the VM's root image failed: {exc}") from exc
    finally:
        merged.rmdir()
    if done.returncode != 0:
        raise ExternalError("mkfs.ext4 of the VM's root failed", detail=done.stderr.strip())


# -- the initramfs (cpio "newc", see the kernel's early-userspace/buffer-format) --


def write_initrd(target: Path, top_first: Sequence[Path], version: str) -> None:
    """Write the initramfs: busybox, ``/init``, the modules and their load order.

    Args:
        target: the file to write.
        top_first: the layers' directories, top layer first.
        version: the kernel's release (``6.1.0-56-amd64``).

    Raises:
        ExternalError: a module or busybox is missing from the layers.
    """
    moddir = _find(top_first, f"lib/modules/{version}")
    order = module_order(moddir / "modules.dep", MODULES)
    archive = _Cpio()
    for name in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        archive.directory(name)
    archive.device("dev/console", 5, 1)
    archive.file("init", INITRAMFS_INIT.encode(), 0o755)
    archive.file("bin/busybox", _find(top_first, "usr/bin/busybox").read_bytes(), 0o755)
    for rel in order:
        archive.file(f"modules/{Path(rel).name}", (moddir / rel).read_bytes(), 0o644)
    load = "".join(f"{Path(rel).name}\n" for rel in order)
    archive.file("modules/load", load.encode(), 0o644)
    target.write_bytes(archive.finish())


def module_order(modules_dep: Path, wanted: Sequence[str]) -> list[str]:
    """The module files ``wanted`` needs, each after what it depends on.

    Args:
        modules_dep: the kernel's ``modules.dep``.
        wanted: module names (``-`` and ``_`` are the same); built-in ones are skipped.

    Returns:
        Paths relative to the modules directory, in load order.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        found = by_name.get(name.replace("-", "_"))
        if found is not None:
            visit(found)
    return order


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko", 1)[0].replace("-", "_")


class _Cpio:
    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]  # fmt: skip
        self._ino += 1
        header = b"070701" + b"".join(b"%08x" % value for value in fields)
        self._parts.append(_pad(header + name.encode() + b"\0"))
        self._parts.append(_pad(data))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int) -> None:
        self._entry(name, 0o100000 | mode, data)

    def device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)
