"""The layered image store: digests, caching, atomic builds, mounts, gc, the guest session."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from genos.errors import (
    CapabilityError,
    ExternalError,
    NotFoundError,
    SpecError,
    StateError,
)
from genos.runtime.images import (
    ImageStore,
    Layer,
    LayerRecipe,
    Progress,
    mount_root,
    session_env,
    unmount_root,
)
from genos.runtime.images.firefox import POLICIES_PATH
from genos.runtime.images.mounts import mounted_under, mounts, overlay_dirs_in_use
from genos.runtime.images.recipes import base_recipe, plan
from genos.runtime.images.steps import FileSpec
from genos.runtime.images.tor import LOCKED_PREFS_PATH, locked_prefs_file
from genos.spec import (
    App,
    Display,
    EnvironmentSpec,
    Network,
    NetworkMode,
    Protocol,
    WindowManager,
)

TEST_CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
TOR_BROWSER = App(
    name="Tor Browser", packages=["tor", "firefox-esr"], source="catalog", command="firefox-esr"
)


def spec_with(*packages: str, **fields: object) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({"extra_packages": list(packages), **fields})


def ours_mounted(*paths: Path) -> list[str]:
    """Mounts whose target, upper or work dir is under one of ``paths``."""
    found = [str(p) for path in paths for p in mounted_under(path)]
    for used in overlay_dirs_in_use():
        if any(path in used.parents for path in paths) and "layers" not in used.parts:
            found.append(str(used))
    return found


@pytest.fixture(autouse=True)
def _nothing_left_mounted(tmp_path: Path) -> Iterator[None]:
    yield
    assert ours_mounted(TEST_CACHE / "images", tmp_path) == []


# -- digests (pure) -----------------------------------------------------------


def test_plan_is_base_then_desktop_without_packages() -> None:
    """A spec without packages needs exactly a base and a desktop layer."""
    recipes = plan(EnvironmentSpec(), "amd64")
    assert [r.kind for r in recipes] == ["base", "desktop"]
    assert recipes[1].parent == recipes[0].digest
    assert "openbox" in recipes[1].packages
    assert "tigervnc-standalone-server" in recipes[1].packages


def test_digests_are_stable() -> None:
    """The same spec gives the same 64-hex digests every time."""
    first = [r.digest for r in plan(spec_with("gimp"), "amd64")]
    second = [r.digest for r in plan(spec_with("gimp"), "amd64")]
    assert first == second
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in first)


def test_package_set_changes_only_the_apps_digest() -> None:
    """Another package set changes the apps digest and leaves base and desktop alone."""
    gimp = plan(spec_with("gimp"), "amd64")
    inkscape = plan(spec_with("inkscape"), "amd64")
    assert [r.digest for r in gimp[:2]] == [r.digest for r in inkscape[:2]]
    assert gimp[2].digest != inkscape[2].digest


def test_package_order_does_not_matter() -> None:
    """Packages are a set: order and repeats do not change the digest."""
    one = plan(spec_with("gimp", "inkscape"), "amd64")[2]
    two = plan(spec_with("inkscape", "gimp", "gimp"), "amd64")[2]
    assert one.digest == two.digest
    assert one.packages == ("gimp", "inkscape")


def test_parent_change_changes_the_child_digest() -> None:
    """Another window manager changes the desktop digest and therefore the apps digest."""
    openbox = plan(spec_with("gimp"), "amd64")
    icewm = plan(spec_with("gimp", display={"window_manager": "icewm"}), "amd64")
    assert openbox[0].digest == icewm[0].digest
    assert openbox[1].digest != icewm[1].digest
    assert openbox[2].packages == icewm[2].packages
    assert openbox[2].digest != icewm[2].digest


def test_recipe_changes_change_the_digest() -> None:
    """A new recipe version, step version, step file or command each give a new digest."""
    base = base_recipe("bookworm", "amd64")
    step = base.steps[0]
    changed_file = dataclasses.replace(
        step, files=(*step.files[:-1], FileSpec("/etc/hostname", "other\n"))
    )
    variants = [
        dataclasses.replace(base, version=base.version + 1),
        dataclasses.replace(base, steps=(dataclasses.replace(step, version=2),)),
        dataclasses.replace(base, steps=(changed_file,)),
        dataclasses.replace(base, steps=(dataclasses.replace(step, run=("true",)),)),
        dataclasses.replace(base, options=("variant=apt",)),
    ]
    digests = {base.digest, *(v.digest for v in variants)}
    assert len(digests) == 6


def test_release_and_arch_change_every_digest() -> None:
    """Trixie and another architecture get layers of their own."""
    bookworm = plan(spec_with("gimp"), "amd64")
    trixie = plan(spec_with("gimp", base={"release": "trixie"}), "amd64")
    arm = plan(spec_with("gimp"), "arm64")
    for other in (trixie, arm):
        assert all(a.digest != b.digest for a, b in zip(bookworm, other, strict=True))


def test_unknown_release_is_a_spec_error() -> None:
    """A release GenOS does not build is the user's error, named as such."""
    with pytest.raises(SpecError, match="unknown Debian release 'sid'") as info:
        base_recipe("sid", "amd64")
    assert info.value.problems[0][0] == "base.release"


