"""Files in and out of a real environment (runc, user namespace): ownership, links, failures."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from genos.errors import ConflictError, NotFoundError
from genos.runtime import files
from tests.sandbox.probes import Env

pytestmark = [pytest.mark.root, pytest.mark.runc]
LIMIT = 1 << 20


async def chunks(*parts: bytes, fail_after: int | None = None) -> AsyncIterator[bytes]:
    """The parts in order; raises OSError after ``fail_after`` of them (a dropped client)."""
    for n, part in enumerate(parts):
        if fail_after is not None and n == fail_after:
            raise OSError("the client went away")
        yield part


def put(env: Env, name: str, *parts: bytes, fail_after: int | None = None) -> files.Stored:
    home = env.driver.home(env.env_id)
    return env.runner.run(files.upload(home, name, chunks(*parts, fail_after=fail_after), LIMIT))


def test_upload_lands_in_uploads_owned_by_the_env_user(env: Env) -> None:
    """An upload appears as ~/Uploads/<safe name>, owned by user:user inside, mode 644."""
    stored = put(env, "../../etc/motd", b"hello ", b"world")
    assert stored == files.Stored("motd", 11)
    assert env.sh("stat -c '%U:%G %a' ~/Uploads/motd ~/Uploads").stdout.split("\n")[:2] == [
        "user:user 644",
        "user:user 755",
    ]
    assert env.sh("cat ~/Uploads/motd").stdout == "hello world"
    assert "hello world" not in env.sh("cat /etc/motd 2>/dev/null").stdout


def test_a_failed_upload_leaves_no_file(env: Env) -> None:
    """A stream that breaks midway leaves nothing in ~/Uploads, not even a hidden part."""
    before = env.sh("ls -A ~/Uploads").stdout
    with pytest.raises(OSError, match="went away"):
        put(env, "broken.bin", b"a" * 1000, b"b" * 1000, fail_after=1)
    assert env.sh("ls -A ~/Uploads").stdout == before


def test_uploads_linked_elsewhere_is_refused(env: Env) -> None:
    """If the user makes ~/Uploads a link, the host refuses rather than follow it."""
    env.sh("mkdir -p ~/elsewhere && mv ~/Uploads ~/Uploads.old && ln -s ~/elsewhere ~/Uploads")
    try:
        with pytest.raises(ConflictError, match="not a directory"):
            put(env, "x.txt", b"x")
        assert env.sh("ls -A ~/elsewhere").stdout == ""
    finally:
        env.sh("rm ~/Uploads && mv ~/Uploads.old ~/Uploads")


def test_downloads_sends_the_users_files_and_no_links(env: Env) -> None:
    """~/Downloads: the user's files are listed and read; a link to a root file is neither."""
    env.sh("mkdir -p ~/Downloads && printf data > ~/Downloads/a.txt")
    env.sh("ln -s /etc/shadow ~/Downloads/shadow && ln -s / ~/Downloads/root")
    home = env.driver.home(env.env_id)
    assert [(e.name, e.size) for e in files.list_downloads(home)] == [("a.txt", 4)]
    fd, size = files.open_download(home, "a.txt", LIMIT)
    try:
        assert (size, os.read(fd, 100)) == (4, b"data")
    finally:
        os.close(fd)
    for name in ("shadow", "root", "../../etc/shadow", "missing"):
        with pytest.raises(NotFoundError):
            files.open_download(home, name, LIMIT)
