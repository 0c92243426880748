"""Software a request names: catalog phrases, exact Debian package names, unknown names.

Each mention is judged in place by the language layer: a negated one ("not
krita", "chromium instead of firefox", "no browser please") is *excluded*, so
nothing can install it, not even a category default. A name counts as an
explicit Debian package when the request introduces it as one ("the package
X", "apt install X", "packages: a, b"), when it is shaped like a package name
the index has (``fonts-noto-color-emoji``, ``python3-numpy``), or when it is a
real package name that no package summary uses as a word (``neofetch``, not
``tree``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from genos.composer.debindex import PackageIndex
from genos.composer.language import Reading
from genos.composer.lexicon import ENV_NOUNS, REMOTE_CLIENT, REMOTE_DESKTOP, REMOTE_TARGET
from genos.composer.matcher import ORDINARY, Match, PhraseMatcher
from genos.composer.normalise import Normalised
from genos.composer.programs import ProgramIndex
from genos.composer.tasks import FILLER
from genos.composer.words import STOP

_PACKAGE_LEADS = frozenset({"package", "packages", "pkg", "pkgs", "install", "apt", "apt-get"})
_PACKAGE_TRAILS = frozenset({"package", "packages", "pkg"})
_SKIP = frozenset({"the", "a", "an", "sudo", "-y", "y", "install", "get", "also", "then", ":"})
_SHAPED = re.compile(r"^[a-z0-9][a-z0-9+.-]*[-.+][a-z0-9+.-]*$")
_NOT_A_NAME = re.compile(r"^\d|^\d+(?:gb|mb|tb|g|m|k|x\d+)$|^v?\d+(?:\.\d+)+$")
_RARE = 8  # a package name used as a word by at most this many descriptions is a name


@dataclass
class Mentions:
    """Named software, kept or excluded, with the words that named it."""

    apps: list[Match] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)  # app/category id or package
    unsure: dict[str, str] = field(default_factory=dict)  # excluded only through an "and"
    explicit: list[tuple[str, str]] = field(default_factory=list)  # (package, words)
    candidates: list[str] = field(default_factory=list)
    remote_client: str | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)
    category_spans: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Sources:
    """What names are checked against: the catalog, and the release's index and programs."""

    matcher: PhraseMatcher
    index: PackageIndex | None
    programs: ProgramIndex | None


def find(
    norm: Normalised,
    reading: Reading,
    sources: Sources,
    *,
    blanked: list[tuple[int, int]],
    taken: list[tuple[int, int]],
) -> Mentions:
    """Every software mention of ``norm``, judged against the negations of ``reading``.

    Args:
        norm: the request.
        reading: its negations.
        sources: the catalog's phrases, Debian's index and programs of the release.
        blanked: spans that are someone else's (durations, sizes, an image name).
        taken: spans other words claimed (an OS name): no package name is read there.

    Returns:
        The mentions, kept or excluded, and the spans they used.
    """
    finder = _Finder(norm, reading, sources)
    matches, candidates = sources.matcher.scan_positions(norm.tokens)
    inside = {i for i, span in enumerate(norm.spans) if _within(span, blanked)}
    finder.covered = inside | {i for i, span in enumerate(norm.spans) if _within(span, taken)}
    for match in matches:
        if not set(range(match.start, match.start + match.length)) & inside:
            finder.catalog(match)
    finder.explicit()
    for word, i in candidates:
        finder.candidate(word, i)
    finder.out.remote_client = _remote(norm.text)
    return finder.out