def test_desktop_packages_follow_the_display() -> None:
    """xfce brings xfce4, RDP brings xrdp, and the default has neither."""
    default = plan(EnvironmentSpec(), "amd64")[1].packages
    xfce = plan(spec_with(display=Display(window_manager=WindowManager.XFCE)), "amd64")[1]
    rdp = plan(spec_with(display=Display(protocol=Protocol.RDP)), "amd64")[1]
    assert "xfce4" not in default
    assert "xrdp" not in default
    assert "xfce4" in xfce.packages
    assert "openbox" not in xfce.packages
    assert "xrdp" in rdp.packages


def test_tor_browser_gets_the_locked_prefs_step() -> None:
    """The app named Tor Browser adds the versioned firefox-esr-tor step to the apps layer."""
    apps = plan(EnvironmentSpec(apps=[TOR_BROWSER]), "amd64")[2]
    assert apps.packages == ("firefox-esr", "tor")
    assert [(s.name, s.version) for s in apps.steps] == [
        ("firefox-esr-policies", 1),
        ("firefox-esr-tor", 1),
    ]
    plain = plan(spec_with("firefox-esr", "tor"), "amd64")[2]
    assert [s.name for s in plain.steps] == ["firefox-esr-policies"]
    assert plain.digest != apps.digest


def test_tor_network_mode_with_firefox_gets_the_step() -> None:
    """Network mode tor locks Firefox ESR to the gateway even without the Tor Browser app."""
    tor_mode = spec_with("firefox-esr", network=Network(mode=NetworkMode.TOR))
    assert [s.name for s in plan(tor_mode, "amd64")[2].steps] == [
        "firefox-esr-policies",
        "firefox-esr-tor",
    ]
    no_firefox = spec_with("gimp", network=Network(mode=NetworkMode.TOR))
    assert plan(no_firefox, "amd64")[2].steps == ()


def test_locked_prefs_route_everything_through_tor() -> None:
    """genos.cfg locks the SOCKS5 gateway, remote DNS and the WebRTC/prefetch/geo leaks shut."""
    lines = locked_prefs_file().splitlines()
    assert lines[0].startswith("//")
    for expected in (
        'lockPref("network.proxy.type", 1);',
        'lockPref("network.proxy.socks", "10.152.152.1");',
        'lockPref("network.proxy.socks_port", 9050);',
        'lockPref("network.proxy.socks_version", 5);',
        'lockPref("network.proxy.socks_remote_dns", true);',
        'lockPref("media.peerconnection.enabled", false);',
        'lockPref("network.dns.disablePrefetch", true);',
        'lockPref("network.prefetch-next", false);',
        'lockPref("network.http.speculative-parallel-limit", 0);',
        'lockPref("geo.enabled", false);',
        'lockPref("network.dns.disableIPv6", true);',
    ):
        assert expected in lines


