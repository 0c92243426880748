"""The language layer: clauses, negation and its scope, hedges.

A NegEx-style reading of the folded text (Chapman et al., 2001): a *trigger*
("no", "without", "should not", "don't let", "instead of") negates the words
after it up to a clause boundary (punctuation, a contrast word such as "but",
a new clause after "and"), at most ``_WIDTH`` words; a *post* trigger ("not
needed", "disabled", "internet: no") negates the words before it. Pseudo
triggers ("not only", "don't lose", "no problem") negate nothing.

Coordination carries a scope on: "without internet, clipboard or usb" negates
all three, because the items are of one kind (policy words: network,
clipboard, devices...). Items of another kind end it: in "no internet and
firefox" only the internet is negated.

Hedges ("maybe", "not sure if") mark words the request is unsure about, so the
composer can ask instead of guessing. Everything is reported as character
spans of the folded text, so any extractor can ask "is this mention negated?"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from genos.composer import triggers as tr

_WIDTH = 10
NEGATION_WORDS = tr.NEGATION_WORDS
POLICY_WORDS = tr.POLICY_WORDS
_TOKEN = re.compile(
    r"(?P<w>[a-z0-9~/][a-z0-9.+#_'/~-]*[a-z0-9+#]|[a-z0-9])|(?P<p>[.;:!?()\[\]]|,|\s-+\s|\"|\n)"
)


@dataclass(frozen=True)
class Word:
    text: str
    start: int
    end: int
    punct: bool = False
    atom: bool = False  # part of a name ("so cat"): neither trigger nor boundary


@dataclass(frozen=True)
class Scope:
    """A trigger and the characters it covers (``start``..``end`` of the folded text)."""

    trigger: str
    trigger_start: int
    start: int
    end: int
    after: bool = False  # a post trigger ("internet not needed"): it ends the scope
    joined: int = -1  # where an item joined by "and" starts: "not chromium and gimp"

    def unsure(self, start: int) -> bool:
        """Whether a mention at ``start`` is covered only through an "and" (ask, do not
        guess: "firefox, not chromium and gimp" may want gimp)."""
        return 0 <= self.joined <= start

    def covers(self, start: int, end: int) -> bool:
        """Whether a mention at ``start``..``end`` begins inside this scope."""
        return self.start <= start < max(self.end, self.start + 1) and end > start

    def quote(self, text: str, start: int, end: int) -> str:
        """The words from the trigger through a mention, for a rationale."""
        lo = min(self.trigger_start, start)
        hi = self.end if self.after else max(end, self.start)
        return text[lo:hi].strip(" ,.;:?")


@dataclass(frozen=True)
class Reading:
    """Clauses, negation scopes and hedges of one folded request."""

    text: str
    words: tuple[Word, ...]
    clauses: tuple[tuple[int, int], ...]
    negations: tuple[Scope, ...]
    hedges: tuple[Scope, ...]

    def negated(self, start: int, end: int) -> Scope | None:
        """The negation whose scope holds the mention at ``start``..``end``, if any."""
        return next((s for s in self.negations if s.covers(start, end)), None)

    def hedged(self, start: int, end: int) -> Scope | None:
        """The hedge ("maybe") covering ``start``..``end``, if any."""
        return next((s for s in self.hedges if s.covers(start, end)), None)

    def clause_of(self, pos: int) -> tuple[int, int]:
        """The clause (character span) holding position ``pos``."""
        return next((c for c in self.clauses if c[0] <= pos < c[1]), (0, len(self.text)))


def read(text: str, atoms: list[tuple[int, int]] | None = None) -> Reading:
    """Read the folded ``text``: its clauses, negations and hedges.

    Args:
        text: the folded request.
        atoms: character spans of names (catalog phrases) whose words are never
            triggers or boundaries ("so cat" is socat, not "so").

    Returns:
        The reading, every span in characters of ``text``.
    """
    spans = atoms or []
    words = tuple(
        replace(w, atom=any(a <= w.start and w.end <= b for a, b in spans)) for w in _words(text)
    )
    clauses = _clauses(words, len(text))
    pseudo = _phrase_starts(words, tr.PSEUDO)
    negations = [*_pre_scopes(words, pseudo), *_post_scopes(words), *_answer_scopes(words)]
    hedges = _hedge_scopes(words)
    return Reading(text, words, clauses, tuple(negations), tuple(hedges))


def _words(text: str) -> list[Word]:
    out = []
    for found in _TOKEN.finditer(text):
        if found.group("w"):
            out.append(Word(found.group("w"), found.start(), found.end()))
        else:
            out.append(Word(found.group().strip() or "\n", found.start(), found.end(), punct=True))
    return out


def _match_at(words: tuple[Word, ...], i: int, phrase: str) -> int:
    """How many words ``phrase`` spans at ``i`` (0 when it does not start there)."""
    parts = phrase.split()
    if i + len(parts) > len(words):
        return 0
    for k, part in enumerate(parts):
        if words[i + k].punct or words[i + k].text != part:
            return 0
    return len(parts)


def _phrase_starts(words: tuple[Word, ...], phrases: tuple[str, ...]) -> set[int]:
    """Indexes of words inside any of ``phrases``."""
    inside: set[int] = set()
    for i in range(len(words)):
        for phrase in phrases:
            n = _match_at(words, i, phrase)
            inside.update(range(i, i + n))
    return inside


def _is_trigger_word(word: Word) -> bool:
    negating = word.text in tr.PRE_WORDS or word.text.endswith("n't")
    return not word.punct and not word.atom and negating


def _pre_trigger(words: tuple[Word, ...], i: int) -> int:
    """Words in a pre-negation trigger starting at ``i`` (0 if none)."""
    for phrase in tr.PRE_PHRASES:
        n = _match_at(words, i, phrase)
        if n:
            return n
    return 1 if _is_trigger_word(words[i]) else 0


def _pre_scopes(words: tuple[Word, ...], pseudo: set[int]) -> list[Scope]:
    out = []
    i = 0
    while i < len(words):
        n = 0 if i in pseudo else _pre_trigger(words, i)
        if not n:
            i += 1
            continue
        first = i
        if i > 0 and words[i - 1].text in tr.AUX and not words[i - 1].punct:
            first = i - 1  # quote "should not", not just "not"
        end, joined = _scope_end(words, i + n)
        if end > i + n:
            out.append(
                Scope(
                    " ".join(w.text for w in words[first : i + n]),
                    words[first].start,
                    words[i + n].start,
                    words[end - 1].end,
                    joined=words[joined].start if 0 <= joined < len(words) else -1,
                )
            )
        i += n
    return out


def _scope_end(words: tuple[Word, ...], start: int) -> tuple[int, int]:
    """Index after the last word a trigger ending at ``start`` covers, and the index
    of the first item it reaches through an "and" of apps (-1 when none)."""
    head_policy = False
    joined = -1
    j = start
    while j < len(words) and j - start < _WIDTH:
        word = words[j]
        if word.atom:
            j += 1
            continue
        if word.text in ("or", "nor") and j > start:
            j += 1  # "don't let it sync or go online": a negated choice is neither
            continue
        if word.text in ("and", ",") and j > start:
            listed = word.text != "," or _list_ends(words, j)
            if not listed or not _continues(words, j + 1, head_policy):
                break
            if word.text == "and" and not head_policy and joined < 0:
                joined = j + 1  # negating more of the policy is safe; more apps, unsure
            j += 1
            continue
        if word.punct or (word.text in tr.ENDS and j > start):
            break
        head_policy = head_policy or word.text in tr.POLICY_WORDS
        j += 1
    return j, joined


def _list_ends(words: tuple[Word, ...], j: int) -> bool:
    """Whether the comma at ``j`` is inside a list closed by "and", "or" or "nor"."""
    for k in range(j + 1, min(len(words), j + 8)):
        if words[k].text in ("or", "nor", "and"):
            return True
        if words[k].punct and words[k].text != ",":
            return False
    return False


def _continues(words: tuple[Word, ...], k: int, head_policy: bool) -> bool:
    """Whether a list item starting at ``k`` is of the negated item's kind."""
    item = []
    while k < len(words) and not words[k].punct and words[k].text not in ("and", "or", "nor"):
        if words[k].text in tr.ENDS or words[k].text in tr.SUBJECTS:
            return False
        item.append(words[k].text)
        k += 1
    if not item:
        return False
    policy = any(w in tr.POLICY_WORDS for w in item)
    return policy if head_policy else (not policy and len(item) <= 3)


