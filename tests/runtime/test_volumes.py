"""Named volumes: the store on its own (real gocryptfs), and real runc environments using them."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from genos.errors import ConflictError, ExternalError, InputError, StateError
from genos.ids import new_env_id
from genos.runtime.images import ImageStore
from genos.runtime.oci.driver import OCIDriver
from genos.runtime.volumes import Volume, VolumeStore
from genos.spec import EnvironmentSpec, Persistence, PersistenceMode
from tests.sandbox.probes import NOTHING, Env, host_traces, offline_network

PLAINTEXT = "genos-secret-plaintext-4711"


def _mounts_of(*places: Path) -> list[str]:
    """Lines of /proc/mounts naming gocryptfs or any of ``places``."""
    lines = Path("/proc/mounts").read_text().splitlines()
    return [m for m in lines if "gocryptfs" in m or any(str(p) in m for p in places)]


def _daemon_ids(cipher: Path) -> list[tuple[str, str]]:
    """(Uid, Gid) lines of /proc/PID/status of each gocryptfs process serving ``cipher``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text().splitlines()
        except OSError:
            continue
        if argv[0].endswith(b"gocryptfs") and str(cipher).encode() in argv:
            ids = {k: " ".join(v.split()) for k, v in (s.split(":", 1) for s in status if ":" in s)}
            found.append((ids["Uid"], ids["Gid"]))
    return found


def _holds(tree: Path, needle: str) -> list[Path]:
    """Files under ``tree`` whose bytes contain ``needle``."""
    return [p for p in tree.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    """A volume store in a private directory."""
    return VolumeStore(tmp_path / "volumes")


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    """An empty directory to attach volumes at; unmounted afterwards if a test left it."""
    point = tmp_path / "mnt"
    point.mkdir()
    yield point
    subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)