def test_session_env_carries_the_display_settings() -> None:
    """session_env tells genos-session the resolution, window manager, apps and mode."""
    spec = EnvironmentSpec(
        apps=[TOR_BROWSER, App(name="Terminal", packages=["xterm"], command="xterm -ls")],
        display=Display(window_manager=WindowManager.FLUXBOX, resolution={"width": 1024}),
    )
    env = session_env(spec)
    assert env["GENOS_RESOLUTION"] == "1024x800"
    assert env["GENOS_WM"] == "fluxbox"
    assert env["GENOS_APPS"] == "firefox-esr\nxterm -ls"
    assert env["GENOS_HEADLESS"] == "0"
    assert env["GENOS_DISPLAY_DIR"] == "/run/genos-display"


# -- store logic with a fake builder ------------------------------------------


class FakeBuilder:
    """Writes one marker file per layer; can fail or hold a build until released."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.calls: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Lock()

    def __call__(
        self,
        recipe: LayerRecipe,
        lowers: Sequence[Path],
        rootfs: Path,
        scratch: Path,
        emit: Callable[[str], None],
    ) -> None:
        with self._lock:
            self.calls.append(recipe.digest)
        (rootfs / f"{recipe.kind}.txt").write_text(" ".join(recipe.packages))
        (scratch / "junk").write_text("scratch")
        emit(f"fake {recipe.kind} on {len(lowers)} lowers")
        self.entered.set()
        assert self.release.wait(timeout=30)
        if recipe.kind == self.fail:
            raise ExternalError("apt-get failed (exit 100)", "E: Unable to locate package x")


@pytest.fixture
def fake() -> FakeBuilder:
    """A fake builder that succeeds."""
    return FakeBuilder()


@pytest.fixture
def store(tmp_path: Path, fake: FakeBuilder) -> ImageStore:
    """An empty store in tmp_path building with ``fake``."""
    return ImageStore(tmp_path / "images", builder=fake, arch="amd64")


def events_of(store: ImageStore, spec: EnvironmentSpec) -> list[tuple[str, int, str]]:
    seen: list[Progress] = []
    store.ensure(spec, seen.append)
    return [(p.event, p.index, p.kind) for p in seen if p.event != "line"]


def test_first_ensure_builds_each_layer_once(store: ImageStore, fake: FakeBuilder) -> None:
    """A cold ensure builds base, desktop and apps in order, each on its parents."""
    seen: list[Progress] = []
    layers = store.ensure(spec_with("gimp"), seen.append)
    assert [layer.kind for layer in layers] == ["base", "desktop", "apps"]
    assert fake.calls == [layer.digest for layer in layers]
    assert [p.text for p in seen if p.event == "line"] == [
        "fake base on 0 lowers",
        "fake desktop on 1 lowers",
        "fake apps on 2 lowers",
    ]
    assert (layers[2].path / "apps.txt").read_text() == "gimp"
    assert layers[2].meta.parent == layers[1].digest
    assert layers[2].meta.packages == ("gimp",)


def test_second_ensure_builds_nothing(store: ImageStore, fake: FakeBuilder) -> None:
    """A cached layer is never rebuilt: the second ensure only reports 'cached'."""
    first = store.ensure(spec_with("gimp"))
    events = events_of(store, spec_with("gimp"))
    assert events == [("cached", 1, "base"), ("cached", 2, "desktop"), ("cached", 3, "apps")]
    assert len(fake.calls) == 3
    again = store.ensure(spec_with("gimp"))
    assert [layer.meta for layer in again] == [layer.meta for layer in first]


def test_concurrent_threads_build_a_layer_once(store: ImageStore, fake: FakeBuilder) -> None:
    """Two threads asking for the same missing layer build it once; the other waits and uses it."""
    store.ensure(EnvironmentSpec())
    fake.entered.clear()
    fake.release.clear()
    waiter_events: list[Progress] = []
    waiter_reached_apps = threading.Event()

    def waiter_progress(p: Progress) -> None:
        waiter_events.append(p)
        if p.index == 2 and p.event == "cached":
            waiter_reached_apps.set()

    results: dict[str, list[Layer]] = {}
    builder = threading.Thread(target=lambda: results.update(a=store.ensure(spec_with("gimp"))))
    builder.start()
    assert fake.entered.wait(timeout=10)
    waiter = threading.Thread(
        target=lambda: results.update(b=store.ensure(spec_with("gimp"), waiter_progress))
    )
    waiter.start()
    assert waiter_reached_apps.wait(timeout=10)
    fake.release.set()
    builder.join(timeout=30)
    waiter.join(timeout=30)
    apps_digest = results["a"][2].digest
    assert fake.calls.count(apps_digest) == 1
    assert [(p.event, p.index) for p in waiter_events if p.event != "line"] == [
        ("cached", 1),
        ("cached", 2),
        ("cached", 3),
    ]
    assert results["b"][2].meta == results["a"][2].meta


def test_failed_build_leaves_no_layer_and_no_tmp(store: ImageStore, fake: FakeBuilder) -> None:
    """A build that fails raises, leaves no layer, no build dir, and a retry builds afresh."""
    fake.fail = "apps"
    with pytest.raises(ExternalError, match="apt-get failed") as info:
        store.ensure(spec_with("gimp"))
    assert "Unable to locate package" in info.value.detail
    assert [layer.kind for layer in store.ls()] == ["base", "desktop"]
    assert list((store.root / "tmp").iterdir()) == []
    fake.fail = None
    layers = store.ensure(spec_with("gimp"))
    assert fake.calls.count(layers[2].digest) == 2


def test_stale_build_dir_is_removed_by_the_next_build(store: ImageStore) -> None:
    """What a killed build left in tmp/ is deleted when the layer is next built."""
    digest = store.plan(EnvironmentSpec())[0].digest
    leftover = store.root / "tmp" / f"{digest}.killed"
    (leftover / "rootfs" / "etc").mkdir(parents=True)
    (leftover / "rootfs" / "etc" / "half-written").write_text("x")
    store.ensure(EnvironmentSpec())
    assert not leftover.exists()
    assert not (store.layer_dir(digest) / "rootfs" / "etc" / "half-written").exists()


def test_child_built_on_an_older_parent_is_rebuilt(store: ImageStore, fake: FakeBuilder) -> None:
    """If a parent layer was rebuilt, its children built on the old one are rebuilt too."""
    base, desktop = store.ensure(EnvironmentSpec())
    (store.layer_dir(base.digest) / "meta.json").unlink()  # a half-gone parent
    fake.calls.clear()
    new_base, new_desktop = store.ensure(EnvironmentSpec())
    assert fake.calls == [base.digest, desktop.digest]
    assert new_desktop.meta.parent_instance == new_base.meta.instance


def test_gc_removes_unused_layers_and_keeps_used_ones(store: ImageStore) -> None:
    """gc drops an app layer nobody uses and keeps an in-use one with all its ancestors."""
    gimp = store.ensure(spec_with("gimp"))
    inkscape = store.ensure(spec_with("inkscape"))
    removed = store.gc(in_use={inkscape[2].digest}, recent_seconds=0)
    assert removed == [gimp[2].digest]
    assert {layer.digest for layer in store.ls()} == {layer.digest for layer in inkscape}


def test_gc_keeps_recently_used_layers(store: ImageStore) -> None:
    """A layer an ensure() used within recent_seconds survives gc without an environment."""
    layers = store.ensure(spec_with("gimp"))
    assert store.gc(in_use=(), recent_seconds=3600) == []
    assert [layer.digest for layer in store.ls()] == [layer.digest for layer in layers]
    old = time.time() - 7200
    for layer in layers:
        os.utime(layer.dir / "last-used", (old, old))
    assert store.gc(in_use=(), recent_seconds=3600) == [layer.digest for layer in layers[::-1]]
    assert store.ls() == []


def test_gc_removes_leftover_build_dirs(store: ImageStore) -> None:
    """gc deletes build dirs no running build holds."""
    leftover = store.root / "tmp" / f"{'0' * 64}.killed"
    leftover.mkdir(parents=True)
    store.gc()
    assert not leftover.exists()


def test_rm_removes_a_layer_and_its_children(store: ImageStore) -> None:
    """rm of a desktop layer (by prefix) also removes the apps layers built on it."""
    gimp = store.ensure(spec_with("gimp"))
    inkscape = store.ensure(spec_with("inkscape"))
    removed = store.rm(gimp[1].digest[:12])
    assert sorted(removed[:2]) == sorted([gimp[2].digest, inkscape[2].digest])
    assert removed[2] == gimp[1].digest
    assert [layer.digest for layer in store.ls()] == [gimp[0].digest]


def test_rm_refuses_a_layer_in_use(store: ImageStore) -> None:
    """rm will not remove a layer an environment uses, nor its ancestors."""
    layers = store.ensure(spec_with("gimp"))
    with pytest.raises(StateError, match="in use"):
        store.rm(layers[0].digest, in_use={layers[2].digest})
    assert len(store.ls()) == 3
    with pytest.raises(NotFoundError):
        store.rm("ffff")


def test_ls_of_a_store_never_built_is_empty(tmp_path: Path) -> None:
    """Listing a store that has no directory yet gives no layers and creates nothing."""
    store = ImageStore(tmp_path / "nowhere", arch="amd64")
    assert store.ls() == []
    assert store.gc() == []
    assert not (tmp_path / "nowhere").exists()


def test_missing_tools_is_a_capability_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without mmdebstrap on PATH, ensure() says the host cannot build images."""
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    monkeypatch.setenv("PATH", str(tmp_path))
    store = ImageStore(tmp_path / "images", arch="amd64")
    with pytest.raises(CapabilityError, match="mmdebstrap"):
        store.ensure(EnvironmentSpec())
    assert store.ls() == []
    assert list((store.root / "tmp").iterdir()) == []


