"""Stage 1: turn raw input into clean, bounded text and its tokens.

Refuses what no sentence is: empty or whitespace-only text, more than
``MAX_CHARS`` characters, invalid UTF-8, control characters. Everything else
is folded (NFKC, lower case, typographic quotes and dashes, spelled-out small
numbers) so later stages match one spelling.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from genos.errors import PromptError

MAX_CHARS = 4000
_TOKEN = re.compile(r"[a-z0-9][a-z0-9.+#_'/-]*[a-z0-9+#]|[a-z0-9]|[,;!?]")
_FOLD = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "×": "x"})
_NUMBER_WORDS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "twelve": "12",
    "sixteen": "16",
    "twenty": "20",
    "thirty": "30",
    "forty-five": "45",
    "half an": "0.5",
    "half a": "0.5",
    "a couple of": "2",
    "a couple": "2",
}
_NUMBER_RE = re.compile(r"\b(" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")\b")
# Shorthand people type for "with", "without", "and" ("w/ python", "w/o internet",
# "gimp+inkscape"); "c++" and "notepad++" keep their pluses.
_SHORTHAND = (
    (re.compile(r"(?<![\w/])w/o(?![\w/])"), " without "),
    (re.compile(r"(?<![\w/])w/(?![\w/])"), " with "),
    (re.compile(r"\s*&\s*"), " and "),
    (re.compile(r"(?<=[a-z0-9]{2})\+(?=[a-z])"), " + "),
    (re.compile(r"\bback(?:ing)? up\b"), "backup"),
    # "windows 10 apps" are Windows programs (Wine), whatever the version.
    (
        re.compile(
            r"\bwindows (?:\d+|xp|vista|me) (apps?|applications?|programs?|software|games?)\b"
        ),
        r"windows \1",
    ),
)


@dataclass(frozen=True)
class Normalised:
    """The prompt as the user wrote it, and folded for matching."""

    original: str
    text: str
    tokens: tuple[str, ...]
    spans: tuple[tuple[int, int], ...] = ()

    def span(self, token_index: int) -> tuple[int, int]:
        """Character span of a token in ``text``."""
        return self.spans[token_index]


def decode(raw: bytes) -> str:
    """Decode bytes from stdin or a file as UTF-8.

    Raises:
        PromptError: when the bytes are not valid UTF-8.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"prompt is not valid UTF-8 (byte {exc.start})") from None


def check(text: str) -> str:
    """Refuse input that is not a sentence; returns it stripped.

    Raises:
        PromptError: empty, too long, or containing control characters.
    """
    if len(text) > MAX_CHARS:
        raise PromptError(f"prompt is too long: {len(text)} characters (limit {MAX_CHARS})")
    stripped = text.strip()
    if not stripped:
        raise PromptError("prompt is empty: describe the environment you need")
    for ch in stripped:
        kind = unicodedata.category(ch)
        if kind == "Cs":  # a lone surrogate: bytes that were not UTF-8 (surrogateescape)
            raise PromptError("prompt is not valid UTF-8")
        if kind == "Cc" and ch not in "\t\n\r":
            raise PromptError(f"prompt contains a control character (U+{ord(ch):04X})")
    return stripped


def normalise(text: str) -> Normalised:
    """Check and fold ``text`` for matching.

    Raises:
        PromptError: see :func:`check`.
    """
    original = check(text)
    folded = unicodedata.normalize("NFKC", original).translate(_FOLD).lower()
    folded = re.sub(r"\s+", " ", folded)
    folded = _NUMBER_RE.sub(lambda m: _NUMBER_WORDS[m.group(1)], folded)
    for pattern, replacement in _SHORTHAND:
        folded = pattern.sub(replacement, folded)
    folded = re.sub(r" {2,}", " ", folded).strip()
    tokens, spans = token_spans(folded)
    return Normalised(original, folded, tokens, spans)


def tokenize(text: str) -> tuple[str, ...]:
    """Split folded text into word tokens (keeps ``c++``, ``node.js``, ``8gb``, CIDRs).

    Commas and sentence marks stay as tokens of their own: they end a list.
    """
    return tuple(_TOKEN.findall(text))


def token_spans(text: str) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    """:func:`tokenize`, with each token's character span in ``text``."""
    found = list(_TOKEN.finditer(text))
    return tuple(m.group() for m in found), tuple(m.span() for m in found)