@pytest.mark.root
class TestVolumeStore:
    """The store on its own, with real mounts and real gocryptfs."""

    def test_plain_volume_is_a_data_dir_owned_by_the_session_user(self, store: VolumeStore) -> None:
        """A plain volume is <root>/<owner>/<name>/data, uid 1000, mode 0700, with no key."""
        volume = store.ensure("alice", "home", encrypted=False)
        info = volume.data.stat()
        assert volume.path == store.root / "alice" / "home"
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (1000, 1000, 0o700)
        assert volume.key.exists() is False

    def test_encrypted_volume_key_is_root_only(self, store: VolumeStore) -> None:
        """An encrypted volume has a 0600 root-owned key in a 0700 dir and a cipher dir."""
        volume = store.ensure("alice", "vault", encrypted=True)
        key = volume.key.stat()
        assert (key.st_uid, key.st_mode & 0o777) == (0, 0o600)
        assert volume.path.stat().st_mode & 0o777 == 0o700
        assert (volume.cipher / "gocryptfs.conf").is_file()

    def test_ensure_returns_the_existing_volume(self, store: VolumeStore) -> None:
        """A second ensure with the same flag finds the volume and keeps its key."""
        first = store.ensure("alice", "vault", encrypted=True)
        key = first.key.read_bytes()
        assert store.ensure("alice", "vault", encrypted=True) == first
        assert first.key.read_bytes() == key

    def test_ensure_refuses_the_other_encryption(self, store: VolumeStore) -> None:
        """Asking for an existing plain volume as encrypted is an InputError."""
        store.ensure("alice", "home", encrypted=False)
        with pytest.raises(InputError, match="exists and is not encrypted"):
            store.ensure("alice", "home", encrypted=True)

    @pytest.mark.parametrize(("owner", "name"), [("../x", "home"), ("alice", "Home/..")])
    def test_bad_names_are_input_errors(self, store: VolumeStore, owner: str, name: str) -> None:
        """Owners and names that could escape the store are refused."""
        with pytest.raises(InputError):
            store.ensure(owner, name, encrypted=False)

    def test_ls_lists_only_the_owners_volumes(self, store: VolumeStore) -> None:
        """ls(owner) gives that owner's volumes by name and nobody else's."""
        store.ensure("alice", "work", encrypted=False)
        store.ensure("alice", "home", encrypted=True)
        store.ensure("bob", "home", encrypted=False)
        found = [(v.name, v.encrypted) for v in store.ls("alice")]
        assert found == [("home", True), ("work", False)]
        assert store.ls("carol") == []

    def test_encrypted_data_is_ciphertext_on_disk(
        self, store: VolumeStore, mountpoint: Path
    ) -> None:
        """A file written through an attached encrypted volume is not in its cipher dir in clear."""
        volume = store.ensure("alice", "vault", encrypted=True)
        store.attach(volume, mountpoint, "env-a", None)
        (mountpoint / "note.txt").write_text(PLAINTEXT)
        store.detach(volume, mountpoint, "env-a")
        assert _mounts_of(volume.path, mountpoint) == []
        assert len(list(volume.cipher.iterdir())) == 3  # conf, diriv, the file
        assert _holds(volume.path, PLAINTEXT) == []
        store.attach(volume, mountpoint, "env-b", None)
        try:
            assert (mountpoint / "note.txt").read_text() == PLAINTEXT
        finally:
            store.detach(volume, mountpoint, "env-b")

    def test_attach_is_exclusive(self, store: VolumeStore, mountpoint: Path) -> None:
        """A volume attached to one env cannot be attached to another or removed."""
        volume = store.ensure("alice", "home", encrypted=False)
        store.attach(volume, mountpoint, "env-a", None)
        try:
            with pytest.raises(StateError, match="attached to env-a"):
                store.attach(volume, mountpoint.parent, "env-b", None)
            with pytest.raises(StateError, match="attached to env-a"):
                store.rm("alice", "home")
        finally:
            store.detach(volume, mountpoint, "env-a")
        assert volume.holder() is None
        assert _mounts_of(mountpoint) == []

    def test_a_packed_volume_unpacks_whole_on_another_host(
        self, store: VolumeStore, tmp_path: Path
    ) -> None:
        """pack then unpack into another store: files, owners, modes and symlinks (even
        absolute ones, as links) as they were; a plain volume stays plain; the same name
        again on the other store is a conflict and changes nothing."""
        volume = store.ensure("alice", "home", encrypted=False)
        (volume.data / "docs").mkdir()
        note = volume.data / "docs" / "note.txt"
        note.write_text("carried")
        note.chmod(0o664)
        os.chown(note, 1000, 1000)
        (volume.data / "passwd").symlink_to("/etc/passwd")
        packed = tmp_path / "home.tar"
        store.pack("alice", "home", packed)
        other = VolumeStore(tmp_path / "other")
        moved = other.unpack("alice", "home", packed)
        assert moved.encrypted is False
        carried = moved.data / "docs" / "note.txt"
        assert carried.read_text() == "carried"
        assert (carried.stat().st_uid, carried.stat().st_gid) == (1000, 1000)
        assert carried.stat().st_mode & 0o777 == 0o664
        assert str((moved.data / "passwd").readlink()) == "/etc/passwd"
        with pytest.raises(ConflictError, match="exists on this host"):
            other.unpack("alice", "home", packed)
        assert carried.read_text() == "carried"

    def test_an_encrypted_volume_travels_as_ciphertext_with_a_root_only_key(
        self, store: VolumeStore, tmp_path: Path
    ) -> None:
        """The tar of an encrypted volume holds no plaintext; unpacked, its key is root's
        and 0600, and gocryptfs opens it on the other host."""
        volume = store.ensure("alice", "vault", encrypted=True)
        point = tmp_path / "mnt"
        point.mkdir()
        store.attach(volume, point, "e1", None)
        (point / "secret.txt").write_text(PLAINTEXT)
        store.detach(volume, point, "e1")
        packed = tmp_path / "vault.tar"
        store.pack("alice", "vault", packed)
        assert PLAINTEXT.encode() not in packed.read_bytes()
        other = VolumeStore(tmp_path / "other")
        moved = other.unpack("alice", "vault", packed)
        assert moved.encrypted is True
        key = moved.key.stat()
        assert (key.st_uid, key.st_gid, key.st_mode & 0o777) == (0, 0, 0o600)
        other.attach(moved, point, "e2", None)
        try:
            assert (point / "secret.txt").read_text() == PLAINTEXT
        finally:
            other.detach(moved, point, "e2")

    @pytest.mark.parametrize(
        "entry", ["../escape", "data/../../escape", "etc/passwd", "/data/x", "dev", "via-link"]
    )
    def test_a_tar_that_is_not_a_volume_is_refused_and_leaves_nothing(
        self, store: VolumeStore, tmp_path: Path, entry: str
    ) -> None:
        """Names outside the volume's parts, paths that leave it, and devices are refused;
        nothing of the attempt stays in the store."""
        hostile = tmp_path / "hostile.tar"
        with tarfile.open(hostile, "w") as tar:
            data = tarfile.TarInfo("data")
            data.type = tarfile.DIRTYPE
            tar.addfile(data)
            if entry == "via-link":  # a symlink of the tar, then a file through it
                link = tarfile.TarInfo("data/up")
                link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
                tar.addfile(link)
                entry = "data/up/escape"
            member = tarfile.TarInfo("data/null" if entry == "dev" else entry)
            if entry == "dev":
                member.type, member.devmajor, member.devminor = tarfile.CHRTYPE, 1, 3
                tar.addfile(member)
            else:
                member.size = 1
                tar.addfile(member, io.BytesIO(b"x"))
        with pytest.raises(InputError, match="not a volume"):
            store.unpack("alice", "home", hostile)
        assert list((tmp_path / "volumes" / "alice").iterdir()) == []
        assert not (tmp_path / "escape").exists()

    def test_an_attached_volume_is_not_packed(
        self, store: VolumeStore, mountpoint: Path, tmp_path: Path
    ) -> None:
        """A volume in use cannot be carried (its files may be changing)."""
        volume = store.ensure("alice", "home", encrypted=False)
        store.attach(volume, mountpoint, "e1", None)
        try:
            with pytest.raises(StateError, match="attached"):
                store.pack("alice", "home", tmp_path / "x.tar")
        finally:
            store.detach(volume, mountpoint, "e1")
        assert not (tmp_path / "x.tar").exists()

    def test_rm_destroys_the_key_before_the_data(self, store: VolumeStore) -> None:
        """When removing the files fails, the key is already gone (the data is unreadable)."""
        volume = store.ensure("alice", "vault", encrypted=True)
        stuck = volume.cipher / "stuck"
        stuck.write_text("x")
        subprocess.run(["chattr", "+i", str(stuck)], check=True)
        try:
            with pytest.raises(PermissionError):
                store.rm("alice", "vault")
            assert volume.key.exists() is False
            assert volume.cipher.is_dir()
        finally:
            subprocess.run(["chattr", "-i", str(stuck)], check=True)
        store.rm("alice", "vault")
        assert volume.path.exists() is False


