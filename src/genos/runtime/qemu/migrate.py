"""Live migration of a running VM from one node's QEMU to another's.

The two ends are two nodes' :class:`~genos.runtime.qemu.driver.QemuDriver`,
driven by whoever moves the environment (the drain)::

    facts = source.migration_source(env_id)              # JSON, carried to the target node
    port = await target.prepare_incoming(env_id, spec, facts, tls=node_b, listen_host=b_addr)
    finishing = asyncio.create_task(target.finish_incoming(env_id))  # runs it the moment
    try:                                                             # it has arrived
        await source.migrate_out(env_id, b_addr, port, tls=node_a)
        await finishing
    except GenOSError:
        finishing.cancel()
        await target.abort_incoming(env_id)
        if (await source.inspect(env_id)).state is EnvState.SUSPENDED:
            await source.resume(env_id)  # it had all gone: run it here again
        raise
    await source.destroy(env_id)

Target: the environment's host side is made as ``create`` makes it (uid,
directories, the spec's image layers and boot files, a fresh qcow2 overlay,
the network), with the source's machine (memory, CPUs, devices, MAC): boot
files are content-addressed, so the same spec gives the same image key on
both nodes, which is checked (:func:`incoming_record`). QEMU starts paused
with ``-incoming defer`` and gets the listener the driver opened
(``migrate-incoming tcp:fd:NAME``, see :mod:`genos.runtime.qemu.channel`).
``finish_incoming`` waits for QEMU to say ``completed``, runs the guest
(``cont``) and drops the migration's settings; until then the record says
``migration: incoming`` and ``abort_incoming`` may remove it all. A guest
with a network then takes the address the target's namespace got from the
target node's pool (:func:`network_command`, through the guest's agent):
addresses are per node, so its open connections do not survive the move.

Source: QEMU gets the connection the driver opened (``migrate fd:NAME``).
The disk goes in the same stream as RAM, by QEMU 7.2's block migration
(capability ``block``) with ``block-incremental``: only the clusters the
overlay holds travel, the backing image being the same on both nodes.
Chosen over ``drive-mirror`` to an NBD export on the target because it is
one stream, one TLS session and one thing to cancel; QEMU 9.1 removed it,
and :func:`check_block` says so in one line where it is missing. RAM is
pre-copied with ``auto-converge`` (a guest that dirties memory faster than
the link is slowed down until it converges) under QEMU's default downtime
limit of 300 ms. On success the source QEMU stays paused (``postmigrate``):
``resume`` runs it there again, ``destroy`` ends it.

TLS: both ends load QEMU's ``tls-creds-x509`` from the nodes' certificates
of the cluster's CA (:mod:`genos.cluster.pki`); the target verifies the
source's certificate and admits only the role ``node`` (an ``authz-list`` on
the certificate's distinguished name), the source checks the target's
against the address it dials (``tls-hostname``).

Failure: whatever goes wrong on the source (QEMU's ``failed`` with its own
words, a timeout, a cancellation), the migration is cancelled and the guest
runs on as before (``cont`` if the failure came after the final pause); the
migration settings are reset, so a later suspend to disk is a plain one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qemu.qmp import QMPClient

from genos.errors import CapabilityError, ExternalError, GenOSError, InputError, WaitTimeoutError
from genos.runtime.qemu import qmp as qemuqmp
from genos.runtime.qemu.channel import (
    CREDS_ID,
    FD_NAME,
    TlsIdentity,
    add_creds,
    give_fd,
    remove_tls,
    write_tls,
)
from genos.runtime.qemu.host import VmPaths

logger = logging.getLogger("genos.runtime.qemu")
AUTHZ_ID = "genos-migrate-authz"
POLL = 0.1  # the source's progress reports
FINISH_POLL = 0.005  # the target's wait for "completed": adds at most this to the downtime
BANDWIDTH = 1 << 30  # bytes/s (QEMU's default, 32 MiB/s, would take a minute per GiB)
PEER_ROLE = "node"
_OVER = frozenset({"completed", "failed", "cancelled", "none"})


@dataclass(frozen=True)
class Progress:
    """One look at a running migration, in bytes.

    ``disk_*`` cover the whole virtual disk: with ``block-incremental`` what the
    overlay does not hold counts as done without being sent.
    """

    status: str  # QEMU's: setup, active, device, completed ...
    ram_transferred: int
    ram_remaining: int
    ram_total: int
    disk_transferred: int
    disk_remaining: int
    disk_total: int

    @classmethod
    def of(cls, info: dict[str, Any]) -> Progress:
        """From QMP ``query-migrate``."""
        ram, disk = info.get("ram", {}), info.get("disk", {})
        return cls(str(info.get("status", "none")),
                   int(ram.get("transferred", 0)), int(ram.get("remaining", 0)),
                   int(ram.get("total", 0)), int(disk.get("transferred", 0)),
                   int(disk.get("remaining", 0)), int(disk.get("total", 0)))  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """A completed migration as QEMU measured it on the source."""

    total_ms: int  # from ``migrate`` to ``completed``
    downtime_ms: int  # the final stop-and-copy (the guest's pause, before the target runs it)
    ram_bytes: int  # RAM sent, pages sent again included
    overlay_bytes: int  # the source overlay's size on disk: the most the disk part can be


ProgressCallback = Callable[[Progress], None]


# -- what the target needs to know, and whether it can -------------------------------------


def source_facts(record: dict[str, Any]) -> dict[str, Any]:
    """What the target needs from the source's record (JSON, to carry between nodes).

    Raises:
        CapabilityError: the VM boots a user image (not migrated: its image is local).
    """
    if record.get("user_image") or record.get("machine", {}).get("image"):
        raise CapabilityError(f"{record.get('env_id')} boots a user image: live migration "
                              "moves only VMs of GenOS's own images")  # fmt: skip
    return {key: record[key] for key in ("env_id", "tier", "accel", "image", "machine")}


def check_facts(facts: dict[str, Any], env_id: str, accel: str) -> None:
    """Refuse a migration this node cannot take, before anything is made.

    Raises:
        InputError: the facts are not a source's record of ``env_id``.
        CapabilityError: the source runs on another accelerator (KVM and TCG states differ).
    """
    machine = facts.get("machine")
    if facts.get("env_id") != env_id or not isinstance(machine, dict) or "image" not in facts:
        raise InputError(f"not the migration facts of {env_id} (see migration_source)")
    if facts.get("accel") != accel:
        raise CapabilityError(f"the source runs {env_id} on {facts.get('accel')}, this node on"
                              f" {accel}: QEMU cannot migrate between them")  # fmt: skip


def incoming_record(made: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """The target's record: what ``create`` made here, with the source's machine.

    Raises:
        CapabilityError: the spec gives another image here than the source runs.
    """
    if made.get("image") != facts["image"]:
        here, there = str(made.get("image"))[:12], str(facts["image"])[:12]
        raise CapabilityError(f"the image of {made.get('env_id')} differs between the nodes "
                              f"(source {there}, here {here}): spec or GenOS differ")  # fmt: skip
    own = made["machine"]
    machine = {**facts["machine"], "kernel": own["kernel"], "initrd": own["initrd"]}
    return {**made, "machine": machine, "migration": {"role": "incoming"}}


# -- the target ------------------------------------------------------------------------


async def start_incoming(paths: VmPaths, uid: int, identity: TlsIdentity, listener: socket.socket,
                         peer_role: str = PEER_ROLE) -> None:  # fmt: skip
    """Arm the paused QEMU of ``paths``: TLS server, the peer's role, the listener.

    Raises:
        ExternalError: QEMU refused a step (its words in ``detail``).
    """
    tls = write_tls(paths, uid, identity, "server")
    try:
        async with qemuqmp.monitor(paths.qmp) as client:
            await add_creds(client, tls, "server")
            remove_tls(paths)  # loaded: gnutls keeps the credentials in memory
            rule = {"match": f"*OU={peer_role},*", "policy": "allow", "format": "glob"}
            authz = {"qom-type": "authz-list", "id": AUTHZ_ID, "policy": "deny", "rules": [rule]}
            await qemuqmp.call(client, "object-add", authz)
            await qemuqmp.call(client, "migrate-set-parameters",
                               {"tls-creds": CREDS_ID, "tls-authz": AUTHZ_ID})  # fmt: skip
            await give_fd(client, listener.fileno())
            await qemuqmp.call(client, "migrate-incoming", {"uri": f"tcp:fd:{FD_NAME}"})
    finally:
        remove_tls(paths)


async def finish_incoming(paths: VmPaths, timeout: float) -> None:
    """Wait until the incoming state has arrived, then run the guest.

    Raises:
        ExternalError: the migration failed, or QEMU went away.
        WaitTimeoutError: it did not complete in ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    async with qemuqmp.monitor(paths.qmp) as client:
        while True:
            info = await qemuqmp.call(client, "query-migrate")
            status = info.get("status", "none")
            if status == "completed":
                break
            if status in {"failed", "cancelled"}:
                desc = info.get("error-desc", status)
                raise ExternalError(f"the incoming migration of {paths.env_id} failed: {desc}")
            if time.monotonic() > deadline:
                raise WaitTimeoutError(f"the migration of {paths.env_id} did not arrive in "
                                       f"{timeout:g}s")  # fmt: skip
            await asyncio.sleep(FINISH_POLL)
        await qemuqmp.call(client, "cont")
        # The incoming settings stay with QEMU: a later suspend to disk must not ask for TLS.
        await qemuqmp.call(client, "migrate-set-parameters", {"tls-creds": "", "tls-authz": ""})
        for name in (CREDS_ID, AUTHZ_ID):
            await qemuqmp.call(client, "object-del", {"id": name})


