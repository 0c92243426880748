"""Spelling tolerance: read "libreofice", "thunderbrid" and "vidio player" as meant.

A word is corrected only when it is unknown (no catalog phrase, no Debian
package, no word of any package summary, no ordinary word) and exactly one
word of the composer's vocabulary (catalog phrases, the lexicon's words) is
one edit away (a letter added, dropped, changed or two swapped; two edits for
words of nine letters or more). The corrected text goes through the rest of
the pipeline; the corrections are kept so rationales quote what was typed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace

from rapidfuzz import process
from rapidfuzz.distance import OSA

from genos.composer.normalise import Normalised, token_spans

_WORD = re.compile(r"[a-z]{4,}")  # what may be corrected
_TARGET = re.compile(r"[a-z]{3,}")  # what it may be corrected to ("vlcc" -> "vlc")
_SUFFIXES = frozenset({"y", "ed", "er", "ly", "ing", "en", "ish"})


class Speller:
    """Corrects unknown words to the one vocabulary word they are a slip away from."""

    def __init__(self, vocabulary: Iterable[str], known: Callable[[str], bool]) -> None:
        self._vocab = sorted({w for w in vocabulary if _TARGET.fullmatch(w)})
        self._known = known
        self._vocab_set = frozenset(self._vocab)

    def correct(self, word: str) -> str | None:
        """The vocabulary word ``word`` was meant as, or None to leave it alone."""
        if not _WORD.fullmatch(word) or word in self._vocab_set or self._known(word):
            return None
        limit = 2 if len(word) >= 9 else 1
        found = process.extract(word, self._vocab, scorer=OSA.distance, score_cutoff=limit, limit=3)
        if not found:
            return None
        best = found[0][1]
        tied = [w for w, d, _ in found if d == best]
        if len(tied) != 1 or (len(word) <= 5 and tied[0][0] != word[0]):
            return None
        if word.startswith(tied[0]) and word[len(tied[0]) :] in _SUFFIXES:
            return None  # "sketchy" is a word of its own, not a slip for "sketch"
        return tied[0]

    def respell(self, norm: Normalised) -> tuple[Normalised, dict[str, str]]:
        """``norm`` with its unknown words corrected, and ``{corrected: typed}``.

        Returns:
            The same object when nothing was corrected.
        """
        corrections: dict[str, str] = {}
        pieces: list[str] = []
        last = 0
        for token, (start, end) in zip(norm.tokens, norm.spans, strict=True):
            fixed = self.correct(token)
            if fixed is None:
                continue
            pieces += [norm.text[last:start], fixed]
            corrections[fixed] = token
            last = end
        if not corrections:
            return norm, {}
        text = "".join([*pieces, norm.text[last:]])
        tokens, spans = token_spans(text)
        return replace(norm, text=text, tokens=tokens, spans=spans), corrections
