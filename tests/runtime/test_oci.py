"""The OCI driver against real runc and runsc, a real image and a real Xvnc."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from genos.errors import CapabilityError, ExternalError, InputError, NotFoundError, StateError
from genos.ids import new_env_id
from genos.paths import node_scoped
from genos.runtime import processes
from genos.runtime.driver import Driver, EnvState
from genos.runtime.images import ImageStore
from genos.runtime.images.mounts import HasPath
from genos.runtime.oci import runtime as ociruntime
from genos.runtime.oci.driver import CREATE_STEPS, OCIDriver
from genos.runtime.oci.runtime import RuntimeKind, detect, for_tier
from genos.sandbox import audit, cgroups, idmap
from genos.spec import EnvironmentSpec, Network, NetworkMode, Tier
from genos.testing import EXPECTED_STATES, check_driver
from tests.sandbox.probes import (
    NOTHING,
    Env,
    host_traces,
    offline_network,
    running_env,
    wait_for,
)

pytestmark = [pytest.mark.root, pytest.mark.runc]


def _driver(store: ImageStore, data_root: Path, **kw: Any) -> OCIDriver:
    kw.setdefault("network", offline_network(data_root))
    return OCIDriver(store, data_root=data_root, **kw)


@pytest.mark.usefixtures("desktop_layers")
def test_runc_passes_the_conformance_suite(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """check_driver sees created, running, suspended, running, created with runc."""
    states = runner.run(
        check_driver(
            lambda: _driver(image_store, data_root, runtime=RuntimeKind.RUNC), desktop_spec
        )
    )
    assert states == EXPECTED_STATES


@pytest.mark.usefixtures("desktop_layers")
def test_gvisor_passes_the_conformance_suite(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """Tier gvisor runs under runsc (ptrace platform) and passes the same suite."""
    spec = desktop_spec.model_copy(update={"tier": Tier.GVISOR})
    states = runner.run(check_driver(lambda: _driver(image_store, data_root), spec))
    assert states == EXPECTED_STATES


def test_driver_is_a_driver(image_store: ImageStore, data_root: Path) -> None:
    """OCIDriver satisfies the runtime-checkable Driver protocol."""
    assert isinstance(_driver(image_store, data_root), Driver)


def test_container_tier_chooses_a_working_runtime(runner: asyncio.Runner) -> None:
    """Tier container resolves to a runtime whose trial container ran here (runc on this host)."""
    runtime = runner.run(for_tier(Tier.CONTAINER, Path("/run/genos/runtime")))
    assert runtime.kind in (RuntimeKind.RUNC, RuntimeKind.CRUN)
    assert Path(runtime.path).is_file()


def test_first_probes_at_once_all_find_the_runtime(
    runner: asyncio.Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight simultaneous first probes on an empty cache share one trial and all find runc."""
    monkeypatch.setattr(ociruntime, "_MEMO", {})
    trials: list[str] = []
    real_trial = ociruntime._trial

    async def counted(runtime: ociruntime.OCIRuntime, id_map: Any = None) -> str | None:
        trials.append(runtime.kind.value)
        return await real_trial(runtime, id_map)

    monkeypatch.setattr(ociruntime, "_trial", counted)

    async def probes() -> list[ociruntime.OCIRuntime | BaseException]:
        return await asyncio.gather(
            *(detect(RuntimeKind.RUNC, tmp_path) for _ in range(8)), return_exceptions=True
        )

    found = runner.run(probes())
    assert [getattr(f, "kind", f) for f in found] == [RuntimeKind.RUNC] * 8
    assert trials == ["runc"]
    assert '"kind": "runc"' in (tmp_path / "runtimes.json").read_text()


