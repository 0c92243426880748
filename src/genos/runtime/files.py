"""Files in and out of an environment's home: ``~/Uploads`` and ``~/Downloads``.

The host writes and reads the environment user's home from outside, through
the directory the driver names (:class:`HomeDir`), and trusts nothing below
it: every step is an ``openat`` relative to the directory before with
``O_NOFOLLOW``, so a symlink anywhere (``~/Uploads`` itself, a file in
``~/Downloads``) is refused, never followed, and no name can leave the
directory (names are sanitised to one path component first). An upload is
written to a hidden temporary file owned by the environment's user, then
linked under its final name without replacing anything (``name (1).ext``
when the name is taken); whatever fails, the temporary file is removed, so a
failed transfer leaves no partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from genos.errors import CapabilityError, ConflictError, InputError, NotFoundError

UPLOADS = "Uploads"
DOWNLOADS = "Downloads"
MAX_NAME_BYTES = 255
PART_PREFIX = ".genos-upload-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TooLargeError(InputError):
    """More bytes than the limit allows."""

    code = "too_large"


@dataclass(frozen=True)
class HomeDir:
    """The environment user's home as the host sees it.

    Attributes:
        anchor: a directory the host trusts (the env's root, or its volume's mount).
        parts: the path from ``anchor`` to the home, each step opened without following links.
        uid: the environment user's uid on the host (after the user namespace's mapping).
        gid: its gid on the host.
    """

    anchor: Path
    parts: tuple[str, ...]
    uid: int
    gid: int


@dataclass(frozen=True)
class Stored:
    """A file that crossed: its final name and size."""

    name: str
    size: int


@dataclass(frozen=True)
class Entry:
    """A regular file in ``~/Downloads``."""

    name: str
    size: int
    modified: float


def safe_name(raw: str) -> str:
    """One harmless path component from a name a client sent.

    Directory parts (``/`` or ``\\``) are dropped, control characters removed,
    leading dots and spaces stripped (no hidden files, no ``..``), Unicode
    normalised (NFC), and the result cut to 255 bytes of UTF-8.

    Args:
        raw: the client's name.

    Returns:
        The name to use.

    Raises:
        InputError: nothing usable is left.
    """
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip().lstrip(". ").rstrip()
    while len(name.encode()) > MAX_NAME_BYTES:
        name = name[:-1]
    if not name or name.startswith(PART_PREFIX):
        raise InputError(f"not a usable file name: {raw[:80]!r}")
    return name


@contextlib.contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _open_dir(home: HomeDir, name: str, *, create: bool) -> int:
    """Open ``home/name`` step by step, never following a link; create it if asked."""
    fd = os.open(home.anchor, _DIR_FLAGS)
    try:
        for part in (*home.parts, name):
            if create and part == name:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.chown(part, home.uid, home.gid, dir_fd=fd, follow_symlinks=False)
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise NotFoundError("directory", f"~/{name}") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ConflictError(f"~/{name} is not a directory (a link?)") from None
                raise
            os.close(fd)
            fd = nxt
        _check_owner(fd, home, name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_owner(fd: int, home: HomeDir, name: str) -> None:
    if os.fstat(fd).st_uid != home.uid:
        raise ConflictError(f"~/{name} does not belong to the environment's user")


def _candidates(name: str) -> Iterator[str]:
    yield name
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(1, 1000):
        yield f"{stem} ({n}){dot}{ext}"


def _publish(dir_fd: int, part: str, name: str) -> str:
    """Link ``part`` under the first free candidate of ``name`` (never replacing a file)."""
    for candidate in _candidates(name):
        try:
            os.link(part, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            continue
        return candidate
    raise ConflictError(f"too many files named like {name!r} in ~/{UPLOADS}")


async def upload(
    home: HomeDir, raw_name: str, chunks: AsyncIterator[bytes], max_bytes: int
) -> Stored:
    """Write a stream into ``~/Uploads`` as the environment's user.

    Args:
        home: the environment's home.
        raw_name: the name the client gave (sanitised here).
        chunks: the file's bytes.
        max_bytes: the most it may hold.

    Returns:
        The final name (a free variant of the sanitised one) and the size.

    Raises:
        InputError: a name that sanitises to nothing.
        TooLargeError: more than ``max_bytes``.
        ConflictError: ``~/Uploads`` is a link, not a directory, or not the user's.
    """
    name = safe_name(raw_name)
    dir_fd = _open_dir(home, UPLOADS, create=True)
    part = f"{PART_PREFIX}{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    size = 0
    try:
        with _fd(dir_fd), _fd(os.open(part, flags, 0o644, dir_fd=dir_fd)) as fd:
            try:
                os.fchown(fd, home.uid, home.gid)
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLargeError(f"the file is larger than {max_bytes} bytes")
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                await asyncio.to_thread(os.fsync, fd)
                final = _publish(dir_fd, part, name)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TooLargeError("the environment's disk is full") from exc
        raise
    return Stored(final, size)


def list_downloads(home: HomeDir) -> list[Entry]:
    """The user's regular files directly in ``~/Downloads`` (links, folders, others' left out).

    Args:
        home: the environment's home.

    Returns:
        Entries sorted by name; none when ``~/Downloads`` does not exist.

    Raises:
        ConflictError: ``~/Downloads`` is a link, not a directory, or not the user's.
    """
    try:
        dir_fd = _open_dir(home, DOWNLOADS, create=False)
    except NotFoundError:
        return []
    entries = []
    with _fd(dir_fd):
        for name in os.listdir(dir_fd):  # noqa: PTH208 - by descriptor, not by path
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if _sendable(st, home) and not name.startswith(PART_PREFIX):
                entries.append(Entry(name, st.st_size, st.st_mtime))
    return sorted(entries, key=lambda e: e.name)


def _sendable(st: os.stat_result, home: HomeDir) -> bool:
    """A regular file of the environment's user: the host reads as root, so a hard link
    to a file the user may not read must not go out."""
    return stat.S_ISREG(st.st_mode) and st.st_uid == home.uid


def open_download(home: HomeDir, raw_name: str, max_bytes: int) -> tuple[int, int]:
    """Open one regular file of ``~/Downloads`` for reading, never through a link.

    Args:
        home: the environment's home.
        raw_name: the file's name, exactly as listed.
        max_bytes: the most a download may be.

    Returns:
        An open file descriptor (the caller closes it) and the file's size.

    Raises:
        NotFoundError: no such regular file of the environment's user (links,
            directories, devices, others' files and names that are not one
            plain component count as none).
        TooLargeError: larger than ``max_bytes``.
    """
    if raw_name != safe_name(raw_name):
        raise NotFoundError("file", f"~/{DOWNLOADS}/{raw_name[:80]}")
    with _fd(_open_dir(home, DOWNLOADS, create=False)) as dir_fd:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(raw_name, flags, dir_fd=dir_fd)
        except OSError:
            raise NotFoundError("file", f"~/{DOWNLOADS}/{raw_name}") from None
    st = os.fstat(fd)
    if not _sendable(st, home):
        os.close(fd)
        raise NotFoundError("file", f"~/{DOWNLOADS}/{raw_name}")
    if st.st_size > max_bytes:
        os.close(fd)
        raise TooLargeError(f"the file is larger than {max_bytes} bytes")
    return fd, st.st_size


def home_of(driver: object, env_id: str) -> HomeDir:
    """Ask the driver that holds ``env_id`` where its home is.

    Args:
        driver: the engine's driver (a router is asked for the holder's).
        env_id: the environment.

    Returns:
        Its home.

    Raises:
        CapabilityError: the driver cannot reach homes from the host (VMs, clusters).
    """
    holder = getattr(driver, "_holder", None)
    if holder is not None:
        driver = holder(env_id)
    home = getattr(driver, "home", None)
    if home is None:
        raise CapabilityError("moving files is offered for container environments only")
    found: HomeDir = home(env_id)
    return found
