"""English words, from Debian's own word list (the ``wamerican`` package).

The composer needs to tell an English word ("birthday", "chair", "sketchy")
from a program's name ("htop", "neofetch") and from a slip of the keyboard
("libreofice"). ``genos catalog update`` takes ``/usr/share/dict/american-english``
out of the release's ``wamerican`` package, whose SHA256 the signed package
index vouches for, and caches the words with the release's programs.
"""

from __future__ import annotations

import io
import re
import tarfile

from genos.errors import IndexFetchError

PACKAGE = "wamerican"
_MEMBER = "usr/share/dict/american-english"
_WORD = re.compile(r"^[a-z][a-z-]*[a-z]$")


def locate(packages: str) -> tuple[str, str] | None:
    """The pool path and SHA256 of the word list package in a ``Packages`` text.

    Returns:
        ``(Filename, SHA256)``, or None when the release has no such package.
    """
    start = packages.find(f"Package: {PACKAGE}\n")
    if start < 0:
        return None
    stanza = packages[start : packages.find("\n\n", start)]
    fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
    if "Filename" not in fields or "SHA256" not in fields:
        return None
    return fields["Filename"], fields["SHA256"]


def words_of(deb: bytes) -> frozenset[str]:
    """The lower-cased words of the word list inside the ``.deb`` file ``deb``.

    Raises:
        IndexFetchError: the file is not a Debian package holding the word list.
    """
    data = _ar_member(deb, "data.tar")
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = next(m for m in tar.getmembers() if m.name.lstrip("./") == _MEMBER)
            raw = tar.extractfile(member)
            text = raw.read().decode("utf-8", errors="replace") if raw else ""
    except (tarfile.TarError, StopIteration, OSError) as exc:
        raise IndexFetchError(f"{PACKAGE}: no readable word list ({exc!r})") from exc
    out = set()
    for line in text.splitlines():
        word = line.strip().lower().removesuffix("'s")
        if _WORD.match(word):
            out.add(word)
    return frozenset(out)


def _ar_member(deb: bytes, prefix: str) -> bytes:
    """The first member of the ``ar`` archive ``deb`` whose name starts with ``prefix``."""
    if not deb.startswith(b"!<arch>\n"):
        raise IndexFetchError(f"{PACKAGE}: not a Debian package")
    pos = 8
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        name = header[:16].decode("ascii", errors="replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise IndexFetchError(f"{PACKAGE}: broken ar header") from exc
        if name.startswith(prefix):
            return deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + size % 2
    raise IndexFetchError(f"{PACKAGE}: no {prefix}* member")