# -- mounts (root) ------------------------------------------------------------


@pytest.mark.root
def test_gc_keeps_a_mounted_layer(store: ImageStore, tmp_path: Path) -> None:
    """A layer an overlay on this host uses survives gc even when nobody lists it as in use."""
    layers = store.ensure(spec_with("gimp"))
    old = time.time() - 7200
    for layer in layers:
        os.utime(layer.dir / "last-used", (old, old))
    target = tmp_path / "root"
    mount_root(layers, tmp_path / "upper", tmp_path / "work", target)
    try:
        assert {layer.path for layer in layers} <= overlay_dirs_in_use()
        assert store.gc(recent_seconds=0) == []
        with pytest.raises(StateError, match="mounted"):
            store.rm(layers[2].digest)
    finally:
        unmount_root(target)
    assert store.gc(recent_seconds=0) == [layer.digest for layer in layers[::-1]]


@pytest.mark.root
def test_mount_root_writes_to_upper_only(tmp_path: Path) -> None:
    """The merged root shows every layer, top wins, and writes land in the upper dir only."""
    low, high = tmp_path / "low", tmp_path / "high"
    for layer, text in ((low, "low"), (high, "high")):
        (layer / "etc").mkdir(parents=True)
        (layer / "etc" / "shared").write_text(text)
    (low / "etc" / "only-low").write_text("low")
    target = tmp_path / "root"
    mount_root([low, high], tmp_path / "upper", tmp_path / "work", target)
    try:
        assert (target / "etc" / "shared").read_text() == "high"
        assert (target / "etc" / "only-low").read_text() == "low"
        (target / "etc" / "only-low").write_text("changed")
        (target / "new").write_text("new")
        assert [str(target)] == [str(p) for p in mounted_under(target)]
    finally:
        unmount_root(target)
    assert (low / "etc" / "only-low").read_text() == "low"
    assert (tmp_path / "upper" / "etc" / "only-low").read_text() == "changed"
    assert (tmp_path / "upper" / "new").read_text() == "new"
    assert mounted_under(target) == []