def _post_scopes(words: tuple[Word, ...]) -> list[Scope]:
    """Triggers that negate the words before them, back to the clause's start."""
    out = []
    for i in range(len(words)):
        n = _post_trigger(words, i)
        if not n:
            continue
        j = i
        while j > 0 and i - j < _WIDTH and not _stops_back(words[j - 1]):
            j -= 1
        if j < i:
            trigger = " ".join(w.text for w in words[i : i + n])
            out.append(
                Scope(trigger, words[j].start, words[j].start, words[i + n - 1].end, after=True)
            )
    return out


def _stops_back(word: Word) -> bool:
    """Whether a post trigger's scope stops before ``word`` ("gimp and the network must not")."""
    return word.punct or word.text in tr.ENDS or word.text in ("and", "or", "that", "which", "who")


def _post_trigger(words: tuple[Word, ...], i: int) -> int:
    """Words in a post-negation trigger at ``i``: "not needed", "isn't necessary", "off"."""
    word = words[i]
    if word.punct or word.atom:
        return 0
    phrase = next((n for p in tr.POST_PHRASES if (n := _match_at(words, i, p))), 0)
    if phrase or word.text in tr.POST_WORDS:
        return phrase or 1
    nxt = words[i + 1] if i + 1 < len(words) else None
    if nxt is not None and not nxt.punct and _negating(word.text):
        if nxt.text in tr.NOT_ADJECTIVES:
            return 2
        if word.text != "no" and nxt.text in tr.STATE_VERBS and _aux(words, i):
            return 1
    at_end = nxt is None or nxt.punct
    off = word.text == "off" and at_end and i > 0 and words[i - 1].text not in tr.OFF_VERBS
    return 1 if off else 0


