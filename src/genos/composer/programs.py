"""What Debian's packages are *for*: the archive's own words about its programs.

Three files of the archive describe a package beyond its one-line summary:

- ``main/binary-<arch>/Packages``: the ``Section`` and, for many packages,
  debtags (``Tag: use::editing, works-with::image:raster, role::program``);
- ``main/i18n/Translation-en``: the long description;
- ``main/dep11/Components-<arch>.yml``: AppStream data of desktop and console
  applications (their name, summary, keywords, freedesktop categories and
  the media types they open).

:func:`build` keeps what a task search needs about every *program* (not
libraries, documentation, data or plug-ins) and how many packages use each
word in their descriptions (so the composer can tell a rare program name
like ``htop`` from an English word like ``tree``). The result is cached
beside the package index (``*.programs.json.gz``) by ``genos catalog update``
and read offline from then on.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genos.errors import CatalogError
from genos.paths import data_dir

log = logging.getLogger("genos.composer.programs")
FORMAT = 2
_DESCRIPTION_CHARS = 700
# Roles that make a package something other than a program a person runs.
_NOT_PROGRAM_ROLES = frozenset(
    """
    role::shared-lib role::devel-lib role::documentation role::app-data role::data
    role::plugin role::debug-symbols role::dummy role::source role::examples role::kernel
    role::metapackage
    """.split()
)
# Sections of untagged packages that hold programs people ask for by task.
_PROGRAM_SECTIONS = frozenset(
    """
    graphics sound video editors games net web mail text math science electronics utils
    admin devel education hamradio x11 gnome kde xfce database comm misc interpreters
    news tex vcs otherosfs
    """.split()
)
_NOT_PROGRAM_NAME = re.compile(
    r"^(?:lib|python3?-|ruby-|node-|golang-|r-cran-|r-bioc-|r-other-|php-|perl-|elpa-|"
    r"haskell-|libghc-|ocaml-|rust-|cl-|octave-|gir1\.2-|fonts-|firmware-|linux-|texlive-lang)"
    r"|-(?:doc|dev|data|common|dbg|dbgsym|tests?|examples|l10n|dev-common)$"
)
_WORD = re.compile(r"[a-z][a-z0-9+#-]*[a-z0-9+#]|[a-z]")


@dataclass(frozen=True)
class Program:
    """One program of the archive and the words that say what it is for."""

    name: str
    summary: str
    section: str = ""
    tags: tuple[str, ...] = ()
    description: str = ""
    app_name: str = ""
    app_summary: str = ""
    keywords: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    mediatypes: tuple[str, ...] = ()
    desktop: bool = False


@dataclass(frozen=True)
class ProgramIndex:
    """One release's programs, and how many packages' descriptions use each word."""

    release: str
    programs: dict[str, Program]
    words_df: dict[str, int] = field(default_factory=dict)
    english: frozenset[str] = frozenset()

    def word_df(self, word: str) -> int:
        """How many packages use ``word`` in their description (0: a word none uses)."""
        return self.words_df.get(word, 0)


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """Parse deb822 text (``Packages``, ``Translation-en``) into field mappings.

    Continuation lines are kept, joined with newlines, without their leading space.
    """
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):
                if key is not None:
                    fields[key] += "\n" + line[1:]
                continue
            key, sep, value = line.partition(":")
            if not sep:
                key = None
                continue
            fields[key] = value.strip()
        if fields:
            yield fields


def build(
    packages: str,
    *,
    translations: str = "",
    dep11: str = "",
    release: str = "",
    english: frozenset[str] = frozenset(),
) -> ProgramIndex:
    """Select the programs of a release from the archive's three files.

    Args:
        packages: the text of ``Packages``.
        translations: the text of ``Translation-en`` (long descriptions), or "".
        dep11: the text of ``Components-<arch>.yml`` (AppStream), or "".
        release: the release's codename.
        english: English words (``wordlist``), kept with the programs.

    Returns:
        The programs, and how many packages' descriptions each word appears in.
    """
    apps = _dep11_apps(dep11) if dep11 else {}
    long = _long_descriptions(translations) if translations else {}
    programs: dict[str, Program] = {}
    df: Counter[str] = Counter()
    for fields in stanzas(packages):
        name = fields.get("Package", "")
        summary = fields.get("Description", "").partition("\n")[0]
        df.update(set(_WORD.findall(f"{summary} {long.get(name, '')}".lower())))
        tags = tuple(t.strip() for t in fields.get("Tag", "").replace("\n", " ").split(","))
        tags = tuple(t for t in tags if t)
        section = fields.get("Section", "").rpartition("/")[2]
        app = apps.get(name)
        if name and (app is not None or _is_program(name, tags, section)):
            programs[name] = _program(
                name,
                summary=summary,
                section=section,
                tags=tags,
                description=long.get(name, ""),
                app=app,
            )
    return ProgramIndex(release, programs, dict(df), english)


def _is_program(name: str, tags: tuple[str, ...], section: str) -> bool:
    if _NOT_PROGRAM_NAME.search(name):
        return False
    roles = {t for t in tags if t.startswith("role::")}
    if roles:
        return "role::program" in roles and not roles & _NOT_PROGRAM_ROLES
    return section in _PROGRAM_SECTIONS


def _program(
    name: str,
    *,
    summary: str,
    section: str,
    tags: tuple[str, ...],
    description: str,
    app: dict[str, Any] | None,
) -> Program:
    app = app or {}
    return Program(
        name=name,
        summary=summary,
        section=section,
        tags=tags,
        description=description[:_DESCRIPTION_CHARS],
        app_name=app.get("name", ""),
        app_summary=app.get("summary", ""),
        keywords=tuple(app.get("keywords", ())),
        categories=tuple(app.get("categories", ())),
        mediatypes=tuple(app.get("mediatypes", ())),
        desktop=app.get("desktop", False),
    )


def _long_descriptions(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for fields in stanzas(text):
        name = fields.get("Package")
        body = fields.get("Description-en", "").partition("\n")[2]
        if name and name not in out:
            # A lone "." is deb822's blank line inside a description.
            out[name] = " ".join(line for line in body.splitlines() if line.strip() != ".")
    return out


def _dep11_apps(text: str) -> dict[str, dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster
    out: dict[str, dict[str, Any]] = {}
    try:
        documents = list(yaml.load_all(text, Loader=loader))
    except yaml.YAMLError as exc:
        log.warning("AppStream data is not valid YAML, ignored: %s", exc)
        return out
    for doc in documents:
        if not isinstance(doc, dict) or not isinstance(doc.get("Package"), str):
            continue
        if doc.get("Type") not in ("desktop-application", "console-application"):
            continue
        entry = out.setdefault(doc["Package"], {"desktop": False})
        entry["desktop"] = entry["desktop"] or doc["Type"] == "desktop-application"
        entry.setdefault("name", _c(doc.get("Name")))
        entry.setdefault("summary", _c(doc.get("Summary")))
        keywords = _c(doc.get("Keywords"), [])
        entry["keywords"] = [*entry.get("keywords", []), *(str(k) for k in keywords)][:40]
        entry["categories"] = sorted({*entry.get("categories", []), *_strings(doc, "Categories")})
        provides = doc.get("Provides")
        listed = provides.get("mediatypes") if isinstance(provides, dict) else None
        media = [m for m in listed or [] if isinstance(m, str)]
        entry["mediatypes"] = sorted({*entry.get("mediatypes", []), *media})[:60]
    return out


def _c(value: Any, default: Any = "") -> Any:
    """The untranslated (``C``) form of an AppStream field."""
    if isinstance(value, dict):
        found = value.get("C")
        return found if found is not None else default
    return default


def _strings(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def cache_path(release: str, arch: str) -> Path:
    """Where what ``release``'s programs are for is cached (the name carries the format,
    so a cache of another format reads as missing)."""
    return data_dir() / "catalog" / f"debian-{release}-main-{arch}.programs-{FORMAT}.json.gz"


def store(index: ProgramIndex, arch: str) -> None:
    """Write ``index`` beside the package index (atomically)."""
    path = cache_path(index.release, arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "release": index.release,
        "programs": [_record(p) for p in index.programs.values()],
        "words_df": index.words_df,
        "english": sorted(index.english),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".programs-")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as fh:
            fh.write(json.dumps(payload, separators=(",", ":")).encode())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _record(p: Program) -> list[Any]:
    return [
        p.name, p.summary, p.section, list(p.tags), p.description, p.app_name,
        p.app_summary, list(p.keywords), list(p.categories), list(p.mediatypes), p.desktop,
    ]  # fmt: skip


def load(release: str, arch: str) -> ProgramIndex:
    """Read the cached programs of ``release``.

    Raises:
        CatalogError: never fetched, unreadable, or written by another format.
    """
    path = cache_path(release, arch)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise CatalogError(
            f"what Debian {release}'s programs are for is not cached; run `genos catalog update`"
        ) from None
    except (OSError, ValueError, EOFError) as exc:
        raise CatalogError(
            f"cached {path} is unreadable ({exc}); run `genos catalog update`"
        ) from exc
    if raw.get("format") != FORMAT:
        raise CatalogError(f"cached {path} has an old format; run `genos catalog update`")
    programs = {}
    for rec in raw["programs"]:
        name, summary, section, tags, desc, app_name, app_summary, kw, cats, media, desk = rec
        programs[name] = Program(
            name, summary, section, tuple(tags), desc, app_name, app_summary,
            tuple(kw), tuple(cats), tuple(media), bool(desk),
        )  # fmt: skip
    return ProgramIndex(raw["release"], programs, raw["words_df"], frozenset(raw["english"]))
