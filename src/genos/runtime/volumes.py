"""Named volumes: a user's home that outlives environments, optionally encrypted at rest.

::

    <data dir>/volumes/<owner>/<name>/    0700 root
        data/                             a plain volume's files (owned by uid 1000 on disk)
        cipher/                           an encrypted volume's gocryptfs directory
        key                               0600 root: the per-volume gocryptfs password
        attached                          the env id holding the volume (while attached)

A volume is attached to one environment at a time, at a mountpoint the
driver chooses (``/run/genos/<id>/home``), which the OCI config binds at
``/home/user``.

File ownership: on disk a plain volume's files belong to uid 1000, whatever
the environment's user-namespace range; each env sees them through an
id-mapped bind mount (:func:`genos.sandbox.idmap.bind_idmapped`) that shifts
them into its range. FUSE (gocryptfs) refuses id-mapped mounts on this kernel
(``mount_setattr``: EINVAL), so an encrypted volume's tree is instead chowned
to the env's host uid of its user at attach time.

Deleting a volume unlinks its key first: without the key the cipher blocks
are noise, even if some survive on the disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from genos.errors import (
    CapabilityError,
    ConflictError,
    ExternalError,
    InputError,
    NotFoundError,
    StateError,
)
from genos.paths import data_dir
from genos.runtime.images.mounts import mounted_under
from genos.sandbox import idmap
from genos.sandbox.config import SESSION_GID, SESSION_UID, IdMap

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_TOOL_TIMEOUT = 60.0
_DAEMON_EXIT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Volume:
    """One named volume of one owner."""

    owner: str
    name: str
    encrypted: bool
    path: Path

    @property
    def data(self) -> Path:
        """A plain volume's files."""
        return self.path / "data"

    @property
    def cipher(self) -> Path:
        """An encrypted volume's gocryptfs directory."""
        return self.path / "cipher"

    @property
    def key(self) -> Path:
        """An encrypted volume's password file (root only)."""
        return self.path / "key"

    @property
    def marker(self) -> Path:
        """Holds the id of the environment the volume is attached to."""
        return self.path / "attached"

    def holder(self) -> str | None:
        """The env id the volume is attached to, or None."""
        try:
            return self.marker.read_text().strip() or None
        except FileNotFoundError:
            return None


