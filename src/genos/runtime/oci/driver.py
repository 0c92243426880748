"""The OCI container driver: tiers ``container`` (runc, crun) and ``gvisor`` (runsc).

GenOS writes each environment's OCI bundle itself (:mod:`genos.sandbox.config`)
and drives the runtime's command line. ``create`` provisions everything and
leaves the runtime's init waiting; ``start`` lets the session run and returns
once the display answers the RFB banner. A failure at any step of ``create``
(or an injected one, see ``step_hook``) tears down what the earlier steps
made, in the same way ``destroy`` does.

Host layout: see :mod:`genos.runtime.oci.env`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

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
from genos.paths import data_dir, node_scoped
from genos.runtime import lifecycle
from genos.runtime.driver import EnvState, Inspection, Usage
from genos.runtime.files import HomeDir
from genos.runtime.images import RDP_SOCKET, USER_UID, ImageStore
from genos.runtime.images.session import (
    AUDIO_SOCKET,
    MIC_SOCKET,
    RECORD_SOCKET,
    USER_NAME,
    VIDEO_SOCKET,
)
from genos.runtime.lifecycle import Verb
from genos.runtime.oci import env as ocienv
from genos.runtime.oci import runtime as ociruntime
from genos.runtime.oci.env import EnvPaths
from genos.runtime.oci.provision import STEPS, LayerSource, Provision, StepHook
from genos.runtime.oci.runtime import OCIRuntime, RuntimeKind
from genos.runtime.oci.teardown import Teardown
from genos.runtime.volumes import VolumeStore
from genos.sandbox import audit, cgroups, config, idmap
from genos.sandbox.network import NetworkSandbox
from genos.spec import EnvironmentSpec

logger = logging.getLogger("genos.runtime.oci")


def default_run_root() -> Path:
    """``/run/genos``, or ``/run/genos-<node>`` for a named node."""
    return Path("/run") / node_scoped("genos")


CREATE_STEPS = STEPS

_STATUS = {
    "created": EnvState.CREATED,
    "creating": EnvState.CREATED,
    "running": EnvState.RUNNING,
    "paused": EnvState.SUSPENDED,
    "pausing": EnvState.SUSPENDED,
    "stopped": EnvState.STOPPED,
}


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside an environment did."""

    code: int
    stdout: str
    stderr: str
    truncated: bool = False  # output past the caller's limit was dropped


