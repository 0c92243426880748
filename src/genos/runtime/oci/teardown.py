"""Releasing everything an OCI environment holds on the host, graceful first, then forceful.

Steps, each attempted even when an earlier one failed: stop the session
(thaw if frozen, SIGTERM, wait, SIGKILL, ``delete --force``), wait until
every process the environment had when teardown began has exited (a zombie
waiting for init to reap it has; see :mod:`genos.runtime.processes`), tear down its
network namespace and policy, detach its volume (kept, never deleted),
unmount its root and id-mapped layers (lazily if busy), kill what a lost
runtime state left in its cgroup and remove the cgroup, remove its
directories, free its user-namespace id range. Works from what is on disk,
so it also cleans up after a crashed control plane or a half-done ``create``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from genos.errors import CapabilityError, ExternalError, GenOSError, NotFoundError
from genos.runtime.images.mounts import mounted_under, unmount_all
from genos.runtime.oci import env as ocienv
from genos.runtime.oci import runtime as ociruntime
from genos.runtime.oci.env import EnvPaths
from genos.runtime.oci.runtime import OCIRuntime, RuntimeKind
from genos.runtime.processes import Snapshot, snapshot, still_running, wait_exited
from genos.runtime.volumes import VolumeStore
from genos.sandbox import cgroups, idmap
from genos.sandbox.network import NetworkSandbox

logger = logging.getLogger("genos.runtime.oci")


class Teardown:
    """One environment's release (see the module docstring).

    Args:
        paths: the environment's host paths.
        state_root: the runtimes' state directories' parent.
        network: the network sandbox that set up its namespace, if any.
        stop_timeout: seconds between SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        paths: EnvPaths,
        state_root: Path,
        network: NetworkSandbox | None,
        stop_timeout: float,
    ) -> None:
        self.paths = paths
        self.env_id = paths.env_id
        self.record = ocienv.read_record(paths)
        self.state_root = state_root
        self.ids_dir = idmap.IDS_DIR
        self.network = network
        self.stop_timeout = stop_timeout
        self.log = logger.getChild(self.env_id)

    async def run(self) -> list[str]:
        """Run every step.

        Returns:
            One line per step that failed (empty: nothing is left).
        """
        # The cgroup's processes, not the runtime's pid file: a stale one may
        # name a pid that now belongs to someone else.
        processes = snapshot(cgroups.tasks(self.env_id))
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("stop", self.stop),
            ("exit", lambda: self.wait_exited(processes)),
            ("network", self.release_network),
            ("volume", lambda: asyncio.to_thread(self.release_volume)),
            ("mounts", lambda: asyncio.to_thread(unmount_all, self.paths.root)),
            ("cgroups", self.release_cgroups),
            ("dirs", lambda: asyncio.to_thread(self.remove_dirs)),
            ("ids", lambda: asyncio.to_thread(idmap.release, self.ids_dir, self.env_id)),
        ]
        problems = []
        for name, step in steps:
            began = time.monotonic()
            try:
                await step()
            except (GenOSError, OSError) as exc:
                problems.append(f"{name}: {exc}")
                self.log.warning("teardown %s failed: %s", name, exc)
            self.log.debug("teardown %s: %.0f ms", name, (time.monotonic() - began) * 1000)
        return problems

    async def stop(self) -> None:
        """Stop and delete the container in every runtime that knows it."""
        for runtime in await self._runtimes():
            try:
                state = await runtime.state(self.env_id)
            except NotFoundError:
                continue
            await self._stop_one(runtime, state)

    async def _stop_one(self, runtime: OCIRuntime, state: dict[str, Any]) -> None:
        env_id = self.env_id
        status, pid = state.get("status"), int(state.get("pid") or 0)
        if status == "paused":
            with contextlib.suppress(GenOSError):
                if runtime.kind is RuntimeKind.RUNSC:
                    await runtime.run("resume", env_id, env_id=env_id)
                else:
                    await cgroups.thaw(env_id)
                status = "running"
        if status == "running" and pid:
            with contextlib.suppress(GenOSError):
                await runtime.run("kill", env_id, "TERM", env_id=env_id)
                if not await self._wait_stopped(runtime, pid):
                    self.log.info("session ignored SIGTERM; killing it")
                    await runtime.run("kill", "--all", env_id, "KILL", env_id=env_id)
                    await self._wait_stopped(runtime, pid)
        with contextlib.suppress(NotFoundError):
            await runtime.run("delete", "--force", env_id, env_id=env_id)

    async def wait_exited(self, processes: Snapshot) -> None:
        """Return once every process in ``processes`` has exited; SIGKILL what outlasts the wait.

        Raises:
            ExternalError: some survived SIGKILL.
        """
        if not await wait_exited(processes, self.stop_timeout):
            return
        for pid in still_running(processes):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        left = await wait_exited(processes, self.stop_timeout)
        if left:
            raise ExternalError(
                "processes outlived the container", detail=", ".join(map(str, left))
            )

    async def _wait_stopped(self, runtime: OCIRuntime, pid: int) -> bool:
        """Poll until the session's init is gone (runsc: until its state says stopped)."""
        if runtime.kind is not RuntimeKind.RUNSC:
            return await ocienv.wait_gone(pid, self.stop_timeout)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            if (await runtime.state(self.env_id)).get("status") == "stopped":
                return True
            await asyncio.sleep(0.02)
        return False

    async def _runtimes(self) -> list[OCIRuntime]:
        record = self.record
        if record and "runtime" in record:
            kinds = [RuntimeKind(record["runtime"])]
        else:  # no record (a crash before it was written): ask runtimes that know the id
            kinds = [
                kind
                for kind in RuntimeKind
                if self.env_id in ociruntime.container_ids(self.state_root / kind.value)
            ]
        found = []
        for kind in kinds:
            with contextlib.suppress(CapabilityError):
                runtime = await ociruntime.detect(kind, self.state_root)
                found.append(runtime.for_network(ocienv.runsc_network(record)))
        return found

    async def release_network(self) -> None:
        """Tear down the network sandbox's namespace, veth and nft table (if it made them)."""
        if self.record is not None and self.record.get("own_netns", True):
            return  # the runtime's own netns went with the container
        await asyncio.to_thread(self._release_network)

    def _release_network(self) -> None:
        network = self.network or NetworkSandbox()
        netns = Path("/run/netns", f"genos-{self.env_id}")
        if self.record is None and not (
            netns.exists() or (network.state_dir / self.env_id).exists()
        ):
            return  # no record and no trace: this env never had a network sandbox
        network.teardown(self.env_id)

    def release_volume(self) -> None:
        """Unmount the env's volume and free it for the next env (its data stays)."""
        held = (self.record or {}).get("volume")
        if not isinstance(held, dict):
            return
        store = VolumeStore(Path(held["root"]))
        try:
            volume = store.volume(held["owner"], held["name"])
        except NotFoundError:
            return  # created by nobody yet (a crash inside ensure); unmount_all does the rest
        store.detach(volume, self.paths.home, self.env_id)

    async def release_cgroups(self) -> None:
        """Kill whatever is still in the env's cgroup (a lost runtime state), then remove it."""
        for pid in cgroups.tasks(self.env_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in cgroups.tasks(self.env_id):
            await ocienv.wait_gone(pid, self.stop_timeout)
        left = cgroups.remove(self.env_id)
        if left:
            raise ExternalError("cgroups still busy", detail=", ".join(map(str, left)))

    def remove_dirs(self) -> None:
        """Remove the run and data dirs; never through a mount that is still there."""
        for path in (self.paths.root, self.paths.data):
            if mounted_under(path):
                raise ExternalError(f"{path} still has mounts; not removing it")
            ocienv.remove_tree(path)