@pytest.mark.root
def test_unmount_root_is_idempotent_and_detaches_busy_mounts(tmp_path: Path) -> None:
    """unmount_root on a busy root detaches it lazily; a second call does nothing."""
    (tmp_path / "low").mkdir()
    target = tmp_path / "root"
    mount_root([tmp_path / "low"], tmp_path / "upper", tmp_path / "work", target)
    with (target / "held-open").open("w") as held:
        cwd = Path.cwd()
        os.chdir(target)
        try:
            unmount_root(target)
        finally:
            os.chdir(cwd)
        held.write("still writable")
    assert mounted_under(target) == []
    unmount_root(target)
    unmount_root(tmp_path / "never-mounted")
    assert mounted_under(tmp_path) == []


# -- real builds (root, Debian's archive) --------------------------------------


def _in_merged(layers: Sequence[Layer], tmp_path: Path) -> Path:
    target = tmp_path / "root"
    mount_root(layers, tmp_path / "upper", tmp_path / "work", target)
    return target


@pytest.mark.root
def test_desktop_layers_hold_the_guest_contract(
    desktop_layers: list[Layer], tmp_path: Path
) -> None:
    """Base + desktop give Xvnc, tini, openbox, genos-session and user 1000."""
    assert [layer.kind for layer in desktop_layers] == ["base", "desktop"]
    root = _in_merged(desktop_layers, tmp_path)
    try:
        for path in ("usr/bin/Xtigervnc", "usr/bin/tini", "usr/bin/openbox", "usr/bin/xterm"):
            assert (root / path).is_file(), path
        assert (root / "usr/bin/Xvnc").readlink() == Path("/etc/alternatives/Xvnc")
        assert (root / "etc/alternatives/Xvnc").readlink() == Path("/usr/bin/Xtigervnc")
        session = root / "usr/local/bin/genos-session"
        assert session.read_text().startswith("#!/bin/sh\n")
        assert stat.S_IMODE(session.stat().st_mode) == 0o755
        users = {
            line.split(":")[0]: line.split(":")
            for line in (root / "etc/passwd").read_text().splitlines()
        }
        assert users["user"][2:4] == ["1000", "1000"]
        assert users["user"][5] == "/home/user"
        assert (root / "home/user").stat().st_uid == 1000
        assert (root / "etc/resolv.conf").read_text() == ""
        assert list((root / "var/lib/apt/lists").glob("*Packages*")) == []
        assert list((root / "var/cache/apt/archives").glob("*.deb")) == []
    finally:
        unmount_root(root)


