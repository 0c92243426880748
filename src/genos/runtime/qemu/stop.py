"""Starting and stopping one QEMU process, and releasing everything a VM holds.

Launch: the wrapper of :mod:`genos.runtime.qemu.cmd` plus QEMU's argv, umask
077 (its sockets are 0600), its own session, stdout and stderr to
``qemu.log``; the pid goes into the VM's cgroup at once. QEMU is this
process's child (the wrapper only execs, so the child's pid is QEMU's),
and a thread per VM waits for it: the moment it exits it is reaped, so when
``destroy`` returns not even a zombie of it is left. A QEMU started by an
earlier control plane belongs to init; for it, exited means a zombie at most. Ready: the guest's
mark on the serial console (GenOS's own images), then the RFB banner on
QEMU's VNC socket. Stop: graceful, then
forceful - ACPI power button (the guest powers off cleanly), QMP ``quit``,
SIGKILL - each step bounded by a deadline. Release: the process, anything
left in the cgroup, the network namespace, the cgroup, the directories (disk
overlay and saved state with them) and the uid slot, each attempted even
when an earlier one failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genos.errors import ExternalError, GenOSError
from genos.runtime.oci.env import alive, log_tail, wait_banner
from genos.runtime.qemu import host as qemuhost
from genos.runtime.qemu import qmp as qemuqmp
from genos.runtime.qemu.cmd import Machine
from genos.runtime.qemu.host import VmPaths
from genos.sandbox import tap
from genos.sandbox.network import NetworkSandbox

logger = logging.getLogger("genos.runtime.qemu")
QUIT_TIMEOUT = 5.0


class _Child:
    """A QEMU this process started, and the thread that reaps it the moment it exits."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.exited = threading.Event()

    @classmethod
    def adopt(cls, process: subprocess.Popen[bytes]) -> _Child:
        """Track ``process`` and start reaping it (tracked first: it may exit at once)."""
        child = _CHILDREN[process.pid] = cls(process)
        name = f"genos-qemu-reaper-{process.pid}"
        threading.Thread(target=child._reap, name=name, daemon=True).start()
        return child

    def _reap(self) -> None:
        self.process.wait()
        _CHILDREN.pop(self.process.pid, None)
        self.exited.set()


_CHILDREN: dict[int, _Child] = {}


