"""The curated app catalog: its shipped data and the loader's validation."""

from __future__ import annotations

import re
from typing import Any

import pytest

from genos.composer import catalog, debindex
from genos.composer.catalog import Catalog
from genos.errors import CatalogError

RELEASES = ("bookworm", "trixie")

# Ordinary words that must never be an app's phrase: they turn up in
# sentences with another meaning ("tor" alone is handled by the composer).
ORDINARY_WORDS = (
    "code", "mail", "office", "terminal", "network", "internet", "browser", "editor",
    "video", "music", "files", "shell", "secure", "record", "recording", "desktop",
    "linux", "debian", "tor", "go", "screen", "word", "make", "volume", "signal",
)  # fmt: skip


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return catalog.load()


def _app(ident: str, **extra: Any) -> dict[str, Any]:
    return {"id": ident, "name": ident.title(), "packages": [ident], **extra}


def _phrase_owners(cat: Catalog) -> dict[str, tuple[str, str]]:
    return {phrase: (kind, ident) for phrase, kind, ident in cat.phrases()}


def test_shipped_catalog_has_enough_apps_and_categories(shipped: Catalog) -> None:
    """The shipped catalog loads with at least 80 installable apps and 15 categories."""
    available = [a for a in shipped.apps.values() if a.packages]
    assert len(available) >= 80
    assert len(shipped.categories) >= 15