@pytest.mark.root
def test_second_real_ensure_builds_nothing(
    image_store: ImageStore, desktop_spec: EnvironmentSpec, desktop_layers: list[Layer]
) -> None:
    """Ensuring a built spec again reports only 'cached' and keeps each layer's metadata."""
    seen: list[Progress] = []
    again = image_store.ensure(desktop_spec, seen.append)
    assert [(p.event, p.kind) for p in seen] == [("cached", "base"), ("cached", "desktop")]
    assert [layer.meta for layer in again] == [layer.meta for layer in desktop_layers]


@pytest.mark.root
def test_failed_real_build_leaves_nothing(
    image_store: ImageStore, desktop_layers: list[Layer]
) -> None:
    """apt failing on a package that does not exist raises ExternalError and leaves no trace."""
    spec = spec_with("genos-no-such-package")
    digest = image_store.plan(spec)[2].digest
    with pytest.raises(ExternalError, match="apt-get failed") as info:
        image_store.ensure(spec)
    assert "Unable to locate package genos-no-such-package" in info.value.detail
    assert not image_store.layer_dir(digest).exists()
    assert list((image_store.root / "tmp").glob(f"{digest}.*")) == []
    assert ours_mounted(image_store.root) == []


ENSURE_SCRIPT = """
import json, sys
from pathlib import Path
from genos.runtime.images import ImageStore
from genos.spec import EnvironmentSpec
store = ImageStore(Path(sys.argv[1]))
spec = EnvironmentSpec(extra_packages=[sys.argv[2]])
print("start", flush=True)
store.ensure(spec, lambda p: p.event != "line" and print(p.event, p.kind, flush=True))
"""