# -- real environments ----------------------------------------------------------------


def _spec(base: EnvironmentSpec, volume: str | None, *, encrypted: bool = False) -> EnvironmentSpec:
    if volume is None:
        return base
    wanted = Persistence(mode=PersistenceMode.VOLUME, volume=volume, encrypted=encrypted)
    return base.model_copy(update={"persistence": wanted})


@contextmanager
def _env(
    runner: asyncio.Runner,
    store: ImageStore,
    spec: EnvironmentSpec,
    data_root: Path,
    *,
    owner: str = "alice",
    user_namespace: bool | None = None,
) -> Iterator[Env]:
    """A running env created for ``owner``; destroyed (volume detached) on exit."""
    driver = OCIDriver(store, data_root=data_root, network=offline_network(data_root),
                       user_namespace=user_namespace)  # fmt: skip
    env = Env(runner, driver, new_env_id(), spec)
    try:
        runner.run(driver.create(env.env_id, spec, owner=owner))
        runner.run(driver.start(env.env_id))
        yield env
    finally:
        runner.run(driver.destroy(env.env_id))


def _write_note(env: Env, text: str) -> None:
    done = env.sh(f"printf %s {text} >> /home/user/note.txt && id -u")
    assert (done.code, done.stdout.strip()) == (0, "1000"), done.stderr