def network_command(guest_cfg: str) -> str | None:
    """The guest command giving ``eth0`` this node's address, route, resolvers and host pins.

    The guest keeps the configuration it booted with; the target's namespace
    has an address of the target node's pool, written to its ``guest.cfg``
    by provisioning (:func:`genos.runtime.qemu.guest.guest_config`).

    Args:
        guest_cfg: the target's ``guest.cfg`` (shell assignments).

    Returns:
        One line for the guest's command channel; None when the VM has no address.
    """
    values = dict(item.partition("=")[::2] for item in shlex.split(guest_cfg))
    address = values.get("GENOS_IP", "")
    if not address:
        return None
    add = f"$bb ip addr add {shlex.quote(address)} dev eth0"
    steps = ["bb=busybox", "$bb ip addr flush dev eth0", add, "$bb ip link set eth0 up"]
    if values.get("GENOS_GATEWAY"):
        steps.append(f"$bb ip route replace default via {shlex.quote(values['GENOS_GATEWAY'])}")
    dns = [shlex.quote(ns) for ns in values.get("GENOS_DNS", "").split()]
    steps.append(f"printf 'nameserver %s\\n' {' '.join(dns)} >/etc/resolv.conf" if dns
                 else ": >/etc/resolv.conf")  # fmt: skip
    pins = ["127.0.0.1 localhost genos", *values.get("GENOS_HOSTS", "").splitlines()]
    steps.append(f"printf '%s\\n' {' '.join(shlex.quote(pin) for pin in pins)} >/etc/hosts")
    return " && ".join(steps)


