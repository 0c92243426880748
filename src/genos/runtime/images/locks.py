"""``flock`` locks on files: one per layer digest, one for the shared apt cache.

A lock belongs to an open file description, so two threads of one process
exclude each other as two processes do, and a killed holder releases its
lock with its last file descriptor. Lock files are never deleted: deleting
one while another process waits on it would split the lock in two.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Busy(Exception):  # noqa: N818 - a state, as trio's WouldBlock
    """A non-blocking lock is held elsewhere."""


@contextmanager
def file_lock(path: Path, *, shared: bool = False, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive (or shared) ``flock`` on ``path`` for the ``with`` block.

    Args:
        path: the lock file (created if missing).
        shared: take a shared lock instead of an exclusive one.
        blocking: wait for the lock; otherwise raise :class:`Busy` at once.

    Raises:
        Busy: ``blocking`` is false and the lock is held elsewhere.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, flags if blocking else flags | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(str(path)) from None
        yield
    finally:
        os.close(fd)  # closing the description releases the lock
