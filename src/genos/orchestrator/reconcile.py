"""Reconcile: make the registry and the host agree, level-triggered and idempotent.

The registry is the intent (a transition is written before its side effect),
the driver is what the host really has. Reconcile first takes a complete
picture of the host (``list_ids`` + ``inspect`` of each); if any of that fails
it changes nothing. An id the host lists but cannot yet say anything of (a
cluster node that has not reported on an assignment) is in the picture: it
exists there. Then, per environment and under its lock, re-reading both
sides:

=====================  ==================  ======================================
registry               host (driver)       action
=====================  ==================  ======================================
unknown, final,        present             orphan: ``destroy``
waiting, other host
provisioning           running             adopt: -> ``running``
provisioning           still being created nothing: whoever provisions it (another
                       (a cluster's node)  replica) finishes it, else the next
                                           reconcile adopts or fails it
provisioning           anything else       -> ``failed`` ("control plane
                                           restarted during provisioning") and
                                           ``destroy``; the client may request
                                           again (retrying blindly could repeat
                                           whatever broke the first attempt)
running / suspended    same                nothing
running                suspended           ``resume`` (an interrupted resume)
suspended              running             ``suspend`` (an interrupted suspend)
running / suspended    created, stopped    -> ``failed`` and ``destroy``
running / suspended    absent              -> ``failed`` ("vanished from host")
=====================  ==================  ======================================

Environments being provisioned by this engine right now are left alone.
Running it twice in a row does nothing the second time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Container
from dataclasses import dataclass, field

from genos import logs
from genos.errors import GenOSError, NotFoundError
from genos.orchestrator.lifecycle import Lifecycle
from genos.orchestrator.provision import describe
from genos.orchestrator.records import Environment
from genos.orchestrator.states import HOLDING, LIVE, WAITING, State
from genos.runtime.driver import EnvState

log = logging.getLogger("genos.orchestrator.reconcile")
ACTOR = "reconcile"
VANISHED = "vanished from host"
RESTARTED = "control plane restarted during provisioning"


@dataclass
class ReconcileReport:
    """What one reconcile did; ``complete`` is False when the host could not be read."""

    complete: bool = True
    adopted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True if anything was done."""
        return bool(self.adopted or self.failed or self.destroyed or self.repaired)


async def host_picture(life: Lifecycle) -> dict[str, EnvState | None] | None:
    """Every environment the driver lists and its state (None: it says nothing of it yet,
    or it went between list and inspect), or None if any read failed."""
    picture: dict[str, EnvState | None] = {}
    try:
        for env_id in await life.driver.list_ids():
            try:
                picture[env_id] = (await life.driver.inspect(env_id)).state
            except NotFoundError:
                picture[env_id] = None  # destroying it, if it is an orphan, does no harm
    except Exception as exc:  # noqa: BLE001 - an incomplete picture means: change nothing
        log.warning("reconcile skipped, the host could not be read: %s", describe(exc))
        return None
    return picture


async def reconcile(life: Lifecycle, busy: Container[str]) -> ReconcileReport:
    """Repair every difference between the registry and the host (see the module doc).

    Args:
        life: the engine's lifecycle.
        busy: ids being provisioned right now; left alone.

    Returns:
        What was done.
    """
    picture = await host_picture(life)
    if picture is None:
        return ReconcileReport(complete=False)
    report = ReconcileReport()
    live = {env.id: env for env in await life.registry.list(states=LIVE)}
    mine = [e for e in live.values() if life.mine(e.host) and e.state in HOLDING]
    for env in mine:
        if env.id not in busy:
            async with life.lock(env.id):
                await _repair(life, env.id, report)
    for env_id in picture:
        known = live.get(env_id)
        if known is None or known.state in WAITING or not life.mine(known.host):
            async with life.lock(env_id):
                await _remove_orphan(life, env_id, report)
    return report


async def _observe(life: Lifecycle, env_id: str) -> EnvState | None:
    try:
        return (await life.driver.inspect(env_id)).state
    except NotFoundError:
        return None


async def _repair(life: Lifecycle, env_id: str, report: ReconcileReport) -> None:
    try:
        env = await life.registry.get(env_id)
        if env.state not in HOLDING or not life.mine(env.host):
            return
        await _apply(life, env, await _observe(life, env_id), report)
    except GenOSError as exc:
        life.logger(env_id).warning("reconcile could not repair it: %s", exc)


async def _apply(
    life: Lifecycle, env: Environment, actual: EnvState | None, report: ReconcileReport
) -> None:
    if env.state is State.PROVISIONING:
        if actual is EnvState.RUNNING:
            reason = "adopted: running on host"
            await life.move(env.id, env.state, State.RUNNING, actor=ACTOR, reason=reason)
            report.adopted.append(env.id)
        elif await _being_created(life, env):
            life.logger(env.id).info("reconcile: still being created on its node; left alone")
        else:
            await life.fail(env.id, env.state, RESTARTED, ACTOR)
            report.failed.append(env.id)
    elif actual is None:
        await life.fail(env.id, env.state, VANISHED, ACTOR)
        report.failed.append(env.id)
    elif actual in (EnvState.CREATED, EnvState.STOPPED):
        await life.fail(env.id, env.state, f"session {actual.value} on host", ACTOR)
        report.failed.append(env.id)
    elif env.state is State.RUNNING and actual is EnvState.SUSPENDED:
        await life.call("resume", life.driver.resume(env.id))
        report.repaired.append(env.id)
    elif env.state is State.SUSPENDED and actual is EnvState.RUNNING:
        await life.call("suspend", life.driver.suspend(env.id))
        report.repaired.append(env.id)


async def _being_created(life: Lifecycle, env: Environment) -> bool:
    """Whether the host is still creating it for someone (a cluster's node working on an
    assignment another replica waits on). Drivers of one host know nothing of that."""
    creating = getattr(life.driver, "creating", None)
    return creating is not None and bool(await creating(env.id, env.updated))


async def _remove_orphan(life: Lifecycle, env_id: str, report: ReconcileReport) -> None:
    env: Environment | None = None
    with contextlib.suppress(NotFoundError):
        env = await life.registry.get(env_id)
    if env is not None and env.state in HOLDING and life.mine(env.host):
        return  # became ours since the picture was taken
    try:
        await life.call("destroy", life.driver.destroy(env_id))
    except GenOSError as exc:
        log.warning("orphan %s could not be destroyed: %s", env_id, exc)
        return
    log.info("orphan %s destroyed (registry: %s)", env_id, env.state.value if env else "unknown")
    logs.forget(env_id)  # what the driver's destroy logged on it
    report.destroyed.append(env_id)