# -- the source ------------------------------------------------------------------------


async def check_block(client: QMPClient) -> None:
    """Refuse early when this QEMU has no block migration.

    Raises:
        CapabilityError: capability ``block`` is missing (QEMU 9.1 and later).
    """
    caps = await qemuqmp.call(client, "query-migrate-capabilities")
    if "block" not in {cap.get("capability") for cap in caps}:
        raise CapabilityError("this QEMU has no block migration (capability 'block'): "
                              "live migration of a VM's disk needs QEMU 9.0 or older")  # fmt: skip


async def migrate_out(paths: VmPaths, uid: int, sock: socket.socket, identity: TlsIdentity, *,
                      server_name: str, progress: ProgressCallback | None, timeout: float,
                      bandwidth: int) -> Outcome:  # fmt: skip
    """Send the VM of ``paths`` through ``sock`` (connected to the target's listener).

    On any failure the migration is cancelled and the guest runs on (see the
    module docstring); on success QEMU is left in ``postmigrate``.

    Raises:
        CapabilityError: no block migration in this QEMU (nothing was changed).
        ExternalError: the migration failed (QEMU's words in the message).
        WaitTimeoutError: it did not complete in ``timeout`` seconds.
    """
    async with qemuqmp.monitor(paths.qmp) as client:
        await check_block(client)
        tls = write_tls(paths, uid, identity, "client")
        try:
            await add_creds(client, tls, "client")
        finally:
            remove_tls(paths)
        try:
            await _configure(client, server_name, bandwidth)
            await give_fd(client, sock.fileno())
            await qemuqmp.call(client, "migrate", {"uri": f"fd:{FD_NAME}"})
            return await _follow(client, paths, progress, timeout)
        except BaseException:
            await asyncio.shield(_recover(client))
            raise
        finally:
            remove_tls(paths)
            await asyncio.shield(_unconfigure(client, paths.env_id))


