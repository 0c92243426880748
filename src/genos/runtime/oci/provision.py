"""Provisioning an OCI environment: the steps of ``create``, in order.

- ``dirs``: run and data dirs, ``env.json``, a user-namespace id range;
- ``image``: ensure the layers;
- ``rootfs``: mount the overlay (over id-mapped layers with a user namespace);
- ``volume``: with ``persistence.mode = volume``, ensure and attach the owner's volume;
- ``network``: the network sandbox's namespace, unless mode ``none``;
- ``bundle``: ``/etc/hosts``, ``resolv.conf``, ``config.json``;
- ``runtime``: ``<runtime> create`` (the init waits for ``start``);
- ``loopback``: ``lo`` up in a netns the runtime made.

Each step is announced to a hook first, so tests can make any one of them
fail; the caller rolls back with :class:`~genos.runtime.oci.teardown.Teardown`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from genos.runtime.images import SESSION_ARGV, USER_UID, mount_root, session_env
from genos.runtime.images.mounts import HasPath
from genos.runtime.oci import env as ocienv
from genos.runtime.oci.env import EnvPaths
from genos.runtime.oci.runtime import OCIRuntime, RuntimeKind
from genos.runtime.volumes import VolumeStore
from genos.sandbox import audit, cgroups, config, idmap
from genos.sandbox.config import IdMap
from genos.sandbox.network import NetHandle, NetworkSandbox
from genos.spec import EnvironmentSpec, NetworkMode, PersistenceMode

STEPS = ("dirs", "image", "rootfs", "volume", "network", "bundle", "runtime", "loopback")
StepHook = Callable[[str, str], None]
"""Called as ``hook(env_id, step)`` before each step of ``create``; raising aborts it."""

# gVisor's Sentry, gofer and ptrace stubs are host tasks in the env's cgroup.
GVISOR_EXTRA_PIDS = 256


class LayerSource(Protocol):
    """What the driver needs from the image store (``ImageStore`` is one)."""

    def ensure(self, spec: EnvironmentSpec) -> Sequence[HasPath]:
        """The spec's layers, base first (built if missing)."""
        ...


