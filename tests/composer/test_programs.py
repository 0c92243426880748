"""What the archive says programs are for: parsing, program selection, the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from genos.composer import programs
from genos.errors import CatalogError

PACKAGES = """\
Package: gimp
Version: 2.10.34-1
Section: graphics
Description: GNU Image Manipulation Program
Tag: interface::graphical, interface::x11, role::program, use::editing,
 works-with::image, works-with::image:raster
Description-md5: 0c13253910a0a1bd77c64d38c07351a0

Package: libgimp2.0
Version: 2.10.34-1
Section: libs
Description: libraries for the GNU Image Manipulation Program
Tag: role::shared-lib

Package: htop
Version: 3.2.2-2
Section: utils
Description: interactive processes viewer

Package: gimp-help-en
Version: 2.10.34-1
Section: doc
Description: Documentation for the GIMP (English)
Tag: role::documentation

Package: gaupol
Version: 1.12-1
Section: video
Description: subtitle editor for text-based subtitle files
"""

TRANSLATIONS = """\
Package: gimp
Description-md5: 0c13253910a0a1bd77c64d38c07351a0
Description-en: GNU Image Manipulation Program
 GIMP is an advanced picture editor.
 .
 You can use it to edit, enhance, and retouch photos and scans.

Package: htop
Description-md5: 1
Description-en: interactive processes viewer
 Htop is an ncursed-based process viewer similar to top.
"""

DEP11 = """\
---
File: DEP-11
Version: '0.16'
---
Type: desktop-application
ID: org.gnome.Gaupol
Package: gaupol
Name:
  C: Gaupol
  fr: Gaupol
Summary:
  C: Edit text-based subtitle files
Categories:
- AudioVideo
- Video
Keywords:
  C:
  - subtitles
  - captions
Provides:
  mediatypes:
  - application/x-subrip
---
Type: addon
ID: gimp-extra
Package: gimp-help-en
Name:
  C: extra
"""


@pytest.fixture
def built() -> programs.ProgramIndex:
    return programs.build(PACKAGES, translations=TRANSLATIONS, dep11=DEP11, release="bookworm")


def test_programs_are_kept_and_libraries_and_docs_are_not(built: programs.ProgramIndex) -> None:
    """Tagged programs, untagged packages of program sections and AppStream apps are kept."""
    assert sorted(built.programs) == ["gaupol", "gimp", "htop"]


def test_tags_long_description_and_appstream_are_read(built: programs.ProgramIndex) -> None:
    """Debtags span continuation lines; '.' lines vanish; AppStream fields use their C form."""
    gimp, gaupol = built.programs["gimp"], built.programs["gaupol"]
    assert "works-with::image:raster" in gimp.tags
    assert gimp.description == (
        "GIMP is an advanced picture editor. You can use it to edit, enhance, and retouch "
        "photos and scans."
    )
    assert (gaupol.app_name, gaupol.app_summary) == ("Gaupol", "Edit text-based subtitle files")
    assert gaupol.keywords == ("subtitles", "captions")
    assert gaupol.categories == ("AudioVideo", "Video")
    assert gaupol.mediatypes == ("application/x-subrip",)
    assert gaupol.desktop is True


def test_word_counts_tell_names_from_words(built: programs.ProgramIndex) -> None:
    """Words are counted once per package over summaries and long descriptions."""
    assert built.word_df("subtitle") == 1
    assert built.word_df("manipulation") == 2
    assert built.word_df("neofetch") == 0


def test_cache_round_trip(
    built: programs.ProgramIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached programs load back equal, beside the package index."""
    monkeypatch.setenv("GENOS_DATA_DIR", str(tmp_path))
    programs.store(built, "amd64")
    loaded = programs.load("bookworm", "amd64")
    assert loaded.programs == built.programs
    assert loaded.words_df == built.words_df
    assert programs.cache_path("bookworm", "amd64").name == (
        f"debian-bookworm-main-amd64.programs-{programs.FORMAT}.json.gz"
    )


def test_missing_cache_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No cached programs is a CatalogError naming the command that fetches them."""
    monkeypatch.setenv("GENOS_DATA_DIR", str(tmp_path))
    with pytest.raises(CatalogError, match="run `genos catalog update`"):
        programs.load("trixie", "amd64")


def test_broken_appstream_is_ignored() -> None:
    """AppStream data that is not YAML leaves the programs of Packages alone."""
    found = programs.build(PACKAGES, dep11="key: [unclosed", release="bookworm")
    assert sorted(found.programs) == ["gaupol", "gimp", "htop"]
    assert found.programs["gaupol"].desktop is False
