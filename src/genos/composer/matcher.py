"""Find catalog phrases in a token stream, longest first, and the names it does not know.

A *candidate* is a word in a slot where people name software ("with X",
"X and Y", "install X", "the X app") that is neither a catalog phrase nor an
ordinary word. Resolution then looks it up in Debian's index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from genos.composer.lexicon import ENV_NOUNS
from genos.composer.normalise import tokenize

_LEADS = frozenset(
    {"with", "install", "installed", "plus", "and", "including", "also", "&", "+", ","}
)
_TRAILS = frozenset({"app", "application", "apps", "package", "program", "tool", "software"})
_BOUNDARY = frozenset(
    {
        "and",
        "plus",
        "&",
        "for",
        "to",
        "on",
        "over",
        "in",
        "so",
        "please",
        "via",
        "using",
        "app",
        "application",
        "package",
        "program",
        "tool",
        "software",
        "installed",
        "that",
        "or",
        ",",
        ";",
        "!",
        "?",
    }
)
_ARTICLES = frozenset({"the", "a", "an", "some", "my"})
# Ordinary words that can stand in a software slot ("with internet", "and keep
# my files") but never name an app here; any real package name not in this
# list is looked up in Debian's index.
ORDINARY = frozenset(
    """
    a about access after all allow allowed also an and any anything app application apps
    are as at access available be because before best between box browse browsing but by
    can class clipboard cloud code copy cores cpu cpus data default desktop development
    do document documents download easy editing editor enough environment everything
    extra fast file files for from full gb get gigs give good graphical gui have help
    high home hours i if in inbound internet into is it just keep kernel latest
    lightweight like linux local long low machine me memory minimal minutes modern more
    my need network new no nothing of offline on one online only or other outbound over
    own paste please plus port ports privacy private quick ram recent recording remote
    resolution root safe same screen secure security session sessions setup simple small
    so some space speed stable storage stuff support system test testing that the their
    them then these thing things this to tools up use using very want web what which
    will with without work working would you your something anything somewhere smth way
    place tool program software disk drive ssd hdd cores vcpus vcpu gigs thanks thank
    preferably ideally maybe please pls plz else
    """.split()
)


@dataclass(frozen=True)
class Match:
    """A catalog phrase found in the prompt."""

    kind: str  # "app" or "category"
    id: str
    phrase: str
    start: int
    length: int = 1


class PhraseMatcher:
    """Longest-first matching of multi-word phrases over tokens."""

    def __init__(self, phrases: Iterable[tuple[str, str, str]]) -> None:
        self._table: dict[tuple[str, ...], tuple[str, str]] = {}
        for phrase, kind, ident in phrases:
            # "mind mapping" is also written "mind-mapping", "note-taking" "note taking".
            lowered = phrase.lower()
            for form in (lowered, lowered.replace(" ", "-"), lowered.replace("-", " ")):
                key = tokenize(form)
                if key:
                    self._table.setdefault(key, (kind, ident))
        self._longest = max((len(k) for k in self._table), default=1)
        self._words = {w for key in self._table for w in key}

    def is_phrase(self, text: str) -> bool:
        """Whether ``text`` is exactly one catalog phrase."""
        return tokenize(text) in self._table

    def scan(self, tokens: tuple[str, ...]) -> tuple[list[Match], list[str]]:
        """Catalog matches in order of appearance, and unknown names in software slots."""
        matches, candidates = self.scan_positions(tokens)
        return _dedupe(matches), list(dict.fromkeys(word for word, _ in candidates))

    def scan_positions(self, tokens: tuple[str, ...]) -> tuple[list[Match], list[tuple[str, int]]]:
        """:meth:`scan`, with each match's token length and each candidate's token index."""
        matches: list[Match] = []
        covered: set[int] = set()
        i = 0
        while i < len(tokens):
            hit = self._longest_at(tokens, i)
            if hit is None:
                i += 1
                continue
            length, (kind, ident) = hit
            matches.append(Match(kind, ident, " ".join(tokens[i : i + length]), i, length))
            covered.update(range(i, i + length))
            i += length
        return matches, self._candidates(tokens, covered)

    def _longest_at(self, tokens: tuple[str, ...], i: int) -> tuple[int, tuple[str, str]] | None:
        for length in range(min(self._longest, len(tokens) - i), 0, -1):
            found = self._table.get(tokens[i : i + length])
            if found:
                return length, found
        return None

    def _candidates(self, tokens: tuple[str, ...], covered: set[int]) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for i, tok in enumerate(tokens):
            if i in covered or not self._unknown(tok):
                continue
            prev = _previous_word(tokens, i)
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            after_lead = prev in _LEADS
            before_trail = nxt in _TRAILS
            at_boundary = nxt is None or nxt in _BOUNDARY
            if (after_lead and at_boundary) or before_trail:
                out.append((tok, i))
        return out

    def _unknown(self, tok: str) -> bool:
        return (
            tok not in ORDINARY
            and tok not in ENV_NOUNS
            and tok not in _ARTICLES
            and tok not in _LEADS
            and not any(ch.isdigit() for ch in tok)
            and len(tok) >= 2
            and tok[0].isalnum()
        )


def _previous_word(tokens: tuple[str, ...], i: int) -> str | None:
    j = i - 1
    while j >= 0 and tokens[j] in _ARTICLES:
        j -= 1
    return tokens[j] if j >= 0 else None


def _dedupe(matches: list[Match]) -> list[Match]:
    seen: set[tuple[str, str]] = set()
    out = []
    for m in matches:
        if (m.kind, m.id) not in seen:
            seen.add((m.kind, m.id))
            out.append(m)
    return out
