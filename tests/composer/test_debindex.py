"""Debian's package index: parsing, caching, suggestions, and a verified fetch."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from genos.composer import debindex, programs
from genos.errors import CatalogError, IndexFetchError

PACKAGES = """\
Package: fortune-mod
Version: 1:1.99.1-7.3
Provides: fortune
Description: provides fortune cookies on demand
 A long description line that is not kept.

Package: telegram-desktop
Version: 4.6.5+ds-2
Description: fast and secure messaging application

Package: gimp
Version: 2.10.34-1
Provides: gimp-data-extras (= 1), x-image-editor
Description: GNU Image Manipulation Program

Package: gimp-help-en
Version: 2.10.34-1
Description: Documentation for the GIMP (English)
"""


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GENOS_DATA_DIR", str(tmp_path))
    return tmp_path


def test_parse_keeps_versions_summaries_and_provides() -> None:
    """A Packages file parses to name -> (version, first description line) and providers."""
    index = debindex.parse(PACKAGES, "bookworm", "amd64")
    assert len(index) == 4
    assert index.packages["gimp"] == ("2.10.34-1", "GNU Image Manipulation Program")
    assert index.provides["fortune"] == ["fortune-mod"]
    assert index.provides["x-image-editor"] == ["gimp"]
    assert index.has("fortune") is False


def test_suggest_prefers_longer_names_then_near_spellings() -> None:
    """Suggestions list names extending the word first, then close misspellings only."""
    index = debindex.parse(PACKAGES, "bookworm", "amd64")
    assert index.suggest("telegram") == ["telegram-desktop"]
    assert index.suggest("gimpp") == ["gimp"]
    assert index.suggest("gimp") == ["gimp-help-en", "gimp"]
    assert index.suggest("zzzzqqq") == []


def test_cache_round_trip(data_dir: Path) -> None:
    """A stored index loads back equal, from the data directory."""
    index = debindex.parse(PACKAGES, "trixie", "amd64")
    debindex._store(index)
    loaded = debindex.load("trixie", "amd64")
    assert loaded.packages == index.packages
    assert loaded.provides == index.provides
    assert debindex.cache_path("trixie", "amd64").parent == data_dir / "catalog"


def test_missing_and_corrupt_cache_say_what_to_run(data_dir: Path) -> None:
    """No cache, or a broken one, is a CatalogError telling the user to update."""
    with pytest.raises(CatalogError, match="not cached; run `genos catalog update`"):
        debindex.load("bookworm", "amd64")
    path = debindex.cache_path("bookworm", "amd64")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not gzip")
    with pytest.raises(CatalogError, match="unreadable"):
        debindex.load("bookworm", "amd64")


@pytest.fixture
def fake_archive() -> Iterator[str]:
    """An HTTP server on loopback serving an unsigned InRelease."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"Origin: Debian\nSHA256:\n 00 1 main/binary-amd64/Packages.xz\n"
            self.send_response(200 if self.path.endswith("/InRelease") else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/debian"
    finally:
        server.shutdown()
        server.server_close()


def test_unsigned_release_is_refused(
    fake_archive: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An InRelease that Debian's keyring did not sign is refused and nothing is cached."""
    monkeypatch.setenv("GENOS_DEBIAN_MIRROR", fake_archive)
    with pytest.raises(IndexFetchError, match="failed its signature check"):
        debindex.update("bookworm", "amd64")
    assert not debindex.cache_path("bookworm", "amd64").exists()


def test_unreachable_mirror_is_an_index_fetch_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirror that does not answer (a closed loopback port) is an IndexFetchError."""
    monkeypatch.setenv("GENOS_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    with pytest.raises(IndexFetchError, match="cannot fetch"):
        debindex.update("bookworm", "amd64", timeout=5)


def test_mirror_comes_from_apt_sources_without_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without GENOS_DEBIAN_MIRROR the mirror is the host's apt source ending in /debian."""
    monkeypatch.delenv("GENOS_DEBIAN_MIRROR", raising=False)
    assert debindex.mirror().endswith("/debian")
    monkeypatch.setenv("GENOS_DEBIAN_MIRROR", "http://127.0.0.1:1/debian/")
    assert debindex.mirror() == "http://127.0.0.1:1/debian"


def test_an_index_without_program_data_counts_as_stale(data_dir: Path) -> None:
    """A package index cached without what its programs are for has no age: update it."""
    debindex._store(debindex.parse(PACKAGES, "trixie", "amd64"))
    assert debindex.age_seconds("trixie", "amd64") is None
    programs.store(programs.build(PACKAGES, release="trixie"), "amd64")
    age = debindex.age_seconds("trixie", "amd64")
    assert age is not None
    assert 0 <= age < 60