class VolumeStore:
    """Every named volume on this host (see the module docstring).

    Args:
        root: where volumes live (default ``data_dir()/volumes``).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else data_dir() / "volumes"

    def volume(self, owner: str, name: str) -> Volume:
        """An existing volume.

        Raises:
            InputError: ``owner`` or ``name`` is not a valid name.
            NotFoundError: the owner has no volume of that name.
        """
        path = self._path(owner, name)
        if (path / "data").is_dir():
            return Volume(owner, name, False, path)
        if (path / "cipher").is_dir():
            return Volume(owner, name, True, path)
        raise NotFoundError("volume", f"{owner}/{name}")

    def ensure(self, owner: str, name: str, encrypted: bool) -> Volume:
        """The owner's volume ``name``, created if missing.

        Raises:
            InputError: a bad name, or the volume exists with the other ``encrypted``.
            CapabilityError: an encrypted volume needs gocryptfs, which is missing.
            ExternalError: ``gocryptfs -init`` failed.
        """
        with contextlib.suppress(NotFoundError):
            found = self.volume(owner, name)
            if found.encrypted != encrypted:
                have = "encrypted" if found.encrypted else "not encrypted"
                raise InputError(f"volume {owner}/{name} exists and is {have}")
            return found
        path = self._path(owner, name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.new-{secrets.token_hex(4)}")
        tmp.mkdir(mode=0o700)
        try:
            _init(Volume(owner, name, encrypted, tmp))
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Volume(owner, name, encrypted, path)

    def ls(self, owner: str) -> list[Volume]:
        """The owner's volumes, by name."""
        owned = self._owner_dir(owner)
        names = sorted(p.name for p in owned.iterdir()) if owned.is_dir() else []
        found = []
        for name in names:
            with contextlib.suppress(NotFoundError, InputError):
                found.append(self.volume(owner, name))
        return found

    def rm(self, owner: str, name: str) -> None:
        """Delete a volume: its key first (the data is unreadable from then on), then its files.

        Raises:
            NotFoundError: no such volume.
            StateError: the volume is attached to an environment.
        """
        volume = self.volume(owner, name)
        holder = volume.holder()
        if holder is not None or mounted_under(volume.path):
            raise StateError(f"attached to {holder or 'a mount'}", ["detached"], "remove volume")
        volume.key.unlink(missing_ok=True)
        _sync_dir(volume.path)
        shutil.rmtree(volume.path)

    def pack(self, owner: str, name: str, out: Path) -> None:
        """Write a detached volume as a tar to ``out`` (to carry it to another node): its
        files with their owners and modes, symlinks as links; an encrypted volume as its
        ciphertext and its key.

        Raises:
            NotFoundError: no such volume.
            StateError: it is attached.
        """
        volume = self.volume(owner, name)
        holder = volume.holder()
        if holder is not None or mounted_under(volume.path):
            raise StateError(f"attached to {holder or 'a mount'}", ["detached"], "carry volume")
        with tarfile.open(out, "w") as tar:
            for part in _PARTS:
                if (volume.path / part).exists():
                    tar.add(volume.path / part, arcname=part)

    def unpack(self, owner: str, name: str, src: Path) -> Volume:
        """Make volume ``name`` of ``owner`` from a tar :meth:`pack` wrote; all or nothing.

        Raises:
            ConflictError: this host has a volume of that name already.
            InputError: the tar is not a volume (other top-level names, devices, paths
                that leave it, no data or no cipher and key).
        """
        path = self._path(owner, name)
        if path.exists():
            raise ConflictError(f"volume {owner}/{name} exists on this host already")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.in-{secrets.token_hex(4)}")
        tmp.mkdir(mode=0o700)
        try:
            _extract(src, tmp)
            made = Volume(owner, name, (tmp / "cipher").is_dir(), tmp)
            if made.encrypted:
                os.chown(made.key, 0, 0)
                made.key.chmod(0o600)  # the key stays root's only
            _sync_dir(tmp)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Volume(owner, name, made.encrypted, path)

    def attach(self, volume: Volume, mountpoint: Path, env_id: str, id_map: IdMap | None) -> Path:
        """Mount the volume's plaintext at ``mountpoint`` for environment ``env_id``.

        Args:
            volume: the volume (from :meth:`ensure`).
            mountpoint: an existing empty directory.
            env_id: the environment taking the volume.
            id_map: the env's user-namespace range (None: host ids).

        Returns:
            ``mountpoint``, now the volume's plaintext.

        Raises:
            StateError: the volume is attached to another environment.
            CapabilityError: gocryptfs, FUSE or id-mapped mounts are missing.
            ExternalError: a mount failed (gocryptfs's words in ``detail``).
        """
        _claim(volume, env_id)
        try:
            if volume.encrypted:
                _mount_cipher(volume, mountpoint)
                shift = id_map.host_id if id_map else 0
                _chown_tree(mountpoint, shift + SESSION_UID, shift + SESSION_GID)
            elif id_map is not None:
                idmap.bind_idmapped(volume.data, mountpoint, id_map, readonly=False)
            else:
                _tool(["mount", "--bind", str(volume.data), str(mountpoint)], "mount --bind")
        except BaseException:
            self.detach(volume, mountpoint, env_id)
            raise
        return mountpoint

    def detach(self, volume: Volume, mountpoint: Path, env_id: str) -> None:
        """Unmount the volume from ``mountpoint`` and release it (nothing if not attached).

        Raises:
            ExternalError: the mount could not be removed, even lazily.
        """
        if mountpoint in mounted_under(mountpoint):
            unmount = ["fusermount3", "-u"] if volume.encrypted else ["umount"]
            try:
                _tool([*unmount, str(mountpoint)], "unmount of a volume")
            except ExternalError:
                _tool(["umount", "--lazy", str(mountpoint)], "umount --lazy of a volume")
        if volume.encrypted:
            _wait_daemon_gone(mountpoint)
        if volume.holder() == env_id:
            volume.marker.unlink(missing_ok=True)

    def _owner_dir(self, owner: str) -> Path:
        if not _OWNER.fullmatch(owner):
            raise InputError(f"not a volume owner: {owner!r}")
        return self.root / owner

    def _path(self, owner: str, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise InputError(f"not a volume name: {name!r}")
        return self._owner_dir(owner) / name


_PARTS = ("data", "cipher", "key")


def _checked(members: list[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """The members of a packed volume, refused unless every one is a file, directory or
    symlink under ``data/``, ``cipher/`` or ``key``, named once, through no symlink of the
    tar itself, and without ``..``; setuid, setgid and sticky bits cleared.

    Raises:
        InputError: naming the first member that fails.
    """
    seen: set[str] = set()
    links: set[str] = set()
    for member in members:
        parts = member.name.split("/")
        bad = (
            member.name in seen
            or parts[0] not in _PARTS
            or any(p in ("", ".", "..") for p in parts)
            or not (member.isfile() or member.isdir() or member.issym())
            or any("/".join(parts[:n]) in links for n in range(1, len(parts)))
        )
        if bad:
            raise InputError(f"not a volume: {member.name[:80]!r} in its tar")
        seen.add(member.name)
        if member.issym():
            links.add(member.name)
        member.mode &= 0o777
    return members


def _extract(src: Path, into: Path) -> None:
    """Extract a packed volume into ``into`` (checked: see :meth:`VolumeStore.unpack`)."""
    try:
        with tarfile.open(src, "r:") as tar:
            members = _checked(tar.getmembers())
            tar.extractall(into, members=members, numeric_owner=True)  # noqa: S202 - checked above
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"not a volume tar: {exc}") from exc
    plain = (into / "data").is_dir()
    sealed = (into / "cipher").is_dir() and (into / "key").is_file()
    if plain == sealed:
        raise InputError("not a volume tar: it needs data/, or cipher/ and key")


def _init(volume: Volume) -> None:
    if not volume.encrypted:
        volume.data.mkdir(mode=0o700)
        os.chown(volume.data, SESSION_UID, SESSION_GID)
        return
    fd = os.open(volume.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    volume.cipher.mkdir(mode=0o700)
    _tool(["gocryptfs", "-init", "-q", "-passfile", str(volume.key), str(volume.cipher)],
          "gocryptfs -init")  # fmt: skip


def _claim(volume: Volume, env_id: str) -> None:
    try:
        fd = os.open(volume.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        holder = volume.holder() or "another environment"
        raise StateError(f"attached to {holder}", ["detached"], "attach volume") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(env_id)


def _mount_cipher(volume: Volume, mountpoint: Path) -> None:
    if not Path("/dev/fuse").exists():
        raise CapabilityError("encrypted volumes need FUSE, and /dev/fuse is missing")
    # allow_other: the env's user is not the mounting root.
    argv = ["gocryptfs", "-q", "-allow_other", "-passfile", str(volume.key)]
    _tool([*argv, str(volume.cipher), str(mountpoint)], "gocryptfs mount")


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    for parent, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.lchown(Path(parent, name), uid, gid)


def _wait_daemon_gone(mountpoint: Path) -> None:
    """Poll until no gocryptfs daemon serves ``mountpoint`` (it exits after the unmount)."""
    needle = str(mountpoint).encode()
    deadline = time.monotonic() + _DAEMON_EXIT_TIMEOUT
    while _daemons(needle):
        if time.monotonic() > deadline:
            raise ExternalError(f"gocryptfs for {mountpoint} did not exit after unmount")
        time.sleep(0.01)


def _daemons(needle: bytes) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"gocryptfs") and needle in argv:
                found.append(int(proc.name))
    return found


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tool(argv: list[str], what: str) -> None:
    if shutil.which(argv[0]) is None:
        raise CapabilityError(f"{argv[0]} is not installed; {what} needs it")
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=_TOOL_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise ExternalError(f"{what} failed (exit {done.returncode})", detail)
