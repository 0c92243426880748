"""cgroup limits, usage and the freezer, checked on real environments."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genos.errors import NotFoundError
from genos.runtime.driver import EnvState
from genos.runtime.images import ImageStore, Layer
from genos.sandbox import audit, cgroups
from genos.spec import EnvironmentSpec, Resources
from tests.sandbox.probes import Env, build_probe, probed_env, pss_bytes, running_env, wait_for

MIB = 1 << 20
LIMITS = Resources(cpus=0.25, memory_mb=320, pids=96)

V1 = pytest.mark.skipif(cgroups.unified(), reason="checks cgroup v1 files")


def test_resources_translate_the_spec() -> None:
    """Memory (swap equal to it), CPU quota = cpus x period, pids, deny-all-then-allow devices."""
    res = cgroups.resources(LIMITS)
    assert res["memory"] == {"limit": 320 * MIB, "swap": 320 * MIB}
    assert res["cpu"] == {"quota": 25_000, "period": 100_000}
    assert res["pids"] == {"limit": 96}
    assert res["devices"][0] == {"allow": False, "access": "rwm"}
    assert len(res["devices"]) == 1 + len(cgroups.ALLOWED_DEVICES)


def test_extra_pids_are_added_for_the_runtime() -> None:
    """gVisor's own tasks get headroom on top of the spec's pids."""
    assert cgroups.resources(LIMITS, extra_pids=256)["pids"] == {"limit": 352}


def test_cgroups_path_is_under_genos() -> None:
    """Every env's cgroup is /genos/<id> in each hierarchy."""
    assert cgroups.cgroups_path("0123456789") == "/genos/0123456789"


def test_usage_of_an_unknown_env_is_not_found() -> None:
    """Reading usage without a cgroup raises NotFoundError, not OSError."""
    with pytest.raises(NotFoundError, match="no cgroup named"):
        cgroups.usage("zzzzzzzzzz")