def test_app_ids_are_lower_case_slugs(shipped: Catalog) -> None:
    """Every app id is made only of lower-case letters, digits and hyphens."""
    bad = [i for i in shipped.apps if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", i)]
    assert bad == []


@pytest.mark.network
@pytest.mark.parametrize("release", RELEASES)
def test_every_catalog_package_is_in_debian(shipped: Catalog, release: str) -> None:
    """Every package of every available app exists in that release's real Debian index."""
    index = debindex.load(release)
    missing = sorted(
        f"{app.id}:{pkg}"
        for app in shipped.apps.values()
        if not app.unavailable
        for pkg in app.packages_for(release)
        if not index.has(pkg)
    )
    assert missing == []


@pytest.mark.network
@pytest.mark.parametrize("release", RELEASES)
def test_unavailable_app_ids_are_not_debian_packages(shipped: Catalog, release: str) -> None:
    """No app marked unavailable has an id that is a real package of the release."""
    index = debindex.load(release)
    shadowing = sorted(a.id for a in shipped.apps.values() if a.unavailable and index.has(a.id))
    assert shadowing == []
    assert index.has("vscode") is False


def test_unavailable_apps_offer_available_alternatives(shipped: Catalog) -> None:
    """Each unavailable app has no packages, a reason, and installable alternatives."""
    unavailable = [a for a in shipped.apps.values() if a.unavailable]
    assert len(unavailable) >= 10
    problems = [
        f"{app.id}->{alt}"
        for app in unavailable
        for alt in app.alternatives
        if alt not in shipped.apps or shipped.apps[alt].unavailable is not None
    ]
    assert problems == []
    assert [a.id for a in unavailable if not a.alternatives or a.packages] == []


def test_vscode_is_unavailable_with_editor_alternatives(shipped: Catalog) -> None:
    """'vs code' names the unavailable Visual Studio Code, whose stand-ins are real editors."""
    assert _phrase_owners(shipped)["vs code"] == ("app", "vscode")
    vscode = shipped.apps["vscode"]
    assert vscode.packages == ()
    assert vscode.unavailable == "Visual Studio Code is not in Debian's archive"
    assert vscode.alternatives == ("geany", "kate", "emacs", "neovim")


@pytest.mark.parametrize("release", RELEASES)
def test_tor_browser_is_firefox_over_tor(shipped: Catalog, release: str) -> None:
    """Tor Browser resolves to the tor daemon plus Firefox ESR, forcing network mode tor."""
    app = shipped.apps["tor-browser"]
    assert app.packages_for(release) == ("tor", "firefox-esr")
    assert app.network_mode == "tor"
    assert app.command == "firefox-esr"
    assert app.network is True
    assert "torbrowser-launcher is in contrib" in app.note


def test_keepassxc_uses_the_trixie_package_name(shipped: Catalog) -> None:
    """KeePassXC installs keepassxc on bookworm and keepassxc-full on trixie."""
    app = shipped.apps["keepassxc"]
    assert app.packages_for("bookworm") == ("keepassxc",)
    assert app.packages_for("trixie") == ("keepassxc-full",)


def test_category_phrases_and_aliases_resolve(shipped: Catalog) -> None:
    """Spot checks: generic phrases name categories, alias phrases name apps."""
    owners = _phrase_owners(shipped)
    assert owners["photo editor"] == ("category", "photo-editor")
    assert shipped.categories["photo-editor"].default == "gimp"
    assert owners["libre office"] == ("app", "libreoffice")
    assert owners["ff"] == ("app", "firefox")
    assert owners["gnu image manipulation program"] == ("app", "gimp")
    assert owners["pdf viewer"] == ("category", "pdf-reader")
    assert shipped.categories["pdf-reader"].default == "evince"
    assert owners["chrome"] == ("app", "google-chrome")
    assert shipped.apps["google-chrome"].alternatives == ("chromium",)


def test_browser_category_has_no_default(shipped: Catalog) -> None:
    """Asking for 'a browser' offers Firefox and Chromium and picks neither by itself."""
    browser = shipped.categories["browser"]
    assert browser.default is None
    assert browser.options[:2] == ("firefox", "chromium")
    assert _phrase_owners(shipped)["web browser"] == ("category", "browser")


def test_every_default_says_why(shipped: Catalog) -> None:
    """Every category with a default explains the choice in its 'why'."""
    assert [c.id for c in shipped.categories.values() if c.default and not c.why.strip()] == []


def test_no_app_claims_an_ordinary_word(shipped: Catalog) -> None:
    """No app owns a phrase that is an ordinary English word with another meaning."""
    owners = _phrase_owners(shipped)
    claimed = sorted(w for w in ORDINARY_WORDS if owners.get(w, ("", ""))[0] == "app")
    assert claimed == []


def test_parse_rejects_a_repeated_id() -> None:
    """Two apps with the same id are refused."""
    doc = {"apps": [_app("gimp"), _app("gimp")]}
    with pytest.raises(CatalogError, match="app id 'gimp' appears twice"):
        catalog.parse(doc)


def test_parse_rejects_a_shared_phrase() -> None:
    """A phrase that belongs to two apps is refused."""
    doc = {"apps": [_app("gimp", aliases=["paint"]), _app("krita", aliases=["Paint"])]}
    with pytest.raises(CatalogError, match="phrase 'paint' belongs to app:gimp and app:krita"):
        catalog.parse(doc)


def test_parse_rejects_an_app_name_clashing_with_another_apps_alias() -> None:
    """An app's lower-cased name counts as a phrase and may not be another app's alias."""
    doc = {"apps": [_app("firefox", name="Web"), _app("chromium", aliases=["web"])]}
    with pytest.raises(CatalogError, match="phrase 'web' belongs to app:firefox and app:chromium"):
        catalog.parse(doc)


def test_parse_rejects_an_app_without_packages_or_reason() -> None:
    """An app with no packages must say why it is unavailable."""
    doc = {"apps": [_app("vscode", packages=[])]}
    with pytest.raises(CatalogError, match="vscode has no packages and no 'unavailable' reason"):
        catalog.parse(doc)


def test_parse_rejects_a_category_naming_an_unknown_app() -> None:
    """A category whose options or default are not apps of the catalog is refused."""
    doc = {
        "apps": [_app("gimp")],
        "categories": [{"id": "photo-editor", "phrases": ["photo editor"], "options": ["gimp"],
                        "default": "photoshop", "why": "none"}],
    }  # fmt: skip
    with pytest.raises(CatalogError, match=r"photo-editor names unknown apps \['photoshop'\]"):
        catalog.parse(doc)


def test_parse_accepts_an_unavailable_app_with_alternatives() -> None:
    """A minimal valid document parses into apps, categories and lower-cased phrases."""
    doc = {
        "apps": [
            _app("gimp", aliases=["GNU Image Manipulation Program"]),
            {"id": "photoshop", "name": "Photoshop", "unavailable": "not in Debian",
             "alternatives": ["gimp"]},
        ],
        "categories": [{"id": "photo-editor", "phrases": ["Photo Editor"], "options": ["gimp"]}],
    }  # fmt: skip
    parsed = catalog.parse(doc)
    assert parsed.apps["photoshop"].packages == ()
    assert parsed.apps["photoshop"].alternatives == ("gimp",)
    assert parsed.categories["photo-editor"].phrases == ("photo editor",)
    assert _phrase_owners(parsed)["gnu image manipulation program"] == ("app", "gimp")