def test_a_failed_trial_is_not_written_down(
    runner: asyncio.Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime whose trial failed is retried by the next process: nothing of it is cached."""
    monkeypatch.setattr(ociruntime, "_MEMO", {})
    real_trial = ociruntime._trial

    async def failing(runtime: ociruntime.OCIRuntime, id_map: Any = None) -> str | None:
        return "the trial failed"

    monkeypatch.setattr(ociruntime, "_trial", failing)
    with pytest.raises(CapabilityError, match="the trial failed"):
        runner.run(detect(RuntimeKind.RUNC, tmp_path))
    assert not (tmp_path / "runtimes.json").exists()
    monkeypatch.setattr(ociruntime, "_MEMO", {})  # a new process, and the host is fine again
    monkeypatch.setattr(ociruntime, "_trial", real_trial)
    assert runner.run(detect(RuntimeKind.RUNC, tmp_path)).kind is RuntimeKind.RUNC


def _hybrid_with_v2_controllers() -> bool:
    unified = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    return unified.is_file() and bool(unified.read_text().split())


def test_crun_on_hybrid_cgroups_is_a_capability_error(runner: asyncio.Runner) -> None:
    """crun 1.8 refuses the hybrid layout, and detect() says so instead of failing later."""
    if not _hybrid_with_v2_controllers():
        pytest.skip("the host is not hybrid with v2 controllers; crun may work here")
    with pytest.raises(CapabilityError, match="hybrid"):
        runner.run(detect(RuntimeKind.CRUN, Path("/run/genos/runtime")))


@pytest.mark.parametrize("tier", [Tier.MICROVM, Tier.VM])
def test_vm_tiers_are_not_oci(
    tier: Tier,
    runner: asyncio.Runner,
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    data_root: Path,
) -> None:
    """A VM tier is refused with CapabilityError and leaves nothing behind."""
    env_id = new_env_id()
    spec = desktop_spec.model_copy(update={"tier": tier})
    with pytest.raises(CapabilityError, match="not run by the OCI driver"):
        runner.run(_driver(image_store, data_root).create(env_id, spec))
    assert host_traces(env_id, data_root) == NOTHING


def test_requested_runtime_that_cannot_run_is_refused(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """Asking for runsc on tier container is a CapabilityError naming both."""
    with pytest.raises(CapabilityError, match="runsc does not provide tier container"):
        runner.run(
            _driver(image_store, data_root, runtime=RuntimeKind.RUNSC).create(
                new_env_id(), desktop_spec
            )
        )


@pytest.mark.usefixtures("desktop_layers")
@pytest.mark.parametrize("step", CREATE_STEPS)
def test_crash_at_any_create_step_leaves_nothing(
    step: str,
    runner: asyncio.Runner,
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    data_root: Path,
) -> None:
    """A failure injected before each create step rolls back every host resource."""

    def hook(env_id: str, at: str) -> None:
        if at == step:
            raise ExternalError(f"injected before {step} of {env_id}")

    env_id = new_env_id()
    driver = _driver(image_store, data_root, step_hook=hook)
    with pytest.raises(ExternalError, match=f"injected before {step}"):
        runner.run(driver.create(env_id, desktop_spec))
    assert host_traces(env_id, data_root) == NOTHING
    with pytest.raises(NotFoundError):
        runner.run(driver.inspect(env_id))


@pytest.mark.usefixtures("desktop_layers")
def test_cancelled_create_rolls_back_and_lets_cancellation_through(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """Cancelling create after the runtime made its container leaves nothing and re-raises."""
    env_id = new_env_id()

    async def scenario() -> None:
        task: asyncio.Task[None] | None = None

        def hook(_env: str, at: str) -> None:
            if at == "loopback" and task is not None:
                task.cancel()

        driver = _driver(image_store, data_root, step_hook=hook)
        task = asyncio.ensure_future(driver.create(env_id, desktop_spec))
        await task

    with pytest.raises(asyncio.CancelledError):
        runner.run(scenario())
    assert host_traces(env_id, data_root) == NOTHING


@pytest.mark.usefixtures("desktop_layers")
def test_crash_after_network_setup_removes_netns_veth_and_table(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """In internet mode, a failure after the network step removes its netns, veth and nft table."""
    seen: dict[str, dict[str, list[str]]] = {}

    def hook(env_id: str, at: str) -> None:
        if at == "bundle":
            seen["during"] = host_traces(env_id, data_root)
            raise ExternalError("injected after network setup")

    env_id = new_env_id()
    spec = desktop_spec.model_copy(update={"network": Network(mode=NetworkMode.INTERNET)})
    with pytest.raises(ExternalError, match="injected after network"):
        runner.run(_driver(image_store, data_root, step_hook=hook).create(env_id, spec))
    assert seen["during"]["netns"] == [f"/run/netns/genos-{env_id}"]
    assert seen["during"]["veths"] == [f"gh-{env_id}"]
    assert len(seen["during"]["nft"]) == 1
    assert host_traces(env_id, data_root) == NOTHING


@pytest.mark.usefixtures("desktop_layers")
def test_internet_mode_joins_the_network_sandbox_namespace(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """The session joins the network sandbox's /run/netns/genos-<id>; destroy removes it."""
    spec = desktop_spec.model_copy(update={"network": Network(mode=NetworkMode.INTERNET)})
    with running_env(runner, image_store, spec, data_root) as env:
        pid = runner.run(env.driver.inspect(env.env_id)).pid
        theirs = Path(f"/run/netns/genos-{env.env_id}").stat().st_ino
        assert Path(f"/proc/{pid}/ns/net").stat().st_ino == theirs
        assert env.banner() == b"RFB 003.008\n"
    assert host_traces(env.env_id, data_root) == NOTHING


@pytest.mark.usefixtures("desktop_layers")
def test_destroy_of_a_running_env_leaves_nothing(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """Every process, container, mount, dir and cgroup of a running env is gone after destroy."""
    with running_env(runner, image_store, desktop_spec, data_root) as env:
        during = host_traces(env.env_id, data_root)
        assert len(during["processes"]) >= 3  # tini, the session, Xvnc
        assert len(during["cgroups"]) >= 8
        assert len(during["mounts"]) in (1, 3)  # the root (+ 2 id-mapped layers with userns)
    assert host_traces(env.env_id, data_root) == NOTHING
    assert env.env_id not in env.driver._locks  # nor does the driver keep a lock of it


@pytest.mark.usefixtures("desktop_layers")
def test_destroy_returns_once_every_process_has_exited_without_waiting_for_init(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """When destroy returns, none of the env's processes runs (an unreaped zombie has exited),
    and destroy does not wait the second or two init takes to reap them."""
    driver = _driver(image_store, data_root, runtime=RuntimeKind.RUNC)
    env_id = new_env_id()
    runner.run(driver.create(env_id, desktop_spec))
    try:
        runner.run(driver.start(env_id))
        init = runner.run(driver.inspect(env_id)).pid
        assert init is not None
        before = processes.snapshot(cgroups.tasks(env_id))
        assert init in before
        assert len(before) >= 3  # tini, the session, Xvnc
    finally:
        began = time.monotonic()
        runner.run(driver.destroy(env_id))
        took = time.monotonic() - began
        runner.run(driver.aclose())
    assert processes.still_running(before) == []
    states = {pid: processes.state(pid) for pid in before}
    assert set(states.values()) <= {None, "Z"}, states
    assert took < 1.0


@pytest.mark.usefixtures("desktop_layers")
def test_session_that_exits_is_stopped_and_refuses_start(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """Killing the env's init makes inspect say stopped; start then raises StateError."""
    with running_env(runner, image_store, desktop_spec, data_root) as env:
        pid = runner.run(env.driver.inspect(env.env_id)).pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert wait_for(
            lambda: runner.run(env.driver.inspect(env.env_id)).state is EnvState.STOPPED
        )
        with pytest.raises(StateError) as caught:
            runner.run(env.driver.start(env.env_id))
        assert (caught.value.current, caught.value.required) == ("stopped", ("created",))
    assert host_traces(env.env_id, data_root) == NOTHING


@dataclass(frozen=True)
class _Dir:
    path: Path


class _BrokenSession:
    """The desktop image plus a layer whose genos-session fails at once."""

    def __init__(self, store: ImageStore, top: Path) -> None:
        self.store, self.top = store, top

    def ensure(self, spec: EnvironmentSpec) -> list[HasPath]:
        return [*self.store.ensure(spec), _Dir(self.top)]


@pytest.mark.usefixtures("desktop_layers")
def test_start_reports_a_session_that_dies_before_the_display(
    runner: asyncio.Runner,
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    data_root: Path,
    tmp_path: Path,
) -> None:
    """start raises ExternalError with the session's last output when it exits early."""
    script = tmp_path / "layer" / "usr" / "local" / "bin" / "genos-session"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho genos-session is broken >&2\nexit 3\n")
    script.chmod(0o755)
    driver = _driver(_BrokenSession(image_store, tmp_path / "layer"), data_root)  # type: ignore[arg-type]
    env_id = new_env_id()
    runner.run(driver.create(env_id, desktop_spec))
    try:
        began = time.monotonic()
        with pytest.raises(ExternalError, match="exited before its display answered") as caught:
            runner.run(driver.start(env_id, timeout=20))
        assert time.monotonic() - began < 5
        assert "genos-session is broken" in caught.value.detail
    finally:
        runner.run(driver.destroy(env_id))
    assert host_traces(env_id, data_root) == NOTHING


def test_display_path_and_banner(env: Env) -> None:
    """display() is /run/genos/<id>/display/rfb.sock and answers the RFB 3.8 banner."""
    path = env.driver.display(env.env_id)
    assert path == Path("/run/genos") / env.env_id / "display" / "rfb.sock"
    assert env.banner() == b"RFB 003.008\n"


def test_inspect_reads_usage_from_the_cgroup(env: Env) -> None:
    """inspect reports runc, the init pid and the cgroup's CPU, memory and pid counts."""
    found = env.runner.run(env.driver.inspect(env.env_id))
    assert (found.state, found.runtime) == (EnvState.RUNNING, "runc")
    assert found.usage is not None
    assert found.usage.pids >= 3
    assert found.usage.memory_bytes > 1 << 20
    assert found.usage.cpu_seconds > 0
    assert found.pid is not None
    assert f"/genos/{env.env_id}" in Path(f"/proc/{found.pid}/cgroup").read_text()


def test_suspend_to_disk_is_a_capability_error_naming_criu(env: Env) -> None:
    """suspend(to_disk=True) raises CapabilityError mentioning CRIU and keeps the env running."""
    with pytest.raises(CapabilityError, match="CRIU"):
        env.runner.run(env.driver.suspend(env.env_id, to_disk=True))
    assert env.runner.run(env.driver.inspect(env.env_id)).state is EnvState.RUNNING


def test_exec_runs_as_the_session_user_or_root(env: Env) -> None:
    """exec runs as uid 1000 by default and as uid 0 with root=True."""
    assert env.exec("id", "-u").stdout.strip() == "1000"
    assert env.exec("id", "-u", root=True).stdout.strip() == "0"


def test_session_runs_tini_as_pid_1_and_the_session_as_user(env: Env) -> None:
    """PID 1 in the env is tini and every session process runs as uid 1000."""
    assert env.exec("readlink", "/proc/1/exe").stdout.strip() == "/usr/bin/tini"
    owners = env.sh("for p in /proc/[0-9]*; do stat -c %u $p; done").stdout.split()
    assert set(owners) == {"1000"}


def test_audit_records_created_and_policy(env: Env) -> None:
    """create writes 'created' (runtime, tier, hardening) and 'policy_applied' (limits)."""
    records = {r["event"]: r for r in audit.read(env.env_id)}
    created, policy = records["created"], records["policy_applied"]
    assert (created["runtime"], created["tier"]) == ("runc", "container")
    assert created["hardening"]["no_new_privileges"] is True
    assert created["hardening"]["capabilities"] == [
        "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    ]  # fmt: skip
    assert policy["pids"] == env.spec.resources.pids
    assert policy["memory"] == env.spec.resources.memory_mb << 20


@pytest.mark.usefixtures("desktop_layers")
def test_audit_records_destroyed(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """destroy appends a 'destroyed' record with no problems."""
    with running_env(runner, image_store, desktop_spec, data_root) as env:
        pass
    events = [r["event"] for r in audit.read(env.env_id)]
    assert events == ["created", "policy_applied", "destroyed"]
    assert next(r for r in audit.read(env.env_id) if r["event"] == "destroyed")["problems"] == []


def test_list_ids_includes_orphans_and_destroy_removes_them(
    runner: asyncio.Runner, image_store: ImageStore, data_root: Path
) -> None:
    """A data dir left without its env is listed for reconcile, and destroy removes it."""
    env_id = new_env_id()
    orphan = data_root / "envs" / env_id / "upper"
    orphan.mkdir(parents=True)
    driver = _driver(image_store, data_root)
    assert env_id in runner.run(driver.list_ids())
    runner.run(driver.destroy(env_id))
    assert env_id not in runner.run(driver.list_ids())
    assert host_traces(env_id, data_root) == NOTHING


@pytest.mark.usefixtures("desktop_layers")
def test_user_namespace_gives_each_env_its_own_host_ids(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """With user namespaces two envs get disjoint host id ranges, freed again on destroy."""
    with (
        running_env(runner, image_store, desktop_spec, data_root, user_namespace=True) as one,
        running_env(runner, image_store, desktop_spec, data_root, user_namespace=True) as two,
    ):
        first, second = one.host_id(), two.host_id()
        assert first is not None
        assert second is not None
        assert abs(first - second) >= idmap.SIZE
        assert min(first, second) >= idmap.BASE
        for env in (one, two):
            pid = runner.run(env.driver.inspect(env.env_id)).pid
            uid = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]
            assert int(uid) == env.host_id() + 1000  # type: ignore[operator]
    markers = list((Path("/run/genos") / "ids").iterdir())
    assert [m for m in markers if m.read_text() in (one.env_id, two.env_id)] == []


@pytest.mark.usefixtures("desktop_layers")
def test_user_namespace_can_be_turned_off(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """user_namespace=False runs the session as host uid 1000 with no id range."""
    with running_env(runner, image_store, desktop_spec, data_root, user_namespace=False) as env:
        assert env.host_id() is None
        pid = runner.run(env.driver.inspect(env.env_id)).pid
        uid = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0]
        assert uid == "1000"
        assert env.banner() == b"RFB 003.008\n"


@pytest.mark.usefixtures("desktop_layers")
def test_gvisor_session_runs_inside_the_sentry(
    runner: asyncio.Runner, image_store: ImageStore, desktop_spec: EnvironmentSpec, data_root: Path
) -> None:
    """Under gVisor the env sees gVisor's kernel and the host sees no Xvnc, only runsc."""
    spec = desktop_spec.model_copy(update={"tier": Tier.GVISOR})
    with running_env(runner, image_store, spec, data_root) as env:
        assert runner.run(env.driver.inspect(env.env_id)).runtime == "runsc"
        assert env.exec("cat", "/proc/version").stdout.startswith("Linux version 4.4.0")
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in cgroups.tasks(env.env_id)}
        assert "Xvnc" not in names
        assert env.exec("id", "-u").stdout.strip() == "1000"
        assert env.banner() == b"RFB 003.008\n"
    assert host_traces(env.env_id, data_root) == NOTHING


@pytest.mark.usefixtures("desktop_layers")
def test_two_nodes_on_one_machine_never_see_each_others_environments(
    runner: asyncio.Runner,
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A named node keeps its environments under its own run root and cgroup parent and
    claims host-wide id ranges in its name; neither node lists the other's environment, so
    neither reconcile could take it for an orphan."""
    monkeypatch.delenv("GENOS_NODE", raising=False)
    home = _driver(image_store, data_root)
    mine = new_env_id()
    runner.run(home.create(mine, desktop_spec))
    try:
        runner.run(home.start(mine))
        monkeypatch.setenv("GENOS_NODE", "t2")
        other = _driver(image_store, data_root / "t2")
        theirs = new_env_id()
        runner.run(other.create(theirs, desktop_spec))
        try:
            runner.run(other.start(theirs))
            assert other.run_root == Path("/run/genos-t2")
            assert runner.run(other.list_ids()) == [theirs]
            assert (
                f"/genos-t2/{theirs}"
                in Path(f"/proc/{runner.run(other.inspect(theirs)).pid}/cgroup").read_text()
            )
            assert other.usage(theirs) is not None
            monkeypatch.delenv("GENOS_NODE")
            assert theirs not in runner.run(home.list_ids())
            assert mine in runner.run(home.list_ids())
            monkeypatch.setenv("GENOS_NODE", "t2")
        finally:
            runner.run(other.destroy(theirs))
        assert runner.run(other.list_ids()) == []
        assert not Path("/run/genos-t2", theirs).exists()
        assert cgroups.remove_parent() == []  # node t2 leaves the machine
        shutil.rmtree("/run/genos-t2")
    finally:
        monkeypatch.delenv("GENOS_NODE", raising=False)
        runner.run(home.destroy(mine))
    assert host_traces(mine, data_root) == NOTHING


def test_a_bad_node_name_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """GENOS_NODE must be a short lower-case label."""
    monkeypatch.setenv("GENOS_NODE", "Bad/Name")
    with pytest.raises(InputError, match="node name 'Bad/Name'"):
        node_scoped("genos")