@pytest.mark.root
@pytest.mark.runc
@pytest.mark.usefixtures("desktop_layers")
class TestEnvironmentsWithVolumes:
    """Volumes attached to real runc environments."""

    def test_volume_outlives_its_env_across_id_ranges(
        self,
        runner: asyncio.Runner,
        image_store: ImageStore,
        desktop_spec: EnvironmentSpec,
        data_root: Path,
    ) -> None:
        """A file env A wrote in /home/user is read and extended by env B of the same owner."""
        spec = _spec(desktop_spec, "home")
        with _env(runner, image_store, spec, data_root, user_namespace=False) as one:
            _write_note(one, "from-a")
        assert host_traces(one.env_id, data_root) == NOTHING
        with _env(runner, image_store, spec, data_root, user_namespace=True) as two:
            assert two.host_id() is not None
            assert two.exec("cat", "/home/user/note.txt").stdout == "from-a"
            _write_note(two, "-from-b")
        assert host_traces(two.env_id, data_root) == NOTHING
        note = data_root / "volumes" / "alice" / "home" / "data" / "note.txt"
        assert note.read_text() == "from-a-from-b"
        assert (note.stat().st_uid, note.stat().st_gid) == (1000, 1000)
        assert _mounts_of(data_root / "volumes") == []

    def test_volumes_are_per_owner(
        self,
        runner: asyncio.Runner,
        image_store: ImageStore,
        desktop_spec: EnvironmentSpec,
        data_root: Path,
    ) -> None:
        """Another owner's volume of the same name is a different, empty volume."""
        spec = _spec(desktop_spec, "shared-name")
        with _env(runner, image_store, spec, data_root, owner="alice") as one:
            _write_note(one, "alice-only")
        with _env(runner, image_store, spec, data_root, owner="bob") as two:
            assert two.exec("test", "-e", "/home/user/note.txt").code == 1
        assert host_traces(two.env_id, data_root) == NOTHING

    def test_ephemeral_env_keeps_nothing(
        self,
        runner: asyncio.Runner,
        image_store: ImageStore,
        desktop_spec: EnvironmentSpec,
        data_root: Path,
    ) -> None:
        """A file written in an ephemeral env's home is gone with it and absent from the next."""
        with _env(runner, image_store, desktop_spec, data_root) as one:
            _write_note(one, "ephemeral")
        assert host_traces(one.env_id, data_root) == NOTHING
        with _env(runner, image_store, desktop_spec, data_root) as two:
            assert two.exec("test", "-e", "/home/user/note.txt").code == 1
            assert two.exec("cat", "/proc/self/mountinfo").stdout.count(" /home/user ") == 1
        assert host_traces(two.env_id, data_root) == NOTHING

    def test_encrypted_volume_is_ciphertext_and_rm_destroys_its_key(
        self,
        runner: asyncio.Runner,
        image_store: ImageStore,
        desktop_spec: EnvironmentSpec,
        data_root: Path,
    ) -> None:
        """An encrypted home is readable by the next env, ciphertext on disk, and gone after rm."""
        spec = _spec(desktop_spec, "vault", encrypted=True)
        with _env(runner, image_store, spec, data_root) as one:
            _write_note(one, PLAINTEXT)
            volume = VolumeStore(data_root / "volumes").volume("alice", "vault")
            # Served by an unprivileged gocryptfs: the env's own user on the host,
            # real, effective, saved and file-system ids alike, which owns the tree.
            host_id = one.host_id()
            assert host_id is not None
            user = host_id + 1000
            assert _daemon_ids(volume.cipher) == [(f"{user} {user} {user} {user}",) * 2]
            owners = {(p.stat().st_uid, p.stat().st_gid) for p in volume.cipher.rglob("*")}
            assert owners == {(user, user)}
        with _env(runner, image_store, spec, data_root) as two:
            assert two.exec("cat", "/home/user/note.txt").stdout == PLAINTEXT
        for env in (one, two):
            assert host_traces(env.env_id, data_root) == NOTHING
        volumes = VolumeStore(data_root / "volumes")
        assert _mounts_of(volume.path, data_root / "volumes") == []
        assert _daemon_ids(volume.cipher) == []
        assert volume.holder() is None
        assert _holds(volume.path, PLAINTEXT) == []
        volumes.rm("alice", "vault")
        assert (volume.key.exists(), volume.path.exists()) == (False, False)

    def test_failed_create_detaches_the_volume(
        self,
        runner: asyncio.Runner,
        image_store: ImageStore,
        desktop_spec: EnvironmentSpec,
        data_root: Path,
    ) -> None:
        """A failure after the volume step unmounts and releases the volume, leaving nothing."""

        def hook(env_id: str, at: str) -> None:
            if at == "network":
                raise ExternalError(f"injected after the volume of {env_id}")

        spec = _spec(desktop_spec, "crashy", encrypted=True)
        driver = OCIDriver(image_store, data_root=data_root, step_hook=hook,
                           network=offline_network(data_root))  # fmt: skip
        env_id = new_env_id()
        with pytest.raises(ExternalError, match="injected after the volume"):
            runner.run(driver.create(env_id, spec, owner="alice"))
        assert host_traces(env_id, data_root) == NOTHING
        volume: Volume = VolumeStore(data_root / "volumes").volume("alice", "crashy")
        assert volume.holder() is None
        assert _mounts_of(volume.path, data_root / "volumes") == []