class Provision:
    """One environment's ``create`` (see the module docstring).

    Args:
        paths: the environment's host paths.
        spec: what to provision.
        runtime: the runtime that will run it.
        images: where the layers come from.
        network: the network sandbox (used unless the mode is ``none``).
        hook: announced each step.
        ids_dir: where user-namespace id ranges are claimed (None: no user namespace).
        volumes: the volume store (asked only when the spec wants a volume).
        owner: whose volume the spec's ``persistence.volume`` names.
    """

    def __init__(
        self,
        paths: EnvPaths,
        spec: EnvironmentSpec,
        runtime: OCIRuntime,
        *,
        images: LayerSource,
        network: Callable[[], NetworkSandbox],
        hook: StepHook | None = None,
        ids_dir: Path | None = None,
        volumes: Callable[[], VolumeStore] = VolumeStore,
        owner: str = "default",
    ) -> None:
        self.paths, self.spec, self.images = paths, spec, images
        self.network, self.hook = network, hook
        self.env_id = paths.env_id
        self.own_netns = spec.network.mode is NetworkMode.NONE
        self.record: dict[str, Any] = {
            "env_id": self.env_id,
            "runtime": runtime.kind.value,
            "tier": spec.tier.value,
            "own_netns": self.own_netns,
        }
        self.runtime = runtime.for_network(ocienv.runsc_network(self.record))
        self.gvisor = runtime.kind is RuntimeKind.RUNSC
        self.ids_dir = ids_dir
        self.id_map: IdMap | None = None
        self.volumes, self.owner = volumes, owner

    async def run(self) -> config.Layout:
        """Every step, in order.

        Returns:
            The layout the config was built from (for the audit record).

        Raises:
            GenOSError: a step failed (the caller tears down).
        """
        paths = self.paths
        await self._step("dirs")
        self._make_dirs()
        await self._step("image")
        layers = await asyncio.to_thread(self.images.ensure, self.spec)
        self.record["layers"] = [str(getattr(layer, "digest", None) or layer) for layer in layers]
        ocienv.write_record(paths, self.record)
        await self._step("rootfs")
        await asyncio.to_thread(self._mount_root, layers)
        await self._step("volume")
        home = await asyncio.to_thread(self._attach_volume)
        await self._step("network")
        handle = None if self.own_netns else await self._network()
        await self._step("bundle")
        layout = self._write_bundle(handle, home)
        await self._step("runtime")
        bundle, pid_file = str(paths.bundle), str(paths.root / "pid")
        await self.runtime.run("create", "--bundle", bundle, "--pid-file", pid_file, self.env_id,
                               env_id=self.env_id, output=paths.session_log)  # fmt: skip
        await self._step("loopback")
        if self.own_netns and not self.gvisor:  # runsc --network=none brings its own lo up
            await asyncio.to_thread(ocienv.loopback_up, ocienv.read_pid(paths) or 0)
        return layout

    def _make_dirs(self) -> None:
        paths = self.paths
        if self.ids_dir is not None:
            slot = idmap.claim(self.ids_dir, self.env_id)
            self.record["id_slot"] = slot
            self.id_map = idmap.id_map(slot)
        shift = self.id_map.host_id if self.id_map else 0
        ocienv.make_dirs(paths, shift + USER_UID)
        ocienv.write_record(paths, self.record)
        if self.id_map is not None:
            # The env's root is an unprivileged host id: it must be able to
            # walk to its bundle (never to list it), and own its upper dir.
            for path in (paths.root.parent, paths.root, paths.bundle):
                path.chmod(0o711)
            for path in (paths.upper, paths.work):
                path.mkdir(mode=0o755, exist_ok=True)
                os.chown(path, shift, shift)

    def _mount_root(self, layers: Sequence[HasPath]) -> None:
        paths = self.paths
        lowers: list[HasPath | Path] = list(layers)
        if self.id_map is not None:
            lowers = []
            for index, layer in enumerate(layers):
                target = paths.root / "layers" / str(index)
                target.mkdir(parents=True)
                idmap.bind_idmapped(layer.path, target, self.id_map)
                lowers.append(target)
        mount_root(lowers, paths.upper, paths.work, paths.rootfs)

    def _attach_volume(self) -> Path | None:
        wanted = self.spec.persistence
        if wanted.mode is not PersistenceMode.VOLUME or wanted.volume is None:
            return None
        store = self.volumes()
        volume = store.ensure(self.owner, wanted.volume, wanted.encrypted)
        # Recorded before the attach, so a teardown after a crash detaches it.
        self.record["volume"] = {"root": str(store.root), "owner": self.owner,
                                 "name": volume.name}  # fmt: skip
        ocienv.write_record(self.paths, self.record)
        self.paths.home.mkdir(mode=0o755, exist_ok=True)
        return store.attach(volume, self.paths.home, self.env_id, self.id_map)

    async def _step(self, step: str) -> None:
        if self.hook is not None:
            self.hook(self.env_id, step)
        await asyncio.sleep(0)  # a cancellation point between steps

    async def _network(self) -> NetHandle:
        sandbox = self.network()
        net = self.spec.network
        return await asyncio.to_thread(sandbox.setup, self.env_id, net, name=self.spec.name)

    def _write_bundle(self, net: NetHandle | None, home: Path | None) -> config.Layout:
        paths = self.paths
        paths.hosts.write_text(config.hosts_file(self.env_id, net.hosts if net else ()))
        resolv = None
        if net is not None and net.dns:
            paths.resolv_conf.write_text("".join(f"nameserver {ip}\n" for ip in net.dns))
            resolv = paths.resolv_conf
        layout = config.Layout(
            env_id=self.env_id,
            rootfs=paths.rootfs,
            display_dir=paths.display_dir,
            hosts_file=paths.hosts,
            session_args=tuple(SESSION_ARGV),
            session_env=session_env(self.spec),
            netns_path=str(net.netns_path) if net else None,
            resolv_conf=resolv,
            extra_pids=GVISOR_EXTRA_PIDS if self.gvisor else 0,
            id_map=self.id_map,
            home=home,
        )
        # gVisor: no OCI seccomp (see genos.runtime.oci.runtime); its Sentry is the wall.
        built = config.build(self.spec, layout, with_seccomp=not self.gvisor)
        ocienv.write_private(paths.config, json.dumps(built))
        return layout

    def audit(self, layout: config.Layout) -> None:
        """Record ``created`` and ``policy_applied`` for the environment."""
        audit.record(self.env_id, "created", runtime=self.runtime.kind.value,
                     version=self.runtime.version, tier=self.spec.tier.value,
                     hardening=config.summary(layout))  # fmt: skip
        limits = cgroups.resources(self.spec.resources, extra_pids=layout.extra_pids)
        devices = [f"{k} {a}:{'*' if b is None else b}" for k, a, b in cgroups.ALLOWED_DEVICES]
        audit.record(self.env_id, "policy_applied", memory=limits["memory"]["limit"],
                     cpu_quota_us=limits["cpu"]["quota"], pids=limits["pids"]["limit"],
                     devices=devices)  # fmt: skip
