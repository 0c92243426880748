"""Debian's own package index, fetched from the archive and cached.

``genos catalog update`` downloads ``dists/<release>/InRelease`` and
``main/binary-<arch>/Packages.xz`` from the mirror the host's apt uses (or
``GENOS_DEBIAN_MIRROR``), checks InRelease's signature with ``gpgv`` against
Debian's archive keyring and the Packages file against InRelease's SHA256,
and keeps a compact copy (name -> version, summary) under the data directory.
The same run fetches the long descriptions (``Translation-en``) and AppStream
data (``dep11``), checked the same way, and Debian's English word list
(``wamerican``, checked against the package index), and caches what they say
the programs are for (see ``programs``, ``wordlist``).
Lookups and close-name suggestions then run offline.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import itertools
import json
import logging
import lzma
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rapidfuzz import fuzz, process

from genos import aptsources
from genos.composer import programs, wordlist
from genos.errors import CatalogError, IndexFetchError
from genos.paths import data_dir

log = logging.getLogger("genos.composer.index")

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FORMAT = 1


@dataclass(frozen=True)
class PackageIndex:
    """One release's binary packages: name -> (version, one-line summary)."""

    release: str
    arch: str
    packages: dict[str, tuple[str, str]]
    provides: dict[str, list[str]] = field(default_factory=dict)
    fetched_at: float = 0.0

    def __contains__(self, name: object) -> bool:
        return name in self.packages

    def __len__(self) -> int:
        return len(self.packages)

    def has(self, name: str) -> bool:
        """True if ``name`` is a real binary package (not only a virtual one)."""
        return name in self.packages

    def summary(self, name: str) -> str:
        """The one-line description of ``name`` (empty if unknown)."""
        return self.packages[name][1] if name in self.packages else ""

    def suggest(self, word: str, limit: int = 5) -> list[str]:
        """Real package names close to ``word``, best first (empty when none is close).

        Names that extend it (``telegram`` -> ``telegram-desktop``) come first,
        shortest first; then names within a small edit distance.

        Args:
            word: what the user typed.
            limit: at most this many names.
        """
        query = word.strip().lower()
        if not query:
            return []
        names = self._names()
        start = bisect.bisect_left(names, query + "-")
        longer = sorted(
            itertools.takewhile(lambda n: n.startswith(query + "-"), names[start:]), key=len
        )[:limit]
        near = process.extract(query, names, scorer=fuzz.ratio, limit=limit, score_cutoff=80)
        found = [*longer, *(name for name, _score, _idx in near if name not in longer)]
        return found[:limit]

    def _names(self) -> list[str]:
        cached: list[str] | None = self.__dict__.get("_name_list")
        if cached is None:
            cached = sorted(self.packages)
            object.__setattr__(self, "_name_list", cached)
        return cached


def cache_path(release: str, arch: str) -> Path:
    """Where the index of ``release`` is cached."""
    return data_dir() / "catalog" / f"debian-{release}-main-{arch}.json.gz"


def host_arch() -> str:
    """Debian's name for this machine's architecture."""
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf"}.get(machine, machine)


def load(release: str, arch: str | None = None) -> PackageIndex:
    """Read the cached index of ``release``.

    Raises:
        CatalogError: when the index was never fetched or the cache is unreadable.
    """
    path = cache_path(release, arch or host_arch())
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise CatalogError(
            f"Debian's package index for {release} is not cached; run `genos catalog update`"
        ) from None
    except (OSError, ValueError, EOFError) as exc:
        raise CatalogError(
            f"cached index {path} is unreadable ({exc}); run `genos catalog update`"
        ) from exc
    if raw.get("format") != FORMAT:
        raise CatalogError(f"cached index {path} has an old format; run `genos catalog update`")
    packages = {name: (val[0], val[1]) for name, val in raw["packages"].items()}
    return PackageIndex(release, raw["arch"], packages, raw["provides"], raw["fetched_at"])


def age_seconds(release: str, arch: str | None = None) -> float | None:
    """Seconds since the cached index was written, or None if there is none.

    An index cached without what its programs are for (by an older GenOS, or
    in another format) counts as none, so ``--if-older-than`` fetches it again.
    """
    arch = arch or host_arch()
    try:
        if not programs.cache_path(release, arch).exists():
            return None
        return time.time() - cache_path(release, arch).stat().st_mtime
    except FileNotFoundError:
        return None


def mirror() -> str:
    """The Debian mirror to fetch from: ``GENOS_DEBIAN_MIRROR``, else the host's apt source.

    Raises:
        CatalogError: when neither names a Debian mirror.
    """
    configured = os.environ.get("GENOS_DEBIAN_MIRROR", "").strip()
    if configured:
        return configured.rstrip("/")
    found = aptsources.find(r"/debian/?$")
    if found:
        return found
    raise CatalogError("no Debian mirror in apt's sources; set GENOS_DEBIAN_MIRROR")


