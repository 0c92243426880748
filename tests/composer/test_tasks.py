"""Tasks to software: task phrases, the archive's search, and the choice among hits."""

from __future__ import annotations

import pytest

from genos.composer import Clarification, Composed, compose
from genos.composer.catalog import parse
from genos.composer.knowledge import HostLimits, Knowledge
from genos.composer.language import read
from genos.composer.normalise import normalise
from genos.composer.programs import build
from genos.composer.search import TaskIndex
from genos.composer.tasks import choose, find

PACKAGES = """\
Package: subtitleeditor
Description: graphical subtitle editor with sound waves representation
Section: video
Tag: interface::x11, role::program, use::editing, works-with::video

Package: gaupol
Description: subtitle editor for text-based subtitle files
Section: video
Tag: interface::x11, role::program, use::editing

Package: chocolate-doom
Description: Doom engines closely-compatible with Vanilla Doom
Section: games
Tag: role::program, game::fps

Package: audacity
Description: fast, cross-platform audio editor
Section: sound
Tag: interface::x11, role::program, use::editing, works-with::audio

Package: sox
Description: Swiss army knife of sound processing
Section: sound
Tag: interface::commandline, role::program, works-with::audio
"""
CATALOG = {
    "apps": [
        {"id": "audacity", "name": "Audacity", "packages": ["audacity"],
         "category": "audio-editor", "keywords": ["podcast", "voice"]},
    ],
    "categories": [
        {"id": "audio-editor", "phrases": ["audio editor"], "options": ["audacity"],
         "default": "audacity", "why": "it is easy."},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def index() -> TaskIndex:
    return TaskIndex(parse(CATALOG), build(PACKAGES, release="bookworm"), "bookworm")


def test_curated_words_find_the_catalog_app(index: TaskIndex) -> None:
    """'cut a podcast' finds Audacity through its curated keywords and 'cut' -> 'edit'."""
    [top, *_] = index.search(["cut", "a", "podcast"])
    assert (top.doc.key, top.coverage) == ("app:audacity", 1.0)


def test_two_equal_programs_are_asked_about(index: TaskIndex) -> None:
    """Two subtitle editors that fit equally make a question with both as options."""
    choice = choose(index.search(["edit", "subtitles"]), 0.6, {})
    assert choice.pick is not None
    assert {h.doc.package for h in choice.options} == {"subtitleeditor", "gaupol"}


def test_a_word_nothing_uses_for_tasks_is_no_task(index: TaskIndex) -> None:
    """A word in no program's summary, keywords or tags is unknown to the task vocabulary."""
    assert index.knows(["chocolates"]) is False
    assert index.knows(["subtitles"]) is True


def test_too_little_coverage_picks_nothing(index: TaskIndex) -> None:
    """A hit that explains too little of the phrase is no pick."""
    assert choose(index.search(["edit", "subtitles", "holiday", "plants"]), 0.6, {}).pick is None


def test_task_phrases_skip_what_others_took() -> None:
    """The task is what no extractor took; generic heads and second activities are marked."""
    text = normalise("firefox and something to edit photos, then record my screen and edit it")
    taken = [(0, 7)]  # "firefox"
    tasks = find(text.text, read(text.text), taken)
    assert [(t.words, t.generic, t.another) for t in tasks] == [
        (("edit", "photos"), True, False),
        (("record", "screen"), False, False),
        (("edit",), False, True),
    ]


@pytest.mark.network
@pytest.mark.parametrize(
    ("prompt", "some_of"),
    [
        ("somewhere to draw comics", {"krita", "mypaint"}),
        ("a box for listening to my flac collection", {"rhythmbox", "quodlibet", "audacious"}),
        ("I want to cut a podcast", {"audacity", "ardour"}),
        ("learn to touch-type", {"klavaro", "ktouch", "tuxtype", "gtypist"}),
        ("keep a household budget", {"gnucash", "homebank", "kmymoney", "skrooge", "grisbi"}),
        ("Haskell development", {"ghc"}),
        ("a machine to edit subtitles", {"subtitleeditor", "gaupol", "aegisub"}),
    ],
)
def test_tasks_from_the_issue_find_well_known_programs(
    prompt: str, some_of: set[str], kb: Knowledge, host: HostLimits
) -> None:
    """The issue's task phrases find well-known desktop programs, or ask among them."""
    result = compose(prompt, knowledge=kb, host=host)
    assert isinstance(result, Composed | Clarification), result
    spec = result.spec if isinstance(result, Composed) else result.draft
    assert set(spec.packages) & some_of != set()


@pytest.mark.network
def test_several_fitting_programs_are_asked_about(kb: Knowledge, host: HostLimits) -> None:
    """'draw circuit diagrams' fits several programs equally: two to four are offered."""
    result = compose("draw circuit diagrams", knowledge=kb, host=host)
    assert isinstance(result, Clarification)
    [question] = result.questions
    assert 2 <= len(question.options) <= 4
    assert question.question.startswith("Several programs fit 'circuit diagrams': ")


@pytest.mark.network
def test_the_rationale_quotes_the_task(kb: Knowledge, host: HostLimits) -> None:
    """The app a task found says which words it came from."""
    result = compose("trace my family tree", knowledge=kb, host=host)
    assert isinstance(result, Composed)
    [why] = [d.rationale for d in result.spec.provenance.decisions if d.field == "apps.gramps"]
    assert why.startswith("For 'family tree'")