def _ensure_in_process(store: ImageStore, package: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ENSURE_SCRIPT, str(store.root), package],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.root
def test_concurrent_processes_build_a_layer_once(
    image_store: ImageStore, desktop_layers: list[Layer]
) -> None:
    """Two processes ensuring the same missing apps layer build it once between them."""
    digest = image_store.plan(spec_with("hello"))[2].digest
    if image_store.layer_dir(digest).exists():
        image_store.rm(digest)
    procs = [_ensure_in_process(image_store, "hello") for _ in range(2)]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    apps_events = sorted(
        line for out in outputs for line in out.splitlines() if line.endswith(" apps")
    )
    assert apps_events == ["build apps", "built apps", "cached apps"]
    layer = image_store.get(digest)
    assert (layer.path / "usr/bin/hello").is_file()


def _processes_rooted_under(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "root").readlink().is_relative_to(path):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.mark.root
def test_killed_build_leaves_no_mount_or_process(
    image_store: ImageStore, desktop_layers: list[Layer]
) -> None:
    """SIGKILL mid-build takes the build's processes and mounts along; the next build cleans up."""
    digest = image_store.plan(spec_with("figlet"))[2].digest
    if image_store.layer_dir(digest).exists():
        image_store.rm(digest)
    proc = _ensure_in_process(image_store, "figlet")
    deadline = time.monotonic() + 120
    tmp = image_store.root / "tmp"
    while not _processes_rooted_under(tmp) and time.monotonic() < deadline:
        assert proc.poll() is None
        time.sleep(0.05)
    assert _processes_rooted_under(tmp) != []
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    deadline = time.monotonic() + 10
    while _processes_rooted_under(tmp) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_rooted_under(tmp) == []
    assert ours_mounted(image_store.root) == []
    assert list(tmp.glob(f"{digest}.*")) != []  # a leftover, for the next build
    assert not image_store.layer_dir(digest).exists()
    layers = image_store.ensure(spec_with("figlet"))
    assert list(tmp.glob(f"{digest}.*")) == []
    assert (layers[2].path / "usr/bin/figlet-figlet").exists()