def update(release: str, arch: str | None = None, *, timeout: float = 120.0) -> PackageIndex:
    """Fetch, verify and cache the index of ``release``; returns it.

    Raises:
        IndexFetchError: the archive could not be reached, or what came back
            failed its signature or checksum.
    """
    arch = arch or host_arch()
    root = mirror()
    base = f"{root}/dists/{release}"
    member = f"main/binary-{arch}/Packages.xz"
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        signed = _verified(_get(client, f"{base}/InRelease"), release)
        text = _member(client, base, signed, member, release)
        # What the programs are for: optional, so a partial mirror still gives an index.
        long = _member(client, base, signed, "main/i18n/Translation-en.xz", release, required=False)
        dep11 = f"main/dep11/Components-{arch}.yml.xz"
        apps = _member(client, base, signed, dep11, release, required=False)
        english = _english(client, root, text, release)
    index = parse(text, release, arch)
    _store(index)
    found = programs.build(text, translations=long, dep11=apps, release=release, english=english)
    programs.store(found, arch)
    log.info("cached %d packages (%d programs) of %s/%s", len(index), len(found.programs),
             release, arch)  # fmt: skip
    return index


def _english(client: httpx.Client, root: str, packages: str, release: str) -> frozenset[str]:
    """English words from the release's word list package (empty when it is not there).

    The package's SHA256 comes from the ``Packages`` file InRelease vouched for.
    """
    found = wordlist.locate(packages)
    if found is None:
        log.warning("%s has no %s package; going on without English words", release,
                    wordlist.PACKAGE)  # fmt: skip
        return frozenset()
    path, expected = found
    blob = _get(client, f"{root}/{path}")
    if hashlib.sha256(blob).hexdigest() != expected:
        raise IndexFetchError(f"{release} {path}: checksum does not match the package index")
    return wordlist.words_of(blob)


def _member(
    client: httpx.Client,
    base: str,
    signed: str,
    member: str,
    release: str,
    *,
    required: bool = True,
) -> str:
    """One xz file of the release, checked against InRelease's SHA256, as text.

    Returns "" for a ``required=False`` member that InRelease does not list
    or the mirror does not serve.
    """
    try:
        expected = _sha256_of(signed, member, release)
        blob = _get(client, f"{base}/{member}")
    except IndexFetchError:
        if required:
            raise
        log.warning("%s %s is not available; going on without it", release, member)
        return ""
    if hashlib.sha256(blob).hexdigest() != expected:
        raise IndexFetchError(f"{release} {member}: checksum does not match InRelease")
    try:
        return lzma.decompress(blob).decode("utf-8", errors="replace")
    except lzma.LZMAError as exc:
        raise IndexFetchError(f"{release} {member}: not valid xz ({exc})") from exc


def _get(client: httpx.Client, url: str) -> bytes:
    try:
        response = client.get(url)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise IndexFetchError(f"cannot fetch {url}: {exc}") from exc
    return response.content


def _verified(inrelease: bytes, release: str) -> str:
    """InRelease's signed text, after gpgv checked it against Debian's keyring."""
    gpgv = shutil.which("gpgv")
    if gpgv is None or not KEYRING.exists():
        raise IndexFetchError("cannot verify InRelease: gpgv or debian-archive-keyring missing")
    with tempfile.NamedTemporaryFile(suffix=".gpg") as sig:
        sig.write(inrelease)
        sig.flush()
        done = subprocess.run(
            [gpgv, "--keyring", str(KEYRING), "--output", "-", sig.name],
            capture_output=True,
            check=False,
            timeout=60,
        )
    if done.returncode != 0:
        raise IndexFetchError(f"InRelease of {release} failed its signature check")
    return done.stdout.decode("utf-8", errors="replace")


def _sha256_of(release_text: str, member: str, release: str) -> str:
    in_sha = False
    for line in release_text.splitlines():
        if not line.startswith(" "):
            in_sha = line.startswith("SHA256:")
            continue
        parts = line.split()
        if in_sha and len(parts) == 3 and parts[2] == member:
            return parts[0]
    raise IndexFetchError(f"InRelease of {release} does not list {member}")


def parse(text: str, release: str, arch: str) -> PackageIndex:
    """Parse a Debian ``Packages`` file (deb822 stanzas) into an index."""
    packages: dict[str, tuple[str, str]] = {}
    provides: dict[str, set[str]] = {}
    for stanza in text.split("\n\n"):
        fields = _fields(stanza)
        name = fields.get("Package")
        if not name:
            continue
        packages[name] = (fields.get("Version", ""), fields.get("Description", "")[:160])
        for virtual in fields.get("Provides", "").split(","):
            vname = virtual.split("(")[0].strip()
            if vname:
                provides.setdefault(vname, set()).add(name)
    return PackageIndex(
        release, arch, packages, {k: sorted(v) for k, v in provides.items()}, time.time()
    )


def _fields(stanza: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t") or ":" not in line:
            continue  # continuation lines: only the first line of a field is kept
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _store(index: PackageIndex) -> None:
    path = cache_path(index.release, index.arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "release": index.release,
        "arch": index.arch,
        "fetched_at": index.fetched_at,
        "packages": {k: list(v) for k, v in index.packages.items()},
        "provides": index.provides,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".index-")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as fh:
            fh.write(json.dumps(payload, separators=(",", ":")).encode())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
