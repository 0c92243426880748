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

The gocryptfs daemon of an env with its own id range runs as that env's user
on the host, without privilege: root makes the FUSE mount and hands it the
connection, the cipher directory and the password (see :func:`_serve_cipher_as`).
An env on host ids keeps a root daemon, since host uid 1000 may be a person's
account, which could then read the daemon's memory and its key.

Deleting a volume unlinks its key first: without the key the cipher blocks
are noise, even if some survive on the disk.
"""

from __future__ import annotations

import contextlib
import ctypes
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
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


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
            if volume.encrypted and id_map is not None:
                uid, gid = id_map.host_id + SESSION_UID, id_map.host_id + SESSION_GID
                _serve_cipher_as(volume, mountpoint, uid, gid)
            elif volume.encrypted:
                _mount_cipher(volume, mountpoint)
                _chown_tree(mountpoint, SESSION_UID, SESSION_GID)
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
            _wait_daemon_gone(volume.cipher)
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


def _check_fuse() -> None:
    if not Path("/dev/fuse").exists():
        raise CapabilityError("encrypted volumes need FUSE, and /dev/fuse is missing")


def _mount_cipher(volume: Volume, mountpoint: Path) -> None:
    """Serve the plaintext from a gocryptfs running as root (an env on host ids)."""
    _check_fuse()
    # allow_other: the env's user is not the mounting root.
    argv = ["gocryptfs", "-q", "-allow_other", "-passfile", str(volume.key)]
    _tool([*argv, str(volume.cipher), str(mountpoint)], "gocryptfs mount")


def _serve_cipher_as(volume: Volume, mountpoint: Path, uid: int, gid: int) -> None:
    """Serve the plaintext at ``mountpoint`` from a gocryptfs running as ``uid``:``gid``
    (the env's own user on the host), with no privilege at all.

    Root makes the FUSE mount itself (``allow_other``, ``default_permissions``:
    the kernel checks every caller's permissions) and hands gocryptfs the
    connection and the cipher directory as descriptors, and the password on
    stdin: the daemon needs no path into the 0700 volume and no root. The tree
    on disk is chowned to ``uid`` first, so the daemon owns what it serves and
    new files are the env user's without any switch of identity. (A gocryptfs
    running as root with ``allow_other`` switches its credentials around every
    create; Debian's 2.3 then refuses one now and then with EPERM.)
    """
    _check_fuse()
    _chown_tree(volume.cipher, uid, gid)
    fuse = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        cipher = os.open(volume.cipher, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _fuse_mount(fuse, volume.cipher, mountpoint, uid, gid)
            # -fsname only names the daemon's volume in its argv (see _daemons).
            argv = ["gocryptfs", "-q", "-fsname", str(volume.cipher),
                    f"/dev/fd/{cipher}", f"/dev/fd/{fuse}"]  # fmt: skip
            _tool(argv, "gocryptfs mount", stdin=volume.key.read_text(), fds=(fuse, cipher),
                  as_ids=(uid, gid))  # fmt: skip
        finally:
            os.close(cipher)
    finally:
        os.close(fuse)


_MS_NOSUID, _MS_NODEV = 0x2, 0x4


def _fuse_mount(fuse: int, source: Path, target: Path, uid: int, gid: int) -> None:
    """mount(2) a FUSE file system at ``target`` on the open ``/dev/fuse`` ``fuse``,
    owned by ``uid``:``gid``, open to every user the kernel's permission checks allow."""
    options = (f"fd={fuse},rootmode=40000,user_id={uid},group_id={gid},"
               "allow_other,default_permissions")  # fmt: skip
    libc = ctypes.CDLL(None, use_errno=True)
    flags = _MS_NOSUID | _MS_NODEV
    if libc.mount(bytes(source), bytes(target), b"fuse.gocryptfs", flags, options.encode()):
        raise ExternalError(f"FUSE mount at {target} failed: {os.strerror(ctypes.get_errno())}")


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    for parent, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.lchown(Path(parent, name), uid, gid)


def _wait_daemon_gone(cipher: Path) -> None:
    """Poll until no gocryptfs daemon serves ``cipher`` (it exits after the unmount)."""
    needle = str(cipher).encode()
    deadline = time.monotonic() + _DAEMON_EXIT_TIMEOUT
    while _daemons(needle):
        if time.monotonic() > deadline:
            raise ExternalError(f"gocryptfs for {cipher} did not exit after unmount")
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


def _tool(
    argv: list[str],
    what: str,
    *,
    stdin: str | None = None,
    fds: tuple[int, ...] = (),
    as_ids: tuple[int, int] | None = None,
) -> None:
    """Run ``argv`` (``stdin`` on its standard input, ``fds`` open in it, as uid and
    gid ``as_ids`` with no other groups); a failure as one line naming ``what``."""
    if shutil.which(argv[0]) is None:
        raise CapabilityError(f"{argv[0]} is not installed; {what} needs it")
    uid, gid = as_ids if as_ids is not None else (None, None)
    # Another user starts in / with nothing of ours in its environment.
    cwd, env = ("/", {"PATH": _PATH}) if as_ids is not None else (None, None)
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, check=False,
            timeout=_TOOL_TIMEOUT, pass_fds=fds, user=uid, group=gid,
            extra_groups=None if as_ids is None else [], cwd=cwd, env=env,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExternalError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise ExternalError(f"{what} failed (exit {done.returncode})", detail)