async def _configure(client: QMPClient, server_name: str, bandwidth: int) -> None:
    caps = [{"capability": name, "state": True} for name in ("block", "auto-converge")]
    await qemuqmp.call(client, "migrate-set-capabilities", {"capabilities": caps})
    await qemuqmp.call(client, "migrate-set-parameters",
                       {"tls-creds": CREDS_ID, "tls-hostname": server_name,
                        "block-incremental": True, "max-bandwidth": bandwidth})  # fmt: skip


async def _follow(client: QMPClient, paths: VmPaths, progress: ProgressCallback | None,
                  timeout: float) -> Outcome:  # fmt: skip
    env_id, deadline = paths.env_id, time.monotonic() + timeout
    overlay = paths.disk.stat().st_blocks * 512
    while True:
        info = await qemuqmp.call(client, "query-migrate")
        status = info.get("status", "none")
        seen = Progress.of(info)
        if progress is not None:
            progress(seen)
        if status == "completed":
            return Outcome(int(info.get("total-time", 0)), int(info.get("downtime", 0)),
                           seen.ram_transferred, overlay)  # fmt: skip
        if status in {"failed", "cancelled"}:
            desc = str(info.get("error-desc", status)).replace("\n", " ")
            raise ExternalError(f"live migration of {env_id} failed: {desc}")
        if time.monotonic() > deadline:
            left = seen.ram_remaining >> 20
            raise WaitTimeoutError(f"live migration of {env_id} did not finish in {timeout:g}s "
                                   f"(RAM {left} MiB still to send)")  # fmt: skip
        await asyncio.sleep(POLL)


async def _recover(client: QMPClient) -> None:
    """Cancel the migration and run the guest again if it was paused for the final copy."""
    # The same monitor session: QEMU serves one QMP client at a time on its socket.
    with contextlib.suppress(GenOSError):
        with contextlib.suppress(GenOSError):
            await qemuqmp.call(client, "migrate_cancel")
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            info = await qemuqmp.call(client, "query-migrate")
            if info.get("status", "none") in _OVER:
                break
            await asyncio.sleep(0.02)
        status = (await qemuqmp.call(client, "query-status"))["status"]
        if status in {"postmigrate", "finish-migrate", "paused"}:
            await qemuqmp.call(client, "cont")


async def _unconfigure(client: QMPClient, env_id: str) -> None:
    """Back to no TLS and no block migration (a later suspend to disk is a plain one)."""
    caps = [{"capability": name, "state": False} for name in ("block", "auto-converge")]
    plain = {"tls-creds": "", "tls-hostname": "", "block-incremental": False}
    steps: list[tuple[str, dict[str, Any]]] = [
        ("migrate-set-capabilities", {"capabilities": caps}),
        ("migrate-set-parameters", plain),
        ("object-del", {"id": CREDS_ID}),
    ]
    for command, args in steps:
        try:
            await qemuqmp.call(client, command, args)
        except ExternalError as exc:
            logger.getChild(env_id).warning("%s: %s", exc, exc.detail)
