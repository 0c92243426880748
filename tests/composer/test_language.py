"""The language layer: clauses, negation triggers and their scope, hedges."""

from __future__ import annotations

import pytest

from genos.composer.language import Reading, read
from genos.composer.normalise import normalise


def reading(text: str) -> Reading:
    return read(normalise(text).text)


def negated_by(text: str, word: str) -> str | None:
    """The quote of the negation covering ``word`` in ``text``, or None."""
    r = reading(text)
    start = r.text.index(word)
    scope = r.negated(start, start + len(word))
    return scope.quote(r.text, start, start + len(word)) if scope else None


@pytest.mark.parametrize(
    ("text", "word", "quote"),
    [
        ("vlc, and it should not have internet", "internet", "should not have internet"),
        ("firefox but no internet", "internet", "no internet"),
        ("gimp - internet not needed", "internet", "internet not needed"),
        ("a desktop with audacity, networking disabled", "networking", "networking disabled"),
        ("internet: no. app: gimp", "internet", "internet: no"),
        ("internet off, gimp on", "internet", "internet off"),
        ("chromium instead of firefox", "firefox", "instead of firefox"),
        ("the clipboard shouldn't work either way", "clipboard", "the clipboard shouldn't"),
        ("network access isn't necessary", "network", "network access isn't necessary"),
        ("don't let it sync or go online", "online", "don't let it sync or go online"),
        ("without internet, clipboard or usb", "usb", "without internet, clipboard or usb"),
        ("i hate libreoffice", "libreoffice", "hate libreoffice"),
    ],
)
def test_negation_covers_what_it_is_about(text: str, word: str, quote: str) -> None:
    """Pre, post and answer triggers negate their words, quoted from trigger to mention."""
    assert negated_by(text, word) == quote


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("not firefox but chromium", "chromium"),
        ("no internet and firefox", "firefox"),
        ("no tor, regular internet, chromium", "internet"),
        ("not only gimp but also inkscape", "gimp"),
        ("i don't want to lose my work", "work"),
        ("nothing fancy, just firefox", "firefox"),
        ("firefox that doesn't go through tor", "firefox"),
        ("a microvm with no network where i can run a python script", "python"),
        ("i want inkscape and the machine must not reach the internet", "inkscape"),
        ("no browser please, just a terminal and htop", "htop"),
    ],
)
def test_scope_ends_where_the_negation_does(text: str, word: str) -> None:
    """Contrast words, new clauses, other kinds of item and pseudo-negations end a scope."""
    assert negated_by(text, word) is None


def test_a_name_is_read_whole() -> None:
    """Words of a catalog phrase are neither triggers nor boundaries ('so cat' is socat)."""
    text = "vi. i don't want so cat"
    start = text.index("so cat")
    plain = read(text)
    named = read(text, [(start, start + len("so cat"))])
    assert plain.negated(start, start + 6) is None
    assert named.negated(start, start + 6) is not None


def test_hedges_mark_what_the_request_is_unsure_of() -> None:
    """'maybe internet' is hedged, not asked for and not negated."""
    r = reading("gimp, maybe internet")
    start = r.text.index("internet")
    assert r.hedged(start, start + 8) is not None
    assert r.negated(start, start + 8) is None


def test_clauses_split_at_marks_contrast_and_new_subjects() -> None:
    """Sentence marks, commas, 'but' and 'and' before a new subject start clauses."""
    r = reading("Firefox. Gimp, and it should be offline but keep my files")
    assert [r.text[a:b].strip() for a, b in r.clauses] == [
        "firefox",
        "gimp",
        "it should be offline",
        "keep my files",
    ]


def test_an_and_after_a_negated_app_makes_the_scope_unsure() -> None:
    """Apps reached through 'and' are unsure; policy words reached so are simply negated."""
    apps = reading("firefox, not chromium and gimp")
    start = apps.text.index("gimp")
    scope = apps.negated(start, start + 4)
    assert scope is not None
    assert scope.unsure(start) is True
    assert scope.unsure(apps.text.index("chromium")) is False
    policy = reading("no internet and clipboard")
    start = policy.text.index("clipboard")
    scope = policy.negated(start, start + 9)
    assert scope is not None
    assert scope.unsure(start) is False
