"""The curated catalog: common apps, their aliases, and the Debian packages they need.

``data/catalog.yaml`` holds two lists:

- ``apps``: one entry per app (``id``, ``name``, ``aliases``, ``packages``,
  ``category``, ``network`` = needs the network to be useful, optional
  ``command`` the session starts, optional ``releases`` overriding packages
  per release). An app Debian does not ship has no packages, an
  ``unavailable`` reason and ``alternatives`` (ids of apps Debian does ship).
  ``network_mode`` forces a network mode (Tor Browser -> ``tor``); ``note``
  is told to the user in the rationale (what Debian really offers);
  ``min_tier`` is the weakest isolation tier the app can run in (Docker needs
  a kernel of its own: ``vm``); ``keywords`` are words for the tasks it does
  ("podcast", "voice-over"), used by the task search only, never matched as names.
- ``categories``: generic phrases ("a browser", "pdf reader") with the app ids
  that answer them, and a ``default`` only where one is clearly better
  (``why`` says so); otherwise the composer asks. Their ``keywords`` too feed
  the task search only.
- ``formats``: file-format words ("pdf", "mp3s") and the category that opens
  them, for requests that only open, read or play files.

Every alias is matched as a whole phrase of lower-case words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from genos.errors import CatalogError


@dataclass(frozen=True)
class CatalogApp:
    id: str
    name: str
    aliases: tuple[str, ...]
    packages: tuple[str, ...]
    category: str
    network: bool = False
    command: str | None = None
    releases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unavailable: str | None = None
    alternatives: tuple[str, ...] = ()
    network_mode: str | None = None
    note: str = ""
    min_tier: str | None = None
    keywords: tuple[str, ...] = ()

    def packages_for(self, release: str) -> tuple[str, ...]:
        """The packages this app needs on ``release``."""
        return self.releases.get(release, self.packages)


@dataclass(frozen=True)
class Category:
    id: str
    phrases: tuple[str, ...]
    options: tuple[str, ...]
    default: str | None = None
    why: str = ""
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    apps: dict[str, CatalogApp]
    categories: dict[str, Category]
    formats: dict[str, str] = field(default_factory=dict)  # file-format word -> category id

    def phrases(self) -> Iterable[tuple[str, str, str]]:
        """Every matchable phrase as ``(phrase, kind, id)``, kind ``app`` or ``category``."""
        for app in self.apps.values():
            for alias in (app.id, app.name.lower(), *app.aliases):
                yield alias, "app", app.id
        for cat in self.categories.values():
            for phrase in cat.phrases:
                yield phrase, "category", cat.id


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CatalogError(f"catalog: expected a list of strings, got {value!r}")
    return tuple(value)


def parse(doc: Any) -> Catalog:
    """Build a catalog from the decoded YAML document.

    Args:
        doc: the decoded ``catalog.yaml``.

    Returns:
        The catalog.

    Raises:
        CatalogError: on a malformed entry, a repeated id or alias, a category
            naming an unknown app, or a format naming an unknown category.
    """
    if not isinstance(doc, dict):
        raise CatalogError("catalog: top level must be a mapping")
    apps: dict[str, CatalogApp] = {}
    for raw in doc.get("apps") or []:
        app = _app(raw)
        if app.id in apps:
            raise CatalogError(f"catalog: app id {app.id!r} appears twice")
        apps[app.id] = app
    categories: dict[str, Category] = {}
    for raw in doc.get("categories") or []:
        cat = _category(raw)
        unknown = [o for o in (*cat.options, *filter(None, [cat.default])) if o not in apps]
        if unknown:
            raise CatalogError(f"catalog: category {cat.id} names unknown apps {unknown}")
        categories[cat.id] = cat
    _check_unique_phrases(Catalog(apps, categories))
    return Catalog(apps, categories, _formats(doc.get("formats") or [], categories))


def _app(raw: Any) -> CatalogApp:
    try:
        app = CatalogApp(
            id=raw["id"],
            name=raw["name"],
            aliases=tuple(a.lower() for a in _tuple(raw.get("aliases"))),
            packages=_tuple(raw.get("packages")),
            category=raw.get("category", "other"),
            network=bool(raw.get("network", False)),
            command=raw.get("command"),
            releases={k: _tuple(v) for k, v in (raw.get("releases") or {}).items()},
            unavailable=raw.get("unavailable"),
            alternatives=_tuple(raw.get("alternatives")),
            network_mode=raw.get("network_mode"),
            note=raw.get("note", ""),
            min_tier=raw.get("min_tier"),
            keywords=tuple(k.lower() for k in _tuple(raw.get("keywords"))),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise CatalogError(f"catalog: malformed app entry {raw!r}: {exc}") from exc
    if not app.packages and not app.unavailable:
        raise CatalogError(f"catalog: {app.id} has no packages and no 'unavailable' reason")
    return app


def _category(raw: Any) -> Category:
    try:
        return Category(
            id=raw["id"],
            phrases=tuple(p.lower() for p in _tuple(raw["phrases"])),
            options=_tuple(raw["options"]),
            default=raw.get("default"),
            why=raw.get("why", ""),
            keywords=tuple(k.lower() for k in _tuple(raw.get("keywords"))),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise CatalogError(f"catalog: malformed category entry {raw!r}: {exc}") from exc


def _formats(raw: Any, categories: dict[str, Category]) -> dict[str, str]:
    """``formats``: which category opens a file format (word -> category id).

    Raises:
        CatalogError: on a malformed entry or an unknown category.
    """
    out: dict[str, str] = {}
    for entry in raw:
        if not isinstance(entry, dict) or entry.get("category") not in categories:
            raise CatalogError(f"catalog: format entry {entry!r} names no known category")
        for word in _tuple(entry.get("words")):
            out[word.lower()] = entry["category"]
    return out


def _check_unique_phrases(catalog: Catalog) -> None:
    seen: dict[str, str] = {}
    for phrase, kind, ident in catalog.phrases():
        owner = f"{kind}:{ident}"
        if seen.setdefault(phrase, owner) != owner:
            raise CatalogError(f"catalog: phrase {phrase!r} belongs to {seen[phrase]} and {owner}")


@cache
def load() -> Catalog:
    """The catalog shipped with GenOS (parsed once per process)."""
    text = resources.files("genos.composer").joinpath("data/catalog.yaml").read_text("utf-8")
    return parse(yaml.safe_load(text))