class OCIDriver:
    """Runs environments as OCI containers (see the module docstring).

    Args:
        images: the image store (default: ``data_dir()/images``).
        network: the network sandbox for modes other than ``none``; mode
            ``none`` gets a fresh namespace from the runtime, with ``lo`` up.
        runtime: force one runtime (else the first that works for the tier).
        run_root: per-env state and bundles (``/run/genos``, ``/run/genos-<node>``).
        data_root: per-env writable dirs go under ``<data_root>/envs``.
        stop_timeout: seconds between SIGTERM and SIGKILL on ``destroy``.
        step_hook: called before each ``create`` step (tests inject failures).
        user_namespace: run containers in a user namespace with their own
            host id range (root inside is an unprivileged id outside). None:
            yes when this host can (id-mapped mounts and a trial container
            work), else no; True: required (CapabilityError if impossible).
            Never for gVisor, whose Sentry already runs unprivileged.
        volumes: named volumes for ``persistence.mode = volume`` (default:
            ``<data_root>/volumes``).
    """

    name = "oci"

    def __init__(
        self,
        images: LayerSource | None = None,
        *,
        network: NetworkSandbox | None = None,
        runtime: RuntimeKind | None = None,
        run_root: Path | None = None,
        data_root: Path | None = None,
        stop_timeout: float = 5.0,
        step_hook: StepHook | None = None,
        user_namespace: bool | None = None,
        volumes: VolumeStore | None = None,
    ) -> None:
        self.images: LayerSource = images if images is not None else ImageStore()
        self.network = network
        self.prefer = runtime
        self.run_root = run_root if run_root is not None else default_run_root()
        self.data_root = data_root if data_root is not None else data_dir()
        self.stop_timeout = stop_timeout
        self.step_hook = step_hook
        self.user_namespace = user_namespace
        self.volumes = volumes
        self._states: dict[str, EnvState] = {}
        # Held while an operation on the environment runs or waits (weak: the map
        # does not keep one for every environment this host ever had).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._closed = False

    # -- the Driver protocol ---------------------------------------------------

    async def create(self, env_id: str, spec: EnvironmentSpec, *, owner: str = "default") -> None:
        """Provision an environment: dirs, image, root, volume, network, bundle, runtime init.

        Args:
            env_id: the new environment's id.
            spec: what to provision.
            owner: the requesting user, whose volume ``persistence.volume`` names.

        Raises:
            InputError: ``env_id`` is not an environment id.
            StateError: ``env_id`` already exists.
            CapabilityError: no runtime for the spec's tier works on this host.
            ExternalError: a step failed; nothing of the environment is left.
        """
        self._check(env_id)
        async with self._lock(env_id):
            if self.paths(env_id).root.exists():
                raise StateError(await self._describe(env_id), ["absent"], "create")
            runtime = await ociruntime.for_tier(spec.tier, self._state_root, self.prefer)
            started = time.monotonic()
            ids_dir = idmap.IDS_DIR if await self._use_userns(runtime) else None
            provision = Provision(self.paths(env_id), spec, runtime, images=self.images,
                                  network=self._network, hook=self.step_hook,
                                  ids_dir=ids_dir, volumes=self._volumes,
                                  owner=owner)  # fmt: skip
            try:
                layout = await provision.run()
            except BaseException:
                await self._rollback(env_id)
                raise
            self._states[env_id] = EnvState.CREATED
            provision.audit(layout)
            self._log(env_id).info("created (%.0f ms)", (time.monotonic() - started) * 1000)

    async def start(self, env_id: str, *, timeout: float = 30.0) -> None:
        """Start the session; return once the display answers the RFB banner.

        Raises:
            NotFoundError: no such environment.
            StateError: not ``created``.
            ExternalError: the runtime failed, or the display did not answer in
                ``timeout`` seconds (the environment stays, for inspection).
        """
        self._check(env_id)
        async with self._lock(env_id):
            # Right after create the cached state is good enough (the hot path);
            # anything else is asked of the runtime (processes may have exited).
            current = self._states.get(env_id)
            if current is not EnvState.CREATED:
                current = await self._current(env_id)
            target = lifecycle.require(current, Verb.START)
            runtime = await self._runtime(env_id)
            paths = self.paths(env_id)
            await runtime.run("start", env_id, env_id=env_id)
            self._states[env_id] = target
            pid = ocienv.read_pid(paths)
            try:
                await ocienv.wait_banner(paths.socket, pid, timeout)
            except ExternalError as exc:
                tail = ocienv.log_tail(paths.session_log)
                raise ExternalError(f"{env_id}: {exc.message}", detail=tail) from None

    async def suspend(self, env_id: str, *, to_disk: bool = False) -> None:
        """Freeze every process of the environment (its memory stays).

        Raises:
            NotFoundError: no such environment.
            StateError: not ``running``.
            CapabilityError: ``to_disk``: checkpointing needs CRIU, which does
                not work on this host (the reason is in the message).
        """
        self._check(env_id)
        async with self._lock(env_id):
            target = lifecycle.require(await self._current(env_id), Verb.SUSPEND)
            runtime = await self._runtime(env_id)
            if to_disk:
                raise CapabilityError(await _no_checkpoint(runtime))
            if runtime.kind is RuntimeKind.RUNSC:
                await runtime.run("pause", env_id, env_id=env_id)
            else:
                await cgroups.freeze(env_id)
            self._states[env_id] = target

    async def resume(self, env_id: str) -> None:
        """Thaw a suspended environment.

        Raises:
            NotFoundError: no such environment.
            StateError: not ``suspended``.
        """
        self._check(env_id)
        async with self._lock(env_id):
            target = lifecycle.require(await self._current(env_id), Verb.RESUME)
            runtime = await self._runtime(env_id)
            if runtime.kind is RuntimeKind.RUNSC:
                await runtime.run("resume", env_id, env_id=env_id)
            else:
                await cgroups.thaw(env_id)
            self._states[env_id] = target

    async def destroy(self, env_id: str) -> None:
        """Stop the environment and remove all it had on the host. Idempotent.

        SIGTERM, then SIGKILL after ``stop_timeout``, then the runtime's
        ``delete --force``; then network, root mount, cgroups and dirs, each
        attempted even when an earlier one failed.

        Raises:
            ExternalError: something could not be removed (named in ``detail``).
        """
        self._check(env_id)
        async with self._lock(env_id):
            await self._teardown(env_id)

    async def inspect(self, env_id: str) -> Inspection:
        """State (from the runtime), init pid and cgroup usage.

        Raises:
            NotFoundError: no such environment on this host.
        """
        self._check(env_id)
        runtime = await self._runtime(env_id)
        state = await runtime.state(env_id)
        current = _STATUS.get(str(state.get("status")), EnvState.STOPPED)
        self._states[env_id] = current
        pid = int(state.get("pid") or 0) or None
        try:
            counters = cgroups.usage(env_id)
            usage: Usage | None = Usage(*counters)
        except NotFoundError:
            usage = None
        return Inspection(env_id, current, pid, usage, runtime.kind.value)

    def usage(self, env_id: str) -> Usage | None:
        """The environment's cgroup counters (None: it has no cgroup here)."""
        self._check(env_id)
        try:
            return Usage(*cgroups.usage(env_id))
        except NotFoundError:
            return None

    def display(self, env_id: str) -> Path:
        """``/run/genos/<id>/display/rfb.sock``, bind-mounted in the env at /run/genos-display.

        Raises:
            NotFoundError: no such environment.
        """
        self._check(env_id)
        paths = self.paths(env_id)
        if not paths.root.is_dir():
            raise NotFoundError("environment", env_id)
        return paths.socket

    def endpoint(self, env_id: str, protocol: str) -> Path:
        """The socket of a display protocol: ``vnc`` (rfb.sock), ``rdp`` (rdp.sock,
        served by xrdp when the spec asks for RDP; it may appear just after
        rfb.sock), ``audio`` (audio.sock: Ogg Opus of the environment's sound),
        ``mic`` (mic.sock: a viewer's microphone in, when the spec allows one),
        ``video`` (video.sock: H.264 of the screen) or ``record`` (record.sock:
        an MP4 of screen and sound, when the spec allows recording).

        Raises:
            NotFoundError: no such environment, or no such protocol here.
        """
        if protocol == "vnc":
            return self.display(env_id)
        if protocol == "audio":
            return self.display(env_id).with_name(AUDIO_SOCKET)
        if protocol == "mic":
            return self.display(env_id).with_name(MIC_SOCKET)
        if protocol == "video":
            return self.display(env_id).with_name(VIDEO_SOCKET)
        if protocol == "record":
            return self.display(env_id).with_name(RECORD_SOCKET)
        if protocol != "rdp":
            raise NotFoundError(f"{protocol} display of environment", env_id)
        return self.display(env_id).with_name(RDP_SOCKET)

    async def list_ids(self) -> list[str]:
        """Ids with any trace on this host: run dir, runtime state, data dir, cgroup."""
        return await asyncio.to_thread(self._ids_on_host)

    def _ids_on_host(self) -> list[str]:
        places = [self.run_root, self.data_root / "envs"]
        places += list(cgroups.CGROUP_ROOT.glob(f"*/{cgroups.parent()}"))
        places.append(cgroups.CGROUP_ROOT / cgroups.parent())
        found: set[str] = set()
        for kind in RuntimeKind:
            found |= ociruntime.container_ids(self._state_root / kind.value)
        found |= idmap.holders(idmap.IDS_DIR)
        for place in places:
            with contextlib.suppress(OSError):
                found.update(p.name for p in place.iterdir())
        return sorted(name for name in found if is_env_id(name))

    async def aclose(self) -> None:
        """Forget in-memory state; environments keep running."""
        self._closed = True
        self._states.clear()

    # -- beyond the protocol ---------------------------------------------------

    def paths(self, env_id: str) -> EnvPaths:
        """Every host path of ``env_id`` (nothing is checked or created)."""
        return EnvPaths.of(env_id, self.run_root, self.data_root)

    async def exec(
        self,
        env_id: str,
        argv: list[str],
        *,
        root: bool = False,
        timeout: float = 60.0,
        limit: int | None = None,
    ) -> ExecResult:
        """Run a command inside a running environment (operators, tests).

        Args:
            env_id: the environment.
            argv: the command.
            root: as uid 0 with the root capability set of
                :mod:`genos.sandbox.config` (else as the session user, no capabilities).
            timeout: seconds before the command is killed.
            limit: keep at most this many bytes of stdout and of stderr (None: all).

        Returns:
            Exit code and output.

        Raises:
            StateError: not ``running``.
            ExternalError: the runtime could not run it.
        """
        self._check(env_id)
        lifecycle.require(await self._current(env_id), Verb.EXEC)
        runtime = await self._runtime(env_id)
        paths = self.paths(env_id)
        process = json.loads(paths.config.read_text())["process"]
        spec = config.root_process(process, argv) if root else {**process, "args": argv}
        spec_file = paths.root / f"exec-{uuid.uuid4().hex[:8]}.json"
        ocienv.write_private(spec_file, json.dumps(spec))
        try:
            argv_full = runtime.argv("exec", "--process", str(spec_file), env_id)
            if limit is None:
                code, out, err = await ociruntime.call(argv_full, timeout)
                return ExecResult(code, out, err)
            code, raw_out, raw_err, cut = await ociruntime.call_capped(argv_full, timeout, limit)
        finally:
            spec_file.unlink(missing_ok=True)
        text = (raw_out.decode(errors="replace"), raw_err.decode(errors="replace"))
        return ExecResult(code, *text, truncated=cut)

    def home(self, env_id: str) -> HomeDir:
        """The environment user's home as the host sees it (file transfer).

        Args:
            env_id: the environment.

        Returns:
            Its volume's mount, or ``home/user`` under its root, with the
            user's host ids.

        Raises:
            NotFoundError: no such environment here.
        """
        self._check(env_id)
        paths = self.paths(env_id)
        record = ocienv.read_record(paths)
        if record is None:
            raise NotFoundError("environment", env_id)
        slot = record.get("id_slot")
        uid = USER_UID + (0 if slot is None else idmap.id_map(slot).host_id)
        if os.path.ismount(paths.home):
            return HomeDir(paths.home, (), uid, uid)
        return HomeDir(paths.rootfs, ("home", USER_NAME), uid, uid)

    # -- create and destroy ----------------------------------------------------

    async def _use_userns(self, runtime: OCIRuntime) -> bool:
        if self.user_namespace is False or runtime.kind is RuntimeKind.RUNSC:
            return False
        problem = await asyncio.to_thread(idmap.problem, self.data_root / "envs")
        if problem is None:
            probe_range = idmap.id_map(idmap.MAX_SLOTS)
            problem = await ociruntime.userns_problem(runtime, probe_range)
        if problem is None:
            return True
        if self.user_namespace:
            raise CapabilityError(f"user namespaces do not work here: {problem}")
        logger.info("running environments without a user namespace: %s", problem)
        return False

    def _volumes(self) -> VolumeStore:
        if self.volumes is None:
            self.volumes = VolumeStore(self.data_root / "volumes")
        return self.volumes

    def _network(self) -> NetworkSandbox:
        if self.network is None:
            self.network = NetworkSandbox()
        return self.network

    async def _rollback(self, env_id: str) -> None:
        try:
            await asyncio.shield(self._teardown(env_id, quiet=True))
        except GenOSError:
            self._log(env_id).exception("rollback of create left something behind")

    async def _teardown(self, env_id: str, *, quiet: bool = False) -> None:
        paths = self.paths(env_id)
        existed = paths.root.exists() or paths.data.exists() or bool(cgroups.dirs(env_id))
        denials = cgroups.denials(env_id)
        teardown = Teardown(paths, self._state_root, self.network, self.stop_timeout)
        problems = await teardown.run()
        self._states.pop(env_id, None)
        if existed and not quiet:
            if any(denials.values()):
                audit.record(env_id, "denied", **denials)
            audit.record(env_id, "destroyed", problems=problems)
        if problems:
            raise ExternalError(f"destroy of {env_id} incomplete", detail="; ".join(problems))

    # -- helpers ---------------------------------------------------------------

    @property
    def _state_root(self) -> Path:
        return self.run_root / "runtime"

    def _check(self, env_id: str) -> None:
        if self._closed:
            raise ClosedError("the OCI driver is closed")
        if not is_env_id(env_id):
            raise InputError(f"not an environment id: {env_id!r}")

    def _lock(self, env_id: str) -> asyncio.Lock:
        return self._locks.setdefault(env_id, asyncio.Lock())

    def _log(self, env_id: str) -> logging.Logger:
        return logger.getChild(env_id)

    async def _runtime(self, env_id: str) -> OCIRuntime:
        record = ocienv.read_record(self.paths(env_id))
        if record is None or "runtime" not in record:
            raise NotFoundError("environment", env_id)
        runtime = await ociruntime.detect(RuntimeKind(record["runtime"]), self._state_root)
        return runtime.for_network(ocienv.runsc_network(record))

    async def _describe(self, env_id: str) -> str:
        try:
            return (await self._current(env_id)).value
        except GenOSError:
            return "present"

    async def _current(self, env_id: str) -> EnvState:
        state = await (await self._runtime(env_id)).state(env_id)
        current = _STATUS.get(str(state.get("status")), EnvState.STOPPED)
        self._states[env_id] = current
        return current


async def _no_checkpoint(runtime: OCIRuntime) -> str:
    if runtime.kind is RuntimeKind.RUNSC:
        return "suspend to disk is not supported for tier gvisor (runsc checkpoint is not wired up)"
    problem = await ociruntime.criu_problem()
    return f"suspend to disk needs CRIU, which does not work on this host: {problem}"