def _negating(word: str) -> bool:
    return word == "not" or word.endswith("n't") or word in tr.PRE_WORDS


def _aux(words: tuple[Word, ...], i: int) -> bool:
    """Whether the negation at ``i`` is an auxiliary's ("shouldn't", "must not")."""
    word = words[i].text
    if word.endswith("n't") or word in ("cannot", "cant", "wont", "shouldnt", "mustnt"):
        return True
    return i > 0 and words[i - 1].text in tr.AUX


def _answer_scopes(words: tuple[Word, ...]) -> list[Scope]:
    """'internet: no', 'internet? no.', 'clipboard - off': the item before is negated."""
    out = []
    for i in range(1, len(words) - 1):
        sep, answer = words[i], words[i + 1]
        bare = sep.text in tr.POLICY_WORDS  # "clipboard no", "internet off"
        if not (bare or (sep.punct and sep.text in (":", "?", "-", "="))):
            continue
        if answer.text not in tr.ANSWER_NO:
            continue
        after = words[i + 2] if i + 2 < len(words) else None
        if after is not None and not after.punct:
            continue  # "network: none of the above ..." is not an answer
        j = i + 1 if bare else i
        while j > 0 and i - j < 4 and not words[j - 1].punct:
            j -= 1
        if j <= i:
            out.append(Scope(answer.text, words[j].start, words[j].start, answer.end, after=True))
    return out


def _hedge_scopes(words: tuple[Word, ...]) -> list[Scope]:
    out = []
    for i in range(len(words)):
        for phrase in tr.HEDGES:
            n = _match_at(words, i, phrase)
            if n:
                lo, hi = _clause_bounds(words, i)
                out.append(Scope(phrase, words[i].start, words[lo].start, words[hi - 1].end))
    return out


def _clause_bounds(words: tuple[Word, ...], i: int) -> tuple[int, int]:
    lo = i
    while lo > 0 and not words[lo - 1].punct:
        lo -= 1
    hi = i + 1
    while hi < len(words) and not words[hi].punct:
        hi += 1
    return lo, hi


def _clauses(words: tuple[Word, ...], length: int) -> tuple[tuple[int, int], ...]:
    """Clause spans: split at sentence marks, commas, dashes and contrast words."""
    out: list[tuple[int, int]] = []
    start = 0
    for i, word in enumerate(words):
        boundary = (word.punct and word.text != '"') or word.text in ("but", "however", "though")
        new_clause = word.text == "and" and i + 1 < len(words) and words[i + 1].text in tr.SUBJECTS
        if boundary or new_clause:
            if word.start > start:
                out.append((start, word.start))
            start = word.end
    if start < length:
        out.append((start, length))
    return tuple(c for c in out if any(w.start >= c[0] and w.end <= c[1] for w in words))
