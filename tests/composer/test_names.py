"""Names in a request: exact Debian packages, spelling slips, negated names."""

from __future__ import annotations

import pytest

from genos.composer import Clarification, Composed, Result, compose
from genos.composer.knowledge import HostLimits, Knowledge
from genos.composer.spelling import Speller

pytestmark = pytest.mark.network  # names are checked against Debian's cached index


def packages(result: Result) -> list[str]:
    assert isinstance(result, Composed | Clarification), result
    spec = result.spec if isinstance(result, Composed) else result.draft
    return spec.packages


def rationale(result: Result, field: str) -> str:
    assert isinstance(result, Composed), result
    return next(d.rationale for d in result.spec.provenance.decisions if d.field == field)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (
            "firefox plus the package fonts-noto-color-emoji",
            ["firefox-esr", "fonts-noto-color-emoji"],
        ),
        ("apt install build-essential gdb valgrind", ["build-essential", "gdb", "valgrind"]),
        ("packages: python3-numpy, python3-scipy", ["python3-numpy", "python3-scipy"]),
        ("neofetch", ["neofetch"]),
        ("debian with the package sl", ["sl"]),
    ],
)
def test_exact_package_names_are_installed_as_named(
    prompt: str, expected: list[str], kb: Knowledge, host: HostLimits
) -> None:
    """A named package, a package-shaped word, or a rare real name is installed as it is."""
    assert packages(compose(prompt, knowledge=kb, host=host)) == expected


def test_the_rationale_quotes_the_package_words(kb: Knowledge, host: HostLimits) -> None:
    """'the package X' is quoted as the user wrote it."""
    result = compose("firefox plus the package fonts-noto-color-emoji", knowledge=kb, host=host)
    assert rationale(result, "apps.fonts-noto-color-emoji").startswith(
        "You named 'the package fonts-noto-color-emoji': installed as named ("
    )


@pytest.mark.parametrize(
    "prompt", ["want to make a birthday card", "a linux box for my family tree", "spin up a vm"]
)
def test_english_words_are_not_package_names(prompt: str, kb: Knowledge, host: HostLimits) -> None:
    """'birthday', 'tree', 'spin' are Debian packages and English words: never taken as names."""
    got = set(packages(compose(prompt, knowledge=kb, host=host)))
    assert got & {"birthday", "tree", "spin"} == set()


@pytest.mark.parametrize(
    ("prompt", "typed", "expected"),
    [
        ("libreofice writer", "libreofice", "libreoffice-writer"),
        ("thunderbrid for my mail", "thunderbrid", "thunderbird"),
        ("inkscpae", "inkscpae", "inkscape"),
        ("vlcc", "vlcc", "vlc"),
    ],
)
def test_a_slip_is_read_as_the_name_and_quoted(
    prompt: str, typed: str, expected: str, kb: Knowledge, host: HostLimits
) -> None:
    """One slip from a catalog name reads as that name; the rationale quotes what was typed."""
    result = compose(prompt, knowledge=kb, host=host)
    assert expected in packages(result)
    assert isinstance(result, Composed)
    told = " ".join(d.rationale for d in result.spec.provenance.decisions)
    assert typed in told
    assert "(read as '" in told


def test_speller_leaves_known_and_ambiguous_words_alone() -> None:
    """Known words, words two slips away, and slips between two names stay as typed."""
    speller = Speller(["firefox", "gimp", "gimps", "vim"], known=lambda w: w == "chair")
    assert speller.correct("firefx") == "firefox"
    assert speller.correct("chair") is None
    assert speller.correct("frefx") is None
    assert speller.correct("gimpp") is None  # one slip from both "gimp" and "gimps"
    assert speller.correct("gimpy") is None  # a word of its own, not a slip for "gimp"


def test_negated_names_are_never_installed(kb: Knowledge, host: HostLimits) -> None:
    """A negated catalog app, package name and category default are all left out."""
    result = compose("gimp, no fonts-noto-color-emoji, and a pdf reader that isn't evince",
                     knowledge=kb, host=host)  # fmt: skip
    got = packages(result)
    assert "gimp" in got
    assert {"fonts-noto-color-emoji", "evince"} & set(got) == set()


def test_a_negated_suite_rules_out_its_parts(kb: Knowledge, host: HostLimits) -> None:
    """'i hate libreoffice' rules out LibreOffice Calc as the spreadsheet default."""
    got = packages(compose("a spreadsheet, but i hate libreoffice", knowledge=kb, host=host))
    assert [p for p in got if p.startswith("libreoffice")] == []
    assert "gnumeric" in got


def test_an_app_negated_only_through_and_is_asked_about(kb: Knowledge, host: HostLimits) -> None:
    """'not chromium and gimp' may want gimp: it is left out of the draft and asked about."""
    asked = compose("firefox, not chromium and gimp", knowledge=kb, host=host)
    assert isinstance(asked, Clarification)
    assert [(q.field, q.options) for q in asked.questions] == [
        ("apps.gimp", ("leave-out", "install"))
    ]
    assert "'not chromium and gimp'" in asked.questions[0].question
    assert asked.draft.packages == ["firefox-esr"]
    kept = compose(
        "firefox, not chromium and gimp", answers={"apps.gimp": "install"}, knowledge=kb, host=host
    )
    left = compose(
        "firefox, not chromium and gimp",
        answers={"apps.gimp": "leave-out"},
        knowledge=kb,
        host=host,
    )
    assert isinstance(kept, Composed)
    assert isinstance(left, Composed)
    assert (kept.spec.packages, left.spec.packages) == (["firefox-esr", "gimp"], ["firefox-esr"])