async def launch(
    argv: list[str], paths: VmPaths, timeout: float = 30.0, *, pass_fds: tuple[int, ...] = ()
) -> int:
    """Start QEMU as a child in its own session (see the module docstring); its pid once
    it has written it.

    Its own session keeps it out of the control plane's signals, so it
    outlives a control plane that stops (``-daemonize`` would fork after
    the seccomp sandbox forbids it). ``pass_fds`` are inherited by QEMU
    under the same numbers (a user image it may not open by path).

    Raises:
        ExternalError: it could not be started or exited at once (its log in ``detail``).
    """
    paths.pidfile.unlink(missing_ok=True)
    log = os.open(paths.qemu_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        process = subprocess.Popen(  # noqa: ASYNC220 - fork and exec only; the reaper waits
            [*argv, "-pidfile", str(paths.pidfile)], stdin=subprocess.DEVNULL, stdout=log,
            stderr=log, umask=0o077, pass_fds=pass_fds, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise ExternalError(f"cannot start QEMU: {exc}") from exc
    finally:
        os.close(log)
    child = _Child.adopt(process)
    deadline = time.monotonic() + timeout
    while (pid := qemu_pid(paths, _read_pid(paths.pidfile))) is None:
        if child.exited.is_set() or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise ExternalError("QEMU did not start", detail=log_tail(paths.qemu_log))
        await asyncio.sleep(0.01)
    return pid


def exited(pid: int) -> bool:
    """Whether QEMU ``pid`` has exited: reaped if it is this process's child, else not running."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.exited.is_set()
    return not alive(pid)


async def wait_ready(paths: VmPaths, pid: int, timeout: float, mark: str | None) -> None:
    """Wait for the guest's ``mark`` on the serial console (if any), then the RFB banner.

    A user image has no mark to give: its display is ready when QEMU's VNC
    server answers. Afterwards QEMU's sockets are made 0600.

    Raises:
        ExternalError: QEMU exited, or the display did not come up in ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while mark is not None and not _console_says(paths.console, mark):
        if qemu_pid(paths, pid) is None:
            tail = log_tail(paths.qemu_log) or log_tail(paths.console)
            raise ExternalError(f"{paths.env_id}: QEMU exited while booting", detail=tail)
        if time.monotonic() > deadline:
            raise ExternalError(f"{paths.env_id}: the guest's display did not come up in "
                                f"{timeout:g}s", detail=log_tail(paths.console))  # fmt: skip
        await asyncio.sleep(0.05)
    await wait_banner(paths.vnc, pid, max(deadline - time.monotonic(), 1.0))
    tighten_sockets(paths)


def _console_says(console: Path, mark: str) -> bool:
    try:
        return mark in console.read_text(errors="replace")
    except OSError:
        return False


def tighten_sockets(paths: VmPaths) -> None:
    """Sockets QEMU made under umask 077 are 0700; no one needs to execute them: 0600."""
    for sock in (paths.qmp, paths.vnc, paths.agent, paths.spice):
        with contextlib.suppress(FileNotFoundError):
            sock.chmod(0o600)


@contextlib.contextmanager
def image_fd(image: str) -> Iterator[int | None]:
    """A read-only descriptor of a user image for QEMU to inherit (None: no user image).

    QEMU's own user may not open the image by path; it is root's, 0600.

    Raises:
        ExternalError: the image cannot be opened.
    """
    if not image:
        yield None
        return
    try:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ExternalError(f"cannot open the user image {image}", detail=str(exc)) from exc
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def tap_fd(machine: Machine, record: dict[str, Any]) -> Iterator[int | None]:
    """A queue of the namespace's ``tap0`` for QEMU to inherit (None: the VM has no NIC).

    Raises:
        ExternalError: the tap cannot be opened.
    """
    netns = record.get("netns")
    if not machine.nic or not netns:
        yield None
        return
    fd = tap.open_tap(netns)
    try:
        yield fd
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def qemu_pid(paths: VmPaths, pid: int | None) -> int | None:
    """``pid`` if it is this VM's QEMU and still runs (not a zombie, not a reused pid)."""
    if not pid or not alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if f"genos-{paths.env_id}".encode() in cmdline else None


async def wait_exit(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` has exited (:func:`exited`); False if it still runs at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if exited(pid):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)


async def stop(paths: VmPaths, pid: int, graceful: float) -> None:
    """Power the VM off: power button (if it runs), ``quit``, then SIGKILL.

    Args:
        paths: the VM's paths (for its monitor).
        pid: QEMU's pid.
        graceful: seconds the guest gets to power off by itself.

    Raises:
        ExternalError: QEMU survived SIGKILL.
    """
    log = logger.getChild(paths.env_id)
    with contextlib.suppress(GenOSError):
        if await qemuqmp.status(paths.qmp, timeout=2.0) == "running":
            async with qemuqmp.monitor(paths.qmp, timeout=2.0) as client:
                await qemuqmp.call(client, "system_powerdown")
            if await wait_exit(pid, graceful):
                log.info("powered off")
                return
    with contextlib.suppress(GenOSError):
        async with qemuqmp.monitor(paths.qmp, timeout=2.0) as client:
            await qemuqmp.call(client, "quit")
    if await wait_exit(pid, QUIT_TIMEOUT):
        return
    log.warning("QEMU %d ignored quit; killing it", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not await wait_exit(pid, QUIT_TIMEOUT):
        raise ExternalError(f"QEMU {pid} survived SIGKILL")


async def release(
    paths: VmPaths,
    *,
    pid: int | None,
    network: NetworkSandbox | None,
    graceful: float,
) -> list[str]:
    """Release everything the VM holds (see the module docstring).

    Returns:
        One line per step that failed (empty: nothing is left).
    """
    problems: list[str] = []
    if pid is not None:
        try:
            await stop(paths, pid, graceful)
        except GenOSError as exc:
            problems.append(f"stop: {exc}")
    for task in qemuhost.cgroup_tasks(paths.env_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(task, signal.SIGKILL)
        await wait_exit(task, QUIT_TIMEOUT)
    if network is not None:
        try:
            await asyncio.to_thread(network.teardown, paths.env_id)
        except GenOSError as exc:
            problems.append(f"network: {exc}")
    busy = await _remove_cgroup(paths.env_id, QUIT_TIMEOUT)
    if busy:
        problems.append(f"cgroup busy: {', '.join(map(str, busy))}")
    for directory in (paths.root, paths.data):
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(shutil.rmtree, directory)
        if directory.exists():
            problems.append(f"could not remove {directory}")
    try:
        qemuhost.release_uid(paths.env_id)
    except (GenOSError, OSError) as exc:
        problems.append(f"uid slot: {exc}")
    return problems


async def _remove_cgroup(env_id: str, timeout: float) -> list[Path]:
    # An exited QEMU holds its cgroup until init has reaped it.
    deadline = time.monotonic() + timeout
    while True:
        busy = qemuhost.remove_cgroup(env_id)
        if not busy or time.monotonic() > deadline:
            return busy
        await asyncio.sleep(0.02)
