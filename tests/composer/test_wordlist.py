"""Debian's English word list: found in the package index, read out of its .deb."""

from __future__ import annotations

import io
import lzma
import tarfile

import pytest

from genos.composer import wordlist
from genos.errors import IndexFetchError


def ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def deb_with(words: str) -> bytes:
    """A minimal Debian package holding /usr/share/dict/american-english."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        body = words.encode()
        info = tarfile.TarInfo("./usr/share/dict/american-english")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    data = lzma.compress(raw.getvalue())
    return b"!<arch>\n" + ar_member("debian-binary", b"2.0\n") + ar_member("data.tar.xz", data)


def test_words_are_lower_cased_without_possessives() -> None:
    """Words fold to lower case; possessives and non-words are dropped."""
    deb = deb_with("Apple\napple's\nBirthday\nx\nO'Neil\ntree\n")
    assert wordlist.words_of(deb) == frozenset({"apple", "birthday", "tree"})


def test_a_file_that_is_not_a_package_is_refused() -> None:
    """Bytes that are no ar archive are an IndexFetchError, not a crash."""
    with pytest.raises(IndexFetchError, match="not a Debian package"):
        wordlist.words_of(b"<html>not found</html>")


def test_the_package_is_located_in_the_index() -> None:
    """The pool path and SHA256 come from the (signed) Packages text."""
    packages = (
        "Package: vim\nFilename: pool/main/v/vim/vim.deb\nSHA256: 11\n\n"
        "Package: wamerican\nVersion: 1\nFilename: pool/main/s/scowl/wamerican_1_all.deb\n"
        "SHA256: abc\n\n"
    )
    assert wordlist.locate(packages) == ("pool/main/s/scowl/wamerican_1_all.deb", "abc")
    assert wordlist.locate("Package: vim\n\n") is None
