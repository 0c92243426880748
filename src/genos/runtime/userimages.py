"""User-supplied disk images for the ``vm`` tier: a small content-addressed registry.

``genos images add NAME FILE`` copies a qcow2 or ISO image (checked by
:mod:`genos.runtime.diskimage`) into the image store; a spec then boots it
with ``base.image: NAME``. ::

    <images>/user/                   0700 root
        index.json                   0600: name -> digest, format, size, virtual size, added
        <sha256>.qcow2 | .iso        0600 root, never written again
        users/<env id>.json          0600: an environment using an image, and its dirs
        tmp/                         copies in progress (removed when they fail, or
                                     by a later add when a killed one left them)
        .lock                        flock around every change of the index

Files stay root's: QEMU, which runs as its own user, never opens them by
path; the driver opens one read-only and hands QEMU the descriptor. Two names
with the same content share one file. An image may be used by many
environments at once (each writes to its own overlay or blank disk); it
cannot be removed while one uses it: :meth:`UserImages.claim` records the
environment with its run and data dirs, and a record whose dirs are all gone
(the environment was destroyed, or the host rebooted and reconcile removed
it) no longer counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from genos.errors import CapabilityError, ExternalError, InputError, NotFoundError, StateError
from genos.ids import is_env_id
from genos.paths import data_dir
from genos.runtime import diskimage
from genos.runtime.diskimage import Format
from genos.runtime.images.locks import file_lock
from genos.spec import Name

_NAME: TypeAdapter[str] = TypeAdapter(Name)
_CHUNK = 1 << 20
SPARE_BYTES = 1 << 30  # left free on the store's file system after a copy
STALE_PART_SECONDS = 600


@dataclass(frozen=True)
class UserImage:
    """One registered image (a row of ``index.json``, plus where its file is)."""

    name: str
    digest: str
    format: Format
    size: int
    virtual_size: int
    added: float
    path: Path


class UserImages:
    """The registry under ``root`` (default ``<data dir>/images/user``), see the module doc."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root if root is not None else data_dir() / "images" / "user").absolute()

    # -- registering -----------------------------------------------------------

    def add(self, name: str, source: Path, fmt: str | None = None) -> UserImage:
        """Check ``source`` and keep a copy of it under ``name``.

        Args:
            name: an RFC 1123 label, like environment names.
            source: the qcow2 or ISO file.
            fmt: ``qcow2`` or ``iso``; default: what the file's bytes say.

        Returns:
            The registered image.

        Raises:
            InputError: a bad name or format, the name is taken, or the file is
                refused (see :mod:`genos.runtime.diskimage`); nothing is kept.
            CapabilityError: not root, or not enough space for the copy.
        """
        wanted = _format(fmt)
        _check_name(name)
        if name in self._index():
            raise InputError(f"a user image named {name!r} exists; remove it first")
        fd, size = diskimage.open_regular(source)
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        try:
            # Refused early from the source's first bytes, and checked again on
            # the copy: the file may change while it is read.
            diskimage.check_head(os.pread(fd, diskimage.HEAD_BYTES, 0), wanted, str(source))
            with self._writable():
                _remove_stale_parts(self.root / "tmp")
                _check_space(self.root, size)
                digest, head = _copy(fd, tmp)
                found = diskimage.check_head(head, wanted, str(source))
                facts = diskimage.inspect(tmp, found, str(source))
                return self._commit(name, tmp, digest, facts)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _commit(self, name: str, tmp: Path, digest: str, facts: diskimage.Facts) -> UserImage:
        with self._locked():
            index = self._index()
            if name in index:
                raise InputError(f"a user image named {name!r} exists; remove it first")
            final = self.root / f"{digest}.{facts.format}"
            if not final.exists():
                tmp.rename(final)
                _fsync_dir(self.root)
            image = UserImage(name, digest, facts.format, facts.size, facts.virtual_size,
                              time.time(), final)  # fmt: skip
            index[name] = image
            self._write_index(index)
        return image

    def rm(self, name: str) -> UserImage:
        """Forget ``name``; its file goes when no other name has the same content.

        Raises:
            NotFoundError: no such image.
            StateError: an environment uses it (their ids in the message).
        """
        with self._writable(), self._locked():
            index = self._index()
            image = self._pick(index, name)
            users = self._users_of(image.name)
            if users:
                busy = f"in use by {', '.join(users)}"
                raise StateError(busy, ["unused"], f"remove image {name}")
            del index[name]
            self._write_index(index)
            if all(other.digest != image.digest for other in index.values()):
                image.path.unlink(missing_ok=True)
        return image

    # -- reading ---------------------------------------------------------------

    def ls(self) -> list[UserImage]:
        """Every registered image, by name."""
        return sorted(self._index().values(), key=lambda image: image.name)

    def get(self, name: str) -> UserImage:
        """The image registered as ``name``.

        Raises:
            NotFoundError: no such image.
        """
        return self._pick(self._index(), name)

    def users(self, name: str) -> list[str]:
        """Ids of the environments on this host that use ``name``."""
        return self._users_of(name)

    # -- environments ----------------------------------------------------------

    def claim(self, name: str, env_id: str, dirs: Sequence[Path]) -> UserImage:
        """Record that ``env_id`` (whose files are ``dirs``) uses ``name``, until :meth:`release`.

        Raises:
            NotFoundError: no such image (say so before anything is built for it).
        """
        with self._writable(), self._locked():
            image = self._pick(self._index(), name)
            record = {"image": name, "digest": image.digest, "dirs": [str(d) for d in dirs]}
            path = self._user_path(env_id)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            _write_private(path, json.dumps(record))
        return image

    def release(self, env_id: str) -> None:
        """Forget that ``env_id`` uses an image (nothing if it used none)."""
        with contextlib.suppress(OSError):
            self._user_path(env_id).unlink(missing_ok=True)

    # -- helpers ---------------------------------------------------------------

    def _pick(self, index: dict[str, UserImage], name: str) -> UserImage:
        try:
            return index[name]
        except KeyError:
            raise NotFoundError("user image", name) from None

    def _users_of(self, name: str) -> list[str]:
        found = []
        with contextlib.suppress(OSError):
            for path in sorted((self.root / "users").glob("*.json")):
                try:
                    record = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                live = any(Path(d).exists() for d in record.get("dirs", []))
                if record.get("image") == name and live:
                    found.append(path.stem)
        return found

    def _user_path(self, env_id: str) -> Path:
        if not is_env_id(env_id):
            raise InputError(f"not an environment id: {env_id!r}")
        return self.root / "users" / f"{env_id}.json"

    def _index(self) -> dict[str, UserImage]:
        try:
            rows = json.loads((self.root / "index.json").read_text())["images"]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExternalError(f"the user image index {self.root / 'index.json'} is unreadable",
                                detail=str(exc)) from exc  # fmt: skip
        return {name: UserImage(path=self.root / f"{row['digest']}.{row['format']}", **row)
                for name, row in rows.items()}  # fmt: skip

    def _write_index(self, index: dict[str, UserImage]) -> None:
        rows = {}
        for name, image in sorted(index.items()):
            row = asdict(image)
            del row["path"]
            rows[name] = row
        tmp = self.root / "index.json.tmp"
        _write_private(tmp, json.dumps({"version": 1, "images": rows}, indent=1))
        tmp.replace(self.root / "index.json")
        _fsync_dir(self.root)

    @contextlib.contextmanager
    def _writable(self) -> Iterator[None]:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.root / "tmp").mkdir(mode=0o700, exist_ok=True)
            yield
        except PermissionError as exc:
            what = f"user images: permission denied ({exc.filename}); needs root"
            raise CapabilityError(what) from exc
        except OSError as exc:
            raise ExternalError(f"user images: {exc.strerror or exc} ({exc.filename})") from exc

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.root / ".lock")