@pytest.fixture(scope="module")
def limited(
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    desktop_layers: list[Layer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    """A running desktop with small limits: a quarter CPU, 320 MiB, 96 tasks."""
    assert desktop_layers
    spec = desktop_spec.model_copy(update={"resources": LIMITS})
    with probed_env(image_store, spec, tmp_path_factory) as env:
        yield env


@pytest.fixture(scope="module")
def bystander(
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    """A second, unrelated environment that must not notice the first one's trouble."""
    with probed_env(image_store, desktop_spec, tmp_path_factory) as env:
        yield env


def _v1(env: Env, controller: str, name: str) -> str:
    return (cgroups.CGROUP_ROOT / controller / "genos" / env.env_id / name).read_text().strip()


@V1
@pytest.mark.root
@pytest.mark.runc
def test_limits_are_written_to_the_cgroup(limited: Env) -> None:
    """memory, memsw, CFS quota/period and pids.max hold the spec's values."""
    assert int(_v1(limited, "memory", "memory.limit_in_bytes")) == 320 * MIB
    assert int(_v1(limited, "memory", "memory.memsw.limit_in_bytes")) == 320 * MIB
    assert int(_v1(limited, "cpu", "cpu.cfs_quota_us")) == 25_000
    assert int(_v1(limited, "cpu", "cpu.cfs_period_us")) == 100_000
    assert _v1(limited, "pids", "pids.max") == "96"


@pytest.mark.root
@pytest.mark.runc
def test_inspect_usage_matches_the_cgroup(limited: Env) -> None:
    """inspect's pid count equals pids.current and its CPU time grows.

    The desktop's tasks come and go (a short-lived child can start and end
    between two reads), so the count is compared within a quiet window: the
    cgroup read the same before and after inspect. A wrong count never matches.
    """
    seen = []
    for _ in range(50):
        before = cgroups.usage(limited.env_id).pids
        first = limited.runner.run(limited.driver.inspect(limited.env_id)).usage
        after = cgroups.usage(limited.env_id).pids
        assert first is not None
        seen.append((before, first.pids, after))
        if before == first.pids == after:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"inspect never agreed with pids.current in a quiet window: {seen}")
    limited.probe("spin", "0.2", "1")
    later = limited.runner.run(limited.driver.inspect(limited.env_id)).usage
    assert later is not None
    assert later.cpu_seconds > first.cpu_seconds


@pytest.mark.root
@pytest.mark.runc
def test_busy_loop_gets_its_quota_not_the_host(limited: Env) -> None:
    """Two spinning processes for 1 s of wall time get about 0.25 CPU-seconds in all."""
    before = cgroups.usage(limited.env_id).cpu_seconds
    began = time.monotonic()
    assert limited.probe("spin", "1.0", "2").stdout.strip() == "spun"
    wall = time.monotonic() - began
    used = cgroups.usage(limited.env_id).cpu_seconds - before
    assert 0.15 * wall <= used <= 0.35 * wall


@pytest.mark.root
@pytest.mark.runc
def test_fork_bomb_is_contained(limited: Env) -> None:
    """Forking without end is refused (EAGAIN) below pids.max, and the desktop keeps answering."""
    result = limited.probe("forkbomb", "100000")
    forks, err = (part.split("=")[1] for part in result.stdout.split())
    assert err == "EAGAIN"
    assert 0 < int(forks) < LIMITS.pids
    assert cgroups.denials(limited.env_id)["forks_refused"] >= 1
    assert limited.banner() == b"RFB 003.008\n"


@pytest.mark.root
@pytest.mark.runc
def test_memory_hog_is_oom_killed_and_others_carry_on(limited: Env, bystander: Env) -> None:
    """A 2 GiB allocation is OOM-killed inside its env; its desktop and another env live on."""
    result = limited.probe("memhog", "2048", timeout=120)
    assert result.code == 137  # SIGKILL from the OOM killer, passed on by runc exec
    reached = [int(n) for n in result.stdout.split()]
    assert max(reached) < 320
    assert cgroups.denials(limited.env_id)["oom_kills"] >= 1
    assert limited.banner() == b"RFB 003.008\n"
    assert bystander.banner() == b"RFB 003.008\n"
    assert cgroups.denials(bystander.env_id)["oom_kills"] == 0


@pytest.mark.root
@pytest.mark.runc
def test_suspend_freezes_the_cgroup_and_resume_thaws_it(limited: Env) -> None:
    """Suspended: the freezer says FROZEN and the display is silent; resume brings it back."""
    runner, driver, env_id = limited.runner, limited.driver, limited.env_id
    runner.run(driver.suspend(env_id))
    try:
        assert cgroups.frozen(env_id) is True
        assert runner.run(driver.inspect(env_id)).state is EnvState.SUSPENDED
        with pytest.raises(TimeoutError):
            limited.banner(timeout=0.3)
    finally:
        runner.run(driver.resume(env_id))
    assert cgroups.frozen(env_id) is False
    assert limited.banner() == b"RFB 003.008\n"


@pytest.mark.root
@pytest.mark.runc
def test_freezing_a_missing_cgroup_is_not_found() -> None:
    """freeze() of an env without a cgroup raises NotFoundError, not OSError."""
    with pytest.raises(NotFoundError, match="no cgroup named"):
        asyncio.run(cgroups.freeze("zzzzzzzzzz", timeout=0.1))


@pytest.mark.root
@pytest.mark.runc
def test_idle_desktop_memory_is_small(bystander: Env) -> None:
    """An idle desktop (Xvnc, openbox, xterm) has a PSS well under 200 MiB."""
    assert wait_for(lambda: len(cgroups.tasks(bystander.env_id)) >= 4)
    pss = pss_bytes(cgroups.tasks(bystander.env_id))
    assert 5 * MIB < pss < 200 * MIB


@pytest.mark.root
@pytest.mark.runc
def test_destroy_removes_every_cgroup_dir(
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """After destroy no /sys/fs/cgroup/*/genos/<id> directory is left."""
    with probed_env(image_store, desktop_spec, tmp_path_factory) as env:
        assert len(cgroups.dirs(env.env_id)) >= 8
    assert cgroups.dirs(env.env_id) == []
    assert list(Path("/sys/fs/cgroup").glob(f"*/genos/{env.env_id}")) == []


@pytest.mark.root
@pytest.mark.runc
def test_refused_forks_are_audited_as_denied(
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """destroy records a 'denied' event counting the forks the pids limit refused."""
    probe = build_probe(tmp_path_factory.mktemp("probe"))
    data_root = tmp_path_factory.mktemp("genos-data")
    spec = desktop_spec.model_copy(update={"resources": Resources(pids=64)})
    with pytest.MonkeyPatch.context() as patch, asyncio.Runner() as runner:
        patch.setenv("GENOS_DATA_DIR", str(data_root))
        with running_env(runner, image_store, spec, data_root, probe) as env:
            assert env.probe("forkbomb", "1000").stdout.endswith("errno=EAGAIN\n")
        denied = [r for r in audit.read(env.env_id) if r["event"] == "denied"]
    assert len(denied) == 1
    assert denied[0]["forks_refused"] >= 1
    assert denied[0]["oom_kills"] == 0
