"""Stage 1: what the composer refuses before reading, and how it folds text."""

from __future__ import annotations

import re

import pytest

from genos.composer.normalise import MAX_CHARS, decode, normalise, tokenize
from genos.errors import PromptError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "prompt is empty"),
        ("   \n\t ", "prompt is empty"),
        ("x" * (MAX_CHARS + 1), f"prompt is too long: {MAX_CHARS + 1} characters"),
        ("firefox\x00please", "control character (U+0000)"),
        ("firefox\x1b[31m", "control character (U+001B)"),
        ("fire\udcfffox", "not valid UTF-8"),
    ],
)
def test_refuses_what_is_not_a_sentence(text: str, message: str) -> None:
    """Empty, oversized, control-character and undecodable text is a PromptError."""
    with pytest.raises(PromptError, match=re.escape(message)):
        normalise(text)


def test_decode_rejects_invalid_utf8() -> None:
    """Bytes that are not UTF-8 name the offending byte."""
    with pytest.raises(PromptError, match=r"not valid UTF-8 \(byte 4\)"):
        decode(b"fire\xff\xfefox")


def test_folds_case_quotes_dashes_and_number_words() -> None:
    """Typography and spelled-out numbers fold to one spelling."""
    norm = normalise("  Two Cores — “Firefox” and the host’s  FILES  ")
    assert norm.text == '2 cores - "firefox" and the host\'s files'
    assert norm.original == "Two Cores — “Firefox” and the host’s  FILES"


def test_tokens_keep_names_units_and_addresses() -> None:
    """Package-like names, sizes and CIDRs stay whole; commas end lists."""
    assert tokenize("c++, node.js 8gb 10.0.0.0/8 vs code.") == (
        "c++",
        ",",
        "node.js",
        "8gb",
        "10.0.0.0/8",
        "vs",
        "code",
    )