@pytest.mark.root
def test_session_answers_the_rfb_banner(
    desktop_spec: EnvironmentSpec, desktop_layers: list[Layer], tmp_path: Path
) -> None:
    """genos-session as uid 1000 under tini serves the RFB banner on the display socket."""
    root = _in_merged(desktop_layers, tmp_path)
    display = tmp_path / "display"
    display.mkdir()
    os.chown(display, 1000, 1000)
    # sh stays PID 1 of the new PID namespace as root, so it keeps the
    # parent-death signal (a credential change would clear it) and killing it
    # ends every process of the session.
    script = (
        f"set -e; m={root}; mount -t proc proc $m/proc;"
        f" mount -t tmpfs -o mode=1777 tmpfs $m/tmp; mount --bind {display} $m/run/genos-display;"
        " chroot --userspec=1000:1000 $m /usr/bin/tini -g -- /usr/local/bin/genos-session & wait"
    )
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", **session_env(desktop_spec)}
    isolate = ["setpriv", "--pdeathsig", "KILL", "--", "unshare", "--mount", "--pid", "--net"]
    isolate += ["--fork", "--kill-child", "--propagation", "private", "--"]
    session = subprocess.Popen([*isolate, "sh", "-c", script], env=env)
    try:
        banner = _read_banner(display / "rfb.sock", deadline=time.monotonic() + 30)
        assert banner == b"RFB 003.008\n"
        assert stat.S_IMODE((display / "rfb.sock").stat().st_mode) == 0o600
        assert (display / "rfb.sock").stat().st_uid == 1000
    finally:
        init = _children(session.pid)
        session.kill()
        session.wait(timeout=10)
        _wait_gone(init, deadline=time.monotonic() + 10)
        unmount_root(root)
    assert _alive(init) == []


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` that still run (a zombie has ended)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _wait_gone(pids: list[int], deadline: float) -> None:
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _read_banner(path: Path, deadline: float) -> bytes:
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                return sock.recv(12)
        except OSError:
            time.sleep(0.05)
    return b""


@pytest.mark.root
def test_trixie_desktop_builds(image_store: ImageStore, tmp_path: Path) -> None:
    """Trixie gets its own base and desktop layers with the same guest contract."""
    layers = image_store.ensure(EnvironmentSpec(base={"release": "trixie"}))
    assert [(layer.kind, layer.meta.release) for layer in layers] == [
        ("base", "trixie"),
        ("desktop", "trixie"),
    ]
    root = _in_merged(layers, tmp_path)
    try:
        assert (
            "13" in (root / "etc/debian_version").read_text()
            or "trixie" in (root / "etc/os-release").read_text()
        )
        assert (root / "usr/bin/Xtigervnc").is_file()
        assert (root / "usr/local/bin/genos-session").is_file()
    finally:
        unmount_root(root)


@pytest.mark.root
def test_tor_browser_layer_locks_firefox_to_the_gateway(
    image_store: ImageStore, desktop_layers: list[Layer]
) -> None:
    """The Tor Browser apps layer has Firefox ESR, GenOS's policies and the locked SOCKS5 prefs
    Firefox loads."""
    spec = EnvironmentSpec(apps=[TOR_BROWSER], network=Network(mode=NetworkMode.TOR))
    layers = image_store.ensure(spec)
    apps = layers[2].path
    assert layers[2].meta.steps == ("firefox-esr-policies@1", "firefox-esr-tor@1")
    policies = json.loads((apps / POLICIES_PATH.lstrip("/")).read_text())
    assert policies["policies"]["DisableTelemetry"] is True
    assert (apps / "usr/lib/firefox-esr/firefox-esr").is_file()
    assert (apps / "usr/sbin/tor").is_file()
    prefs = (apps / LOCKED_PREFS_PATH.lstrip("/")).read_text()
    assert 'lockPref("network.proxy.socks", "10.152.152.1");' in prefs
    assert 'lockPref("network.proxy.socks_port", 9050);' in prefs
    assert 'lockPref("media.peerconnection.enabled", false);' in prefs
    defaults = apps / "usr/lib/firefox-esr/defaults/pref"
    autoconfig = (defaults / "genos-autoconfig.js").read_text()
    assert 'pref("general.config.filename", "genos.cfg");' in autoconfig
    assert sorted(p.name for p in defaults.iterdir()) != ["genos-autoconfig.js"]
    meta = json.loads((layers[2].dir / "meta.json").read_text())
    assert [step["name"] for step in meta["recipe"]["steps"]] == [
        "firefox-esr-policies", "firefox-esr-tor"]  # fmt: skip


def test_mount_table_parsing_unescapes_paths() -> None:
    """Mount targets with spaces come back unescaped from /proc/self/mountinfo."""
    targets = [m.target for m in mounts()]
    assert Path("/") in targets
    assert all("\\040" not in str(t) for t in targets)
