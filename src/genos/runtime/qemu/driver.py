"""The QEMU driver: tiers ``microvm`` (``-M microvm``) and ``vm`` (``-M q35``).

``create`` builds (or finds) the VM image of the spec's layers, makes the
VM's qcow2 overlay, its network (a tap bridged in the environment's
namespace, under the same nftables policy as a container) and writes its
record; no QEMU runs yet. ``start`` boots it and returns once the guest's
display server is up (``genos: display-ready`` on the serial console) and
QEMU's VNC socket answers the RFB banner. ``suspend`` is QMP ``stop``;
``suspend(to_disk=True)`` saves the whole VM to ``state.vmstate`` (a ``fd:``
migration to a file only root can read) and ends QEMU, ``resume`` then
starts a new QEMU that loads it. ``destroy`` powers off gracefully, then
forcefully, and removes everything.

With ``base.image`` the VM boots a user image instead (registered with
``genos images add``, see :mod:`genos.runtime.userimages`): no image is built, the disk
is an overlay on the image's qcow2 or a blank disk beside its ISO, there is
no GenOS guest (no console mark, no agent, so no ``exec``), and the VM is
ready when QEMU's VNC socket answers; the other verbs are the same.

How the pieces split: see the package's docstring (:mod:`genos.runtime.qemu`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

from genos.errors import (
    CapabilityError,
    ClosedError,
    ExternalError,
    GenOSError,
    InputError,
    NotFoundError,
    StateError,
)
from genos.ids import is_env_id
from genos.paths import data_dir
from genos.runtime import lifecycle
from genos.runtime.driver import EnvState, Inspection, Usage
from genos.runtime.images import ImageStore
from genos.runtime.lifecycle import Verb
from genos.runtime.oci.driver import ExecResult
from genos.runtime.qemu import channel as qemuchannel
from genos.runtime.qemu import host as qemuhost
from genos.runtime.qemu import migrate as qemumigrate
from genos.runtime.qemu import qmp as qemuqmp
from genos.runtime.qemu import stop as qemustop
from genos.runtime.qemu.accel import Accelerator, accelerator
from genos.runtime.qemu.cmd import Machine, qemu_argv
from genos.runtime.qemu.guest import READY_MARK
from genos.runtime.qemu.host import VmPaths, default_run_root
from genos.runtime.qemu.provision import Provision
from genos.runtime.qemu.user import wrapper
from genos.runtime.userimages import UserImages
from genos.sandbox.network import NetworkSandbox
from genos.spec import EnvironmentSpec

logger = logging.getLogger("genos.runtime.qemu")

CGROUP_OVERHEAD_MB = 512  # QEMU itself, TCG's translation cache, VNC buffers
SAVE_TIMEOUT = 300.0
_LIVE = {"running": EnvState.RUNNING, "prelaunch": EnvState.CREATED, "inmigrate": EnvState.CREATED}


class QemuDriver:
    """Runs environments of tiers ``vm`` and ``microvm`` in QEMU (see the module docstring).

    Args:
        images: the image store whose layers VMs are made from.
        network: the network sandbox for modes other than ``none``.
        run_root: per-VM state, sockets and logs (``/run/genos-qemu``).
        data_root: disks and saved states go under ``<data_root>/vms``.
        cache_dir: built VM images (default ``<images.root>/qemu``); user images
            (``base.image``) are those registered under ``<images.root>/user``.
        accel: force ``kvm`` or ``tcg`` (default: probe once, see :mod:`genos.runtime.qemu.accel`).
        max_memory_mb: cap on the guest memory a spec may ask for.
        stop_timeout: seconds the guest gets to power off before QEMU is ended.
    """

    name = "qemu"

    def __init__(
        self,
        images: ImageStore | None = None,
        *,
        network: NetworkSandbox | None = None,
        run_root: Path | None = None,
        data_root: Path | None = None,
        cache_dir: Path | None = None,
        accel: Accelerator | None = None,
        max_memory_mb: int | None = None,
        stop_timeout: float = 10.0,
    ) -> None:
        self.images = images if images is not None else ImageStore()
        self.network = network
        self.run_root = run_root if run_root is not None else default_run_root()
        self.data_root = data_root if data_root is not None else data_dir()
        self.cache_dir = cache_dir if cache_dir is not None else self.images.root / "qemu"
        self.user_images = UserImages(self.images.root / "user")
        self._accel = accel
        self.max_memory_mb = max_memory_mb
        self.stop_timeout = stop_timeout
        # Held while an operation on the environment runs or waits (weak: the map
        # does not keep one for every environment this host ever had).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._closed = False

    @property
    def accelerator(self) -> Accelerator:
        """``kvm`` or ``tcg``: what this driver's VMs run on (probed on first use)."""
        if self._accel is None:
            self._accel = accelerator()
        return self._accel

    # -- the Driver protocol ---------------------------------------------------

    async def create(self, env_id: str, spec: EnvironmentSpec) -> None:
        """Prepare the VM: image, disk overlay, network, record; QEMU does not run yet.

        Raises:
            InputError: ``env_id`` is not an environment id.
            StateError: ``env_id`` already exists.
            CapabilityError: the spec's tier is not a VM tier, or QEMU is missing.
            NotFoundError: ``base.image`` names no registered user image.
            ExternalError: a step failed; nothing of the environment is left.
        """
        self._check(env_id)
        async with self._lock(env_id):
            paths = self.paths(env_id)
            if paths.root.exists():
                raise StateError(await self._describe(env_id), ["absent"], "create")
            accel = await asyncio.to_thread(lambda: self.accelerator)
            started = time.monotonic()
            memory = spec.resources.memory_mb
            if self.max_memory_mb is not None:
                memory = min(memory, self.max_memory_mb)
            job = Provision(paths, spec, accel=accel, memory_mb=memory, images=self.images,
                            cache_dir=self.cache_dir, run_root=self.run_root,
                            network=self._network, user_images=self.user_images)  # fmt: skip
            try:
                await job.run()
            except BaseException:
                with contextlib.suppress(GenOSError):
                    await asyncio.shield(self._release(env_id))
                raise
            logger.getChild(env_id).info("created (%.0f ms)", (time.monotonic() - started) * 1000)

    async def start(self, env_id: str, *, timeout: float = 120.0) -> None:
        """Boot the VM; return once its display is up and answers the RFB banner.

        Raises:
            NotFoundError: no such environment.
            StateError: not ``created``.
            ExternalError: QEMU failed or the guest's display did not come up in
                ``timeout`` seconds (the VM stays, for inspection).
        """
        self._check(env_id)
        async with self._lock(env_id):
            record = self._record(env_id)
            lifecycle.require(await self._current(env_id, record), Verb.START)
            pid = await self._launch(env_id, record, incoming=False)
            mark = None if record.get("machine", {}).get("image") else READY_MARK
            await qemustop.wait_ready(self.paths(env_id), pid, timeout, mark)

    async def suspend(self, env_id: str, *, to_disk: bool = False) -> None:
        """Pause the guest (``stop``), or save it to disk and end QEMU (``to_disk``).

        Raises:
            NotFoundError: no such environment.
            StateError: not ``running``.
            ExternalError: QEMU refused, or saving failed (the VM runs on).
        """
        self._check(env_id)
        async with self._lock(env_id):
            record = self._record(env_id)
            lifecycle.require(await self._current(env_id, record), Verb.SUSPEND)
            paths = self.paths(env_id)
            if not to_disk:
                async with qemuqmp.monitor(paths.qmp) as client:
                    await qemuqmp.call(client, "stop")
                return
            await self._save(env_id, record)

    async def resume(self, env_id: str) -> None:
        """Run a paused guest again, or restore a saved one in a new QEMU.

        Raises:
            NotFoundError: no such environment.
            StateError: not ``suspended``.
            ExternalError: QEMU refused or the saved state could not be loaded.
        """
        self._check(env_id)
        async with self._lock(env_id):
            record = self._record(env_id)
            lifecycle.require(await self._current(env_id, record), Verb.RESUME)
            paths = self.paths(env_id)
            if record.get("phase") != "saved":
                async with qemuqmp.monitor(paths.qmp) as client:
                    await qemuqmp.call(client, "cont")
                return
            await self._restore(env_id, record)

    async def destroy(self, env_id: str) -> None:
        """Power off (gracefully, then forcefully) and remove everything. Idempotent.

        Raises:
            ExternalError: something could not be removed (named in ``detail``).
        """
        self._check(env_id)
        async with self._lock(env_id):
            existed = self.paths(env_id).root.exists() or self.paths(env_id).data.exists()
            await self._release(env_id)
            if existed:
                logger.getChild(env_id).info("destroyed")

    async def inspect(self, env_id: str) -> Inspection:
        """State (from QMP), QEMU's pid and the cgroup's usage.

        ``runtime`` is ``qemu-kvm`` or ``qemu-tcg``.

        Raises:
            NotFoundError: no such environment on this host.
        """
        self._check(env_id)
        record = self._record(env_id)
        state = await self._current(env_id, record)
        pid = qemustop.qemu_pid(self.paths(env_id), record.get("pid"))
        counters = qemuhost.usage(env_id)
        usage = Usage(*counters) if counters is not None else None
        return Inspection(env_id, state, pid, usage, f"qemu-{record.get('accel', 'tcg')}")

    def usage(self, env_id: str) -> Usage | None:
        """The VM's cgroup counters (QEMU and its threads; None: no cgroup here)."""
        self._check(env_id)
        counters = qemuhost.usage(env_id)
        return Usage(*counters) if counters is not None else None

    def display(self, env_id: str) -> Path:
        """QEMU's VNC socket, ``/run/genos-qemu/<id>/qemu/vnc.sock``.

        Raises:
            NotFoundError: no such environment.
        """
        self._check(env_id)
        paths = self.paths(env_id)
        if not paths.root.is_dir():
            raise NotFoundError("environment", env_id)
        return paths.vnc

    def endpoint(self, env_id: str, protocol: str) -> Path:
        """The unix socket of a display protocol besides VNC (``spice`` for a ``vm``).

        Raises:
            NotFoundError: no such environment, or it does not serve ``protocol``.
        """
        self._check(env_id)
        if protocol == "vnc":
            return self.display(env_id)
        try:
            record = self._record(env_id)
        except (OSError, ValueError, GenOSError) as exc:
            raise NotFoundError("environment", env_id) from exc
        if protocol != "spice" or not record.get("machine", {}).get("spice"):
            raise NotFoundError(f"{protocol} display of environment", env_id)
        return self.paths(env_id).spice

    async def list_ids(self) -> list[str]:
        """Ids with any trace under this driver's roots: run dir, disk dir, uid slot."""
        return await asyncio.to_thread(self._ids_on_host)

    async def aclose(self) -> None:
        """Forget in-memory state; VMs keep running."""
        self._closed = True

    # -- beyond the protocol ---------------------------------------------------

    def paths(self, env_id: str) -> VmPaths:
        """Every host path of ``env_id`` (nothing is checked or created)."""
        return VmPaths.of(env_id, self.run_root, self.data_root)

    async def exec(self, env_id: str, command: str, *, timeout: float = 60.0) -> ExecResult:
        """Run one shell command line as root in a running guest (operators, tests).

        Returns:
            Exit code and output (stdout and stderr together, in ``stdout``).

        Raises:
            StateError: not ``running``.
            CapabilityError: the VM boots a user image (it has no GenOS agent).
            ExternalError: the guest did not answer.
        """
        self._check(env_id)
        record = self._record(env_id)
        lifecycle.require(await self._current(env_id, record), Verb.EXEC)
        if record.get("machine", {}).get("image"):
            raise CapabilityError(f"{env_id} boots a user image: no GenOS agent runs in it")
        code, out = await qemuqmp.agent_run(self.paths(env_id).agent, command, timeout)
        return ExecResult(code, out, "")

    # -- live migration (the design: genos.runtime.qemu.migrate) ---------------

    def migration_source(self, env_id: str) -> dict[str, Any]:
        """What a target node needs to take ``env_id`` over (JSON; pass it to prepare_incoming).

        Raises:
            NotFoundError: no such environment.
            CapabilityError: it boots a user image (not migrated).
        """
        self._check(env_id)
        return qemumigrate.source_facts(self._record(env_id))

    async def prepare_incoming(
        self,
        env_id: str,
        spec: EnvironmentSpec,
        source: dict[str, Any],
        *,
        tls: qemuchannel.TlsIdentity,
        listen_host: str = "127.0.0.1",
        port: int = 0,
    ) -> int:
        """Target side: make the environment here as create does and wait paused for its state.

        Args:
            env_id: the environment (absent on this node).
            spec: its spec (the image is built from it, or found by content).
            source: the source's :meth:`migration_source`.
            tls: this node's certificate (role ``node``) of the cluster's CA.
            listen_host: the address the source will dial.
            port: the TCP port (0: any free one).

        Returns:
            The port QEMU listens on (TLS; only a certificate of role ``node`` gets in).

        Raises:
            StateError: ``env_id`` exists here.
            CapabilityError: another accelerator or image than the source's.
            InputError: ``source`` is not a source's facts of ``env_id``.
            ExternalError: a step failed; nothing of the environment is left.
        """
        self._check(env_id)
        async with self._lock(env_id):
            paths, record = await self._make_incoming(env_id, spec, source, "prepare a migration")
            try:
                qemuhost.write_record(paths, record)
                await self._launch(env_id, record, incoming=True)
                with qemuchannel.listen(listen_host, port) as listener:
                    await qemumigrate.start_incoming(paths, record["uid"], tls, listener)
                    return int(listener.getsockname()[1])
            except BaseException:
                with contextlib.suppress(GenOSError):
                    await asyncio.shield(self._release(env_id))
                raise

    async def _make_incoming(
        self, env_id: str, spec: EnvironmentSpec, source: dict[str, Any], what: str
    ) -> tuple[VmPaths, dict[str, Any]]:
        """Under ``env_id``'s lock: make a VM that comes from another node here as create
        does; its paths and the record it will have (the source's machine). Nothing is
        left if a step fails.

        Raises:
            StateError: ``env_id`` exists here.
            CapabilityError: another accelerator or image than the source's.
            InputError: ``source`` is not a source's facts of ``env_id``.
            ExternalError: a step failed.
        """
        paths = self.paths(env_id)
        if paths.root.exists():
            raise StateError(await self._describe(env_id), ["absent"], what)
        accel = await asyncio.to_thread(lambda: self.accelerator)
        qemumigrate.check_facts(source, env_id, accel)
        job = Provision(paths, spec, accel=accel, memory_mb=source["machine"]["memory_mb"],
                        images=self.images, cache_dir=self.cache_dir, run_root=self.run_root,
                        network=self._network, user_images=self.user_images)  # fmt: skip
        try:
            await job.run()
            return paths, qemumigrate.incoming_record(self._record(env_id), source)
        except BaseException:
            with contextlib.suppress(GenOSError):
                await asyncio.shield(self._release(env_id))
            raise

    async def finish_incoming(self, env_id: str, *, timeout: float = 600.0) -> None:
        """Target side: wait until the state has arrived, then run the guest here.

        A guest with a network then takes this node's address for it (its
        namespace here has one of this node's pool), through the guest's agent.

        Raises:
            StateError: ``env_id`` is not waiting for a migration here.
            ExternalError: the migration failed or QEMU died (call :meth:`abort_incoming`).
            WaitTimeoutError: nothing completed in ``timeout`` seconds.
        """
        self._check(env_id)
        async with self._lock(env_id):
            record = self._incoming(env_id)
            paths = self.paths(env_id)
            await qemumigrate.finish_incoming(paths, timeout)
            record.pop("migration")
            qemuhost.write_record(paths, record)
            qemustop.tighten_sockets(paths)
            logger.getChild(env_id).info("migrated in")
            await self._readdress(env_id, paths)

    async def abort_incoming(self, env_id: str) -> None:
        """Target side: remove everything :meth:`prepare_incoming` made. Idempotent.

        Raises:
            StateError: ``env_id`` runs here (finished, or never incoming): use destroy.
            ExternalError: something could not be removed.
        """
        self._check(env_id)
        async with self._lock(env_id):
            with contextlib.suppress(NotFoundError):
                self._incoming(env_id)
            await self._release(env_id)

    async def saved_for_move(self, env_id: str) -> tuple[dict[str, Any], Path, Path]:
        """Source side of moving a suspended VM as files: its facts, disk overlay and
        saved state. One suspended in memory is saved to disk first (and stays so).

        Raises:
            NotFoundError: no such environment.
            StateError: it is not suspended.
            CapabilityError: it boots a user image (not moved).
            ExternalError: saving it failed (it stays suspended in memory).
        """
        self._check(env_id)
        async with self._lock(env_id):
            record = self._record(env_id)
            state = await self._current(env_id, record)
            if state is not EnvState.SUSPENDED:
                raise StateError(state.value, ["suspended"], "move as files")
            facts = qemumigrate.source_facts(record)
            if record.get("phase") != "saved":
                await self._save(env_id, record, resume_on_failure=False)
            paths = self.paths(env_id)
            return facts, paths.disk, paths.state

    async def adopt_saved(
        self, env_id: str, spec: EnvironmentSpec, source: dict[str, Any]
    ) -> tuple[Path, Path]:
        """Target side of moving a suspended VM as files: make the environment here as
        create does; the caller writes the source's overlay and saved state to the two
        paths returned, then calls :meth:`finish_adopt` (or :meth:`abort_incoming`).

        Raises:
            StateError: ``env_id`` exists here.
            CapabilityError: another accelerator or image than the source's.
            InputError: ``source`` is not a source's facts of ``env_id``.
            ExternalError: a step failed; nothing of the environment is left.
        """
        self._check(env_id)
        async with self._lock(env_id):
            paths, record = await self._make_incoming(env_id, spec, source, "adopt a saved VM")
            try:
                record["migration"]["backing"] = await asyncio.to_thread(
                    qemuhost.backing_of, paths.disk
                )
                qemuhost.write_record(paths, record)
            except BaseException:
                with contextlib.suppress(GenOSError):
                    await asyncio.shield(self._release(env_id))
                raise
            return paths.disk, paths.state

    async def finish_adopt(self, env_id: str) -> None:
        """Target side: the files are here; point the overlay at this node's copy of the
        image and hold the VM suspended (saved). Its first resume gives the guest this
        node's address.

        Raises:
            StateError: ``env_id`` is not being adopted here.
            ExternalError: the overlay could not be rebased (call :meth:`abort_incoming`).
        """
        self._check(env_id)
        async with self._lock(env_id):
            record = self._incoming(env_id)
            paths = self.paths(env_id)
            backing = record["migration"].get("backing")
            if not backing or not paths.state.is_file():
                raise StateError("incoming", ["adopted"], "finish adopting a saved VM")
            await asyncio.to_thread(qemuhost.rebase, paths.disk, Path(backing))
            paths.state.chmod(0o600)
            migration = {"role": "adopted", "readdress": True}
            qemuhost.write_record(paths, {**record, "phase": "saved", "pid": None,
                                          "migration": migration})  # fmt: skip
            logger.getChild(env_id).info("adopted (saved)")

    async def migrate_out(
        self,
        env_id: str,
        target_host: str,
        port: int,
        *,
        tls: qemuchannel.TlsIdentity,
        server_name: str | None = None,
        progress: qemumigrate.ProgressCallback | None = None,
        timeout: float = 600.0,
        bandwidth: int = qemumigrate.BANDWIDTH,
    ) -> qemumigrate.Outcome:
        """Source side: send the running VM, disk overlay and RAM, to a prepared target.

        On success QEMU here is left paused (``postmigrate``, state ``suspended``)
        for the caller to :meth:`destroy`; on any failure the guest runs on here as before.

        Args:
            env_id: a running environment of this node.
            target_host: the target's address (dialled from the host's namespace).
            port: what the target's :meth:`prepare_incoming` returned.
            tls: this node's certificate (role ``node``) of the cluster's CA.
            server_name: the name the target's certificate must carry (default ``target_host``).
            progress: called with each look at the migration (every 0.1 s).
            timeout: seconds for the whole migration.
            bandwidth: bytes per second at most.

        Raises:
            NotFoundError: no such environment.
            StateError: not running.
            CapabilityError: a user image VM, or a QEMU without block migration.
            ExternalError: the target is unreachable or the migration failed (QEMU's words).
            WaitTimeoutError: it took over ``timeout`` seconds (it was cancelled).
        """
        self._check(env_id)
        async with self._lock(env_id):
            record = self._record(env_id)
            qemumigrate.source_facts(record)
            state = await self._current(env_id, record)
            if state is not EnvState.RUNNING:
                raise StateError(state.value, ["running"], "migrate")
            paths = self.paths(env_id)
            with await qemuchannel.connect(target_host, port) as sock:
                done = await qemumigrate.migrate_out(
                    paths, record["uid"], sock, tls, server_name=server_name or target_host,
                    progress=progress, timeout=timeout, bandwidth=bandwidth)  # fmt: skip
            where = f"{target_host}:{port}"
            logger.getChild(env_id).info("migrated to %s (%d ms)", where, done.total_ms)
            return done

    def _incoming(self, env_id: str) -> dict[str, Any]:
        record = self._record(env_id)
        if record.get("migration", {}).get("role") not in ("incoming", "adopted"):
            raise StateError("running", ["incoming"], "finish or abort a migration")
        return record

    # -- steps -----------------------------------------------------------------

    def _network(self) -> NetworkSandbox:
        if self.network is None:
            self.network = NetworkSandbox()
        return self.network

    async def _launch(self, env_id: str, record: dict[str, Any], *, incoming: bool) -> int:
        paths = self.paths(env_id)
        machine = Machine(**record["machine"])
        scratch = paths.root if machine.accel == "kvm" else None
        argv = wrapper(record["uid"], record.get("netns"), kvm_scratch=scratch)
        with qemustop.image_fd(machine.image) as image, qemustop.tap_fd(machine, record) as tap:
            argv += qemu_argv(machine, paths, incoming=incoming, image_fd=image, tap_fd=tap)
            inherit = tuple(fd for fd in (image, tap) if fd is not None)
            pid = await qemustop.launch(argv, paths, pass_fds=inherit)
        qemuhost.write_record(paths, {**record, "pid": pid, "phase": "booted"})
        memory = (machine.memory_mb + CGROUP_OVERHEAD_MB) << 20
        qemuhost.join_cgroup(env_id, pid, memory, machine.cpus, 256)
        return pid

    async def _save(
        self, env_id: str, record: dict[str, Any], *, resume_on_failure: bool = True
    ) -> None:
        paths = self.paths(env_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        fd = os.open(paths.state, flags, 0o600)
        try:
            await qemuqmp.save_state(paths.qmp, fd, SAVE_TIMEOUT)
        except GenOSError:
            paths.state.unlink(missing_ok=True)
            if resume_on_failure:
                with contextlib.suppress(GenOSError):
                    async with qemuqmp.monitor(paths.qmp) as client:
                        await qemuqmp.call(client, "cont")
            raise
        finally:
            os.close(fd)
        # The record says "saved" before QEMU goes: a crash now still resumes from disk.
        qemuhost.write_record(paths, {**record, "phase": "saved", "pid": None})
        pid = qemustop.qemu_pid(paths, record.get("pid"))
        if pid is not None:
            with contextlib.suppress(ExternalError):  # QEMU may hang up before it answers
                async with qemuqmp.monitor(paths.qmp) as client:
                    await qemuqmp.call(client, "quit")
            if not await qemustop.wait_exit(pid, qemustop.QUIT_TIMEOUT):
                await qemustop.stop(paths, pid, 0.0)

    async def _restore(self, env_id: str, record: dict[str, Any]) -> None:
        paths = self.paths(env_id)
        pid = await self._launch(env_id, record, incoming=True)
        fd = os.open(paths.state, os.O_RDONLY | os.O_CLOEXEC)
        try:
            await qemuqmp.load_state(paths.qmp, fd, SAVE_TIMEOUT)
        except GenOSError:
            await qemustop.stop(paths, pid, 0.0)
            qemuhost.write_record(paths, {**record, "phase": "saved", "pid": None})
            raise
        finally:
            os.close(fd)
        paths.state.unlink(missing_ok=True)
        qemustop.tighten_sockets(paths)
        if record.get("migration", {}).get("readdress"):
            await self._readdress(env_id, paths)

    async def _readdress(self, env_id: str, paths: VmPaths) -> None:
        """A guest that came from another node takes this node's address (its namespace
        here has one of this node's pool), through its agent."""
        record = self._record(env_id)
        record.pop("migration", None)
        qemuhost.write_record(paths, record)
        command = qemumigrate.network_command(paths.guest_cfg.read_text())
        if record.get("netns") and command is not None:
            code, out = await qemuqmp.agent_run(paths.agent, command, 30.0)
            if code != 0:
                raise ExternalError(f"{env_id} runs here but its network could not be set: "
                                    f"{out.strip()[:200]}")  # fmt: skip

    async def _release(self, env_id: str) -> None:
        paths = self.paths(env_id)
        try:
            record = qemuhost.read_record(paths)
        except NotFoundError:
            record = {}
        pid = qemustop.qemu_pid(paths, record.get("pid"))
        network = self._network() if record.get("netns") else None
        problems = await qemustop.release(
            paths,
            pid=pid,
            network=network,
            graceful=self.stop_timeout,
        )
        self.user_images.release(env_id)
        if problems:
            raise ExternalError(f"destroy of {env_id} incomplete", detail="; ".join(problems))

    # -- helpers ---------------------------------------------------------------

    def _check(self, env_id: str) -> None:
        if self._closed:
            raise ClosedError("the QEMU driver is closed")
        if not is_env_id(env_id):
            raise InputError(f"not an environment id: {env_id!r}")

    def _lock(self, env_id: str) -> asyncio.Lock:
        return self._locks.setdefault(env_id, asyncio.Lock())

    def _record(self, env_id: str) -> dict[str, Any]:
        return qemuhost.read_record(self.paths(env_id))

    async def _describe(self, env_id: str) -> str:
        try:
            return (await self._current(env_id, self._record(env_id))).value
        except GenOSError:
            return "present"

    async def _current(self, env_id: str, record: dict[str, Any]) -> EnvState:
        phase = record.get("phase")
        if phase == "saved":
            return EnvState.SUSPENDED
        if phase != "booted":
            return EnvState.CREATED
        paths = self.paths(env_id)
        if qemustop.qemu_pid(paths, record.get("pid")) is None:
            return EnvState.STOPPED
        try:
            status = await qemuqmp.status(paths.qmp)
        except ExternalError:
            return EnvState.STOPPED
        if status in qemuqmp.PAUSED:
            return EnvState.SUSPENDED
        return _LIVE.get(status, EnvState.STOPPED)

    def _ids_on_host(self) -> list[str]:
        # Not the cgroups: their names are host-wide, and another driver's VMs
        # (other roots, e.g. a benchmark next to the tests) are not ours to list.
        found: set[str] = set(qemuhost.uid_holders())
        for place in (self.run_root, self.data_root / "vms"):
            with contextlib.suppress(OSError):
                found.update(p.name for p in place.iterdir())
        return sorted(name for name in found if is_env_id(name))