def _format(fmt: str | None) -> Format | None:
    if fmt is None:
        return None
    for known in diskimage.FORMATS:
        if fmt == known:
            return known
    raise InputError(f"unknown image format {fmt!r}; choose {' or '.join(diskimage.FORMATS)}")


def _check_name(name: str) -> None:
    try:
        _NAME.validate_python(name)
    except ValidationError:
        raise InputError(
            f"bad image name {name!r}: lower-case letters, digits and '-', at most 63 characters"
        ) from None


def _check_space(root: Path, size: int) -> None:
    free = shutil.disk_usage(root).free
    if free < size + SPARE_BYTES:
        raise CapabilityError(
            f"not enough space in {root}: the copy needs {size / 2**30:.1f} GiB and "
            f"{SPARE_BYTES >> 30} GiB to spare, {free / 2**30:.1f} GiB are free"
        )


def _remove_stale_parts(tmp: Path) -> None:
    """Copies left by a killed ``add`` (a live copy's file changes all the time)."""
    for part in tmp.glob("*.part"):
        with contextlib.suppress(OSError):
            if time.time() - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()


def _copy(fd: int, target: Path) -> tuple[str, bytes]:
    """Copy the open file to ``target`` (created 0600); its sha256 and first bytes."""
    digest = hashlib.sha256()
    head = b""
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        while chunk := os.read(fd, _CHUNK):
            if len(head) < diskimage.HEAD_BYTES:
                head += chunk[: diskimage.HEAD_BYTES - len(head)]
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        os.fsync(out)
    finally:
        os.close(out)
    return digest.hexdigest(), head


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