class _Finder:
    """One request's mentions, filled in by kind."""

    def __init__(self, norm: Normalised, reading: Reading, sources: Sources) -> None:
        self.norm = norm
        self.reading = reading
        self.index = sources.index
        self.programs = sources.programs
        self.out = Mentions()
        self.covered: set[int] = set()

    def catalog(self, match: Match) -> None:
        """A catalog phrase, kept or (negated) excluded."""
        start = self.norm.span(match.start)[0]
        end = self.norm.span(match.start + match.length - 1)[1]
        self.covered.update(range(match.start, match.start + match.length))
        self.out.spans.append((start, end))
        scope = self.reading.negated(start, end)
        if scope is not None:
            quote = scope.quote(self.norm.text, start, end)
            self.out.excluded.setdefault(match.id, quote)
            if scope.unsure(start) and match.kind == "app":
                self.out.unsure.setdefault(match.id, quote)
        else:
            self.out.apps.append(match)
            if match.kind == "category":
                self.out.category_spans.append((start, end))

    def explicit(self) -> None:
        """Exact Debian package names, and unknown names a package word introduces."""
        if self.index is None:
            return
        led = _led_by_package_words(self.norm.tokens, self._name_or_unknown)
        for i, tok in enumerate(self.norm.tokens):
            if i in self.covered or _NOT_A_NAME.search(tok) or tok in STOP:
                continue
            if (i in led or _unknown_shape(tok, self.programs)) and not self.index.has(tok):
                if tok not in ORDINARY and "." not in tok:
                    self.judge(i, partial(self.out.candidates.append, tok))
                continue
            if (tok in FILLER and i not in led) or not self.index.has(tok):
                continue
            if i in led or _name_like(tok, self.programs):
                self.covered.add(i)
                self.judge(i, partial(self.keep, i))

    def _name_or_unknown(self, tok: str) -> bool:
        """A word a package list may hold: a package, or no English word ("zzqxjunk")."""
        if self.index is not None and self.index.has(tok):
            return True
        return self.programs is None or tok not in self.programs.english

    def candidate(self, word: str, i: int) -> None:
        """An unknown word in a software slot ('with X'), unless it is English."""
        named = {name for name, _ in self.out.explicit} | set(self.out.excluded)
        if word in named or i in self.covered or word in FILLER:
            return
        if "." in word and not (self.index is not None and self.index.has(word)):
            return  # "pypi.org" is a domain (the allowlist's), not a package
        real = self.index is not None and self.index.has(word)
        # After a comma only a real package name is a list item ("nmap, john and ..."),
        # and a common word ("learn maths and reading") is no name unless it is a package.
        after_comma = i > 0 and self.norm.tokens[i - 1] == ","
        if real or not (after_comma or _common(word, self.programs)):
            self.judge(i, lambda: self.out.candidates.append(word))

    def keep(self, i: int) -> None:
        """Keep token ``i`` as a package named explicitly."""
        name = self.norm.tokens[i]
        if name in {n for n, _ in self.out.explicit}:
            return
        start, end = self.norm.span(i)
        lead = self.norm.text[max(0, start - 12) : start]
        self.out.explicit.append((name, f"the package {name}" if "package" in lead else name))
        self.out.spans.append((start, end))

    def judge(self, i: int, keep: Callable[[], None]) -> None:
        """Run ``keep`` for a positive mention of token ``i``; exclude a negated one."""
        start, end = self.norm.span(i)
        scope = self.reading.negated(start, end)
        if scope is not None:
            self.out.excluded.setdefault(
                self.norm.tokens[i], scope.quote(self.norm.text, start, end)
            )
            self.out.spans.append((start, end))
        else:
            keep()


def _led_by_package_words(tokens: tuple[str, ...], may_be_name: Callable[[str], bool]) -> set[int]:
    """Token indexes a package word introduces: 'the package X', 'packages: a, b and c'."""
    led: set[int] = set()
    for i, tok in enumerate(tokens):
        if tok in _PACKAGE_TRAILS and i > 0 and tokens[i - 1][0].isalnum():
            led.add(i - 1)
        if tok not in _PACKAGE_LEADS:
            continue
        j = i + 1
        while j < len(tokens) and (tokens[j] in _SKIP or tokens[j] in {",", "and", "+"}):
            j += 1
        first = j
        while j < len(tokens) and tokens[j] not in {";", "!", "?"} and tokens[j] not in ORDINARY:
            if j > first and not may_be_name(tokens[j]):
                break  # "install firefox and turn off networking": the list ended
            if len(tokens[j]) >= 2 and tokens[j][0].isalnum():
                led.add(j)
            j += 1
            while j < len(tokens) and tokens[j] in {",", "and", "+"}:
                j += 1
    return led


def _name_like(tok: str, programs: ProgramIndex | None) -> bool:
    if any(ch in tok for ch in "-.+") or any(ch.isdigit() for ch in tok):
        return True
    if tok in ORDINARY or tok in ENV_NOUNS or len(tok) < 3 or programs is None:
        return False
    # Not an English word, and few packages use it: "neofetch", not "birthday" or "tree".
    return tok not in programs.english and programs.word_df(tok) <= _RARE


def _common(word: str, programs: ProgramIndex | None) -> bool:
    return programs is not None and (word in programs.english or programs.word_df(word) > 20)


def _unknown_shape(tok: str, programs: ProgramIndex | None) -> bool:
    """A package-shaped word with a part no description uses ("ttf-mscorefonts-installer").

    "booby-trapped" and "kali-like" are English, not a package someone named.
    """
    if _SHAPED.match(tok) is None or "/" in tok or "." in tok or programs is None:
        return False  # "pypi.org" is a domain, "node.js" a catalog phrase
    parts = [p for p in re.split(r"[-.+]", tok) if p and not p.isdigit()]
    return any(programs.word_df(p) == 0 and p not in programs.english for p in parts)


def _within(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(a <= span[0] and span[1] <= b for a, b in spans)


def _remote(text: str) -> str | None:
    """The words asking to reach another machine's desktop ("rdp into my work pc")."""
    for pattern in REMOTE_CLIENT:
        found = re.search(pattern, text)
        if found:
            return found.group(0)
    for pattern in REMOTE_TARGET:
        for found in re.finditer(pattern, text):
            clause = text[found.start() : found.end() + 40]
            if re.search(REMOTE_DESKTOP, clause):
                return found.group(0)
    return None
