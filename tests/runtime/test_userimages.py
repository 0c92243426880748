"""`genos images add | ls | rm` of user disk images: what is kept, what is refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from genos.errors import NotFoundError, StateError
from genos.ids import new_env_id
from genos.runtime.diskimage import MAX_BYTES
from genos.runtime.userimages import UserImages
from tests.runtime.diskimages import genos_cli, to_qcow2

pytestmark = [
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img"),
    pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso"),
]


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    """A real ISO 9660 image of one small file (xorriso)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello.txt").write_text("hello\n")
    target = tmp_path / "small.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(target), str(tree)],
                   capture_output=True, check=True, timeout=60)  # fmt: skip
    return target


@pytest.fixture
def qcow2(tmp_path: Path) -> Path:
    """A real, self-contained 64 MiB qcow2 image."""
    target = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(target), "64M"], check=True)
    return target


def store_files(data: Path) -> list[str]:
    """Every file under the user image store, relative, sorted."""
    root = data / "images" / "user"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_add_detects_formats_keeps_private_copies_and_ls_lists_them(
    tmp_path: Path, iso: Path, qcow2: Path
) -> None:
    """An ISO and a qcow2 are recognised by their bytes and kept as 0600 root files named by
    their sha256, with an index of name, digest, format and sizes; ls shows them."""
    data = tmp_path / "data"
    for name, path in (("small-iso", iso), ("blank-disk", qcow2)):
        done = genos_cli(data, "images", "add", name, str(path))
        assert done.returncode == 0, done.stderr
    root = data / "images" / "user"
    index = json.loads((root / "index.json").read_text())["images"]
    iso_digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    assert index["small-iso"]["digest"] == iso_digest
    assert (index["small-iso"]["format"], index["small-iso"]["size"]) == ("iso", iso.stat().st_size)
    assert index["small-iso"]["virtual_size"] == iso.stat().st_size
    assert (index["blank-disk"]["format"], index["blank-disk"]["virtual_size"]) == (
        "qcow2",
        64 << 20,
    )
    for path in (root / f"{iso_digest}.iso", root, root / "index.json"):
        mode = path.stat().st_mode & 0o777
        assert (oct(mode), path.stat().st_uid) == (("0o700" if path.is_dir() else "0o600"), 0)
    listed = genos_cli(data, "images", "ls").stdout
    assert "user images" in listed
    assert [word in listed for word in ("small-iso", "blank-disk", iso_digest[:12])] == [True] * 3


def test_same_content_under_two_names_is_one_file_until_both_are_removed(
    tmp_path: Path, iso: Path
) -> None:
    """Two names of one content share a file; rm of one keeps it, rm of the other deletes it."""
    data = tmp_path / "data"
    for name in ("one", "two"):
        assert genos_cli(data, "images", "add", name, str(iso)).returncode == 0
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    assert store_files(data) == [".lock", f"{digest}.iso", "index.json"]
    assert genos_cli(data, "images", "rm", "one").returncode == 0
    assert (data / "images" / "user" / f"{digest}.iso").exists()
    done = genos_cli(data, "images", "rm", "two")
    assert (done.returncode, done.stdout.strip()) == (0, f"removed user image two ({digest[:12]})")
    assert store_files(data) == [".lock", "index.json"]


def test_duplicate_name_and_unknown_name_are_one_line_errors(tmp_path: Path, iso: Path) -> None:
    """A taken name is refused (exit 2) without a trace; rm of an unknown name exits 1."""
    data = tmp_path / "data"
    assert genos_cli(data, "images", "add", "mine", str(iso)).returncode == 0
    before = store_files(data)
    done = genos_cli(data, "images", "add", "mine", str(iso))
    assert (done.returncode, done.stderr) == (
        2,
        "genos: a user image named 'mine' exists; remove it first\n",
    )
    assert store_files(data) == before
    done = genos_cli(data, "images", "rm", "nothing-here")
    assert (done.returncode, done.stderr) == (
        1,
        "genos: no layer or user image named 'nothing-here'\n",
    )


def refused_files(tmp_path: Path, iso: Path) -> list[tuple[list[str], str]]:
    """(arguments after `genos images add`, the message) for files that must be refused."""
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(200_000))
    empty = tmp_path / "empty.iso"
    empty.touch()
    secret = tmp_path / "secret"
    secret.write_text("host data\n")
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw",
                    str(backed)], check=True)  # fmt: skip
    external = tmp_path / "external.qcow2"
    data_file = f"data_file={tmp_path / 'external.raw'}"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", data_file, str(external),
                    "1M"], check=True)  # fmt: skip
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.qcow2"
    with huge.open("wb") as fh:
        fh.truncate(MAX_BYTES + 1)  # sparse: nothing is written
    return [
        (["junk", str(junk)], "is neither a qcow2 image nor an ISO 9660 image"),
        (["empty", str(empty)], "is empty"),
        (["dir", str(tmp_path)], "is not a regular file"),
        (["fifo", str(fifo)], "is not a regular file"),
        (["null", "/dev/null"], "is not a regular file"),
        (["backed", str(backed)], "has a backing file"),
        (["external", str(external)], "keeps its data in an external file"),
        (["huge", str(huge)], "the limit is 64 GiB"),
        (["wrong", str(iso), "--format", "qcow2"], "is an ISO 9660 image, not qcow2"),
        (["fmt", str(iso), "--format", "vmdk"], "unknown image format 'vmdk'"),
        (["Bad_Name", str(iso)], "bad image name 'Bad_Name'"),
        (["missing", str(tmp_path / "nope.iso")], "cannot read"),
    ]


def test_refused_files_leave_nothing_behind(tmp_path: Path, iso: Path) -> None:
    """Junk, empty, non-regular, backing-file, external-data and oversized files, a format
    that does not match and a bad name are refused in one line, exit 2, with nothing kept."""
    data = tmp_path / "data"
    for args, message in refused_files(tmp_path, iso):
        done = genos_cli(data, "images", "add", *args)
        assert (done.returncode, done.stderr.count("\n")) == (2, 1), (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert store_files(data) == [], args


def test_rm_is_refused_while_an_environment_uses_the_image(tmp_path: Path, iso: Path) -> None:
    """A claim whose environment dirs exist blocks rm; once they are gone it no longer does."""
    images = UserImages(tmp_path / "user")
    images.add("shared", iso)
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    env_id = new_env_id()
    images.claim("shared", env_id, [env_dir])
    assert images.users("shared") == [env_id]
    with pytest.raises(
        StateError, match=f"cannot remove image shared: state is in use by {env_id}"
    ):
        images.rm("shared")
    env_dir.rmdir()  # the environment was destroyed (or the host rebooted) without a release
    assert images.users("shared") == []
    images.rm("shared")
    with pytest.raises(NotFoundError, match="no user image named 'shared'"):
        images.claim("shared", env_id, [tmp_path])


def test_qcow2_of_a_qcow2_with_compression_is_accepted(tmp_path: Path, iso: Path) -> None:
    """A compressed qcow2 (made by qemu-img convert -c) is self-contained and accepted."""
    disk = to_qcow2(iso, tmp_path / "compressed.qcow2", "-c")
    image = UserImages(tmp_path / "user").add("compressed", disk)
    assert (image.format, image.virtual_size) == ("qcow2", iso.stat().st_size)
