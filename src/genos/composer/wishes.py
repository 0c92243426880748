"""Extractors of display, isolation, persistence and policy wishes, negations applied.

"headless is not ok", "not a vm", "don't keep anything", "no copy paste": a
mention under a negation asks for the opposite or for nothing.
"""

from __future__ import annotations

import re

from genos.composer.entities import Extractor
from genos.composer.lexicon import (
    ENCRYPTED,
    EPHEMERAL,
    HEADLESS,
    NO_KEEP,
    PERSIST,
    PROTOCOLS,
    TIER_HINTS,
    TIERS,
    WINDOW_MANAGERS,
    first,
)

_RESOLUTION = re.compile(r"\b(\d{3,4})\s*x\s*(\d{3,4})\b")
_NAMED_RES = {
    "4k": (3840, 2160),
    "1440p": (2560, 1440),
    "1080p": (1920, 1080),
    "full hd": (1920, 1080),
    "720p": (1280, 720),
}
_GUI = re.compile(r"\b(?:gui|graphical (?:interface|desktop)|desktop environment|desktop|screen)\b")
_CLIPBOARD = re.compile(
    r"\bclipboard\b|\bcopy[ -]?(?:(?:and|&|/)[ -]?)?paste\b|\bcopy-?pasting\b|\bpasting\b"
)
_CLIP_TAIL = re.compile(
    r"(?:\s*(?:both ways|in both directions|in either direction|either direction|either way|"
    r"two[- ]way|one[- ]way|bidirectional|(?:in)?to the (?:env\w*|vm|box|desktop|sandbox)|"
    r"out of the (?:env\w*|vm|box)|only|access|sharing|on|off|works?|should|shouldn't|"
    r"must|not|work|goes in|go in|in))*"
)
_CLIP_OUT = re.compile(r"\bcopy\w*\s+(?:\w+\s+){0,3}(?:out of|from) (?:the |my )?(?:env|vm|box)")
_CLIP_IN_ONLY = re.compile(
    r"\b(?:in)?to the (?:env\w*|vm|box|desktop|sandbox)(?: only)?\b|"
    r"\bonly (?:goes |going |pastes? )?in(?:to)?\b|\bin only\b|\bone[- ]way\b|\binbound only\b"
)
_CLIP_OUT_WORDS = re.compile(r"\b(?:out of|from) the (?:env\w*|vm|box|desktop|sandbox)\b|\bout\b")
# Recording the session (an audit of what happens in it); "record my screen" asks
# for a screen recorder instead.
_RECORD = re.compile(
    r"\brecord\w*\s+(?:the|this|my|every|all)\s+(?:session|activity|thing)"
    r"|\bsession record\w*|\baudit trail\b"
)
_FILE_TRANSFER = re.compile(r"\bfile (?:transfer|sharing)s?\b")
_DOWNLOAD = re.compile(r"\b(download|get|take|copy)\w*\s+(?:\w+\s+){0,2}files?\s+(?:out|back)\b")
_VOLUME_NAME = re.compile(r"\bvolume\s+(?:named|called)\s+([a-z0-9][a-z0-9-]{0,62})\b")
# Work on untrusted content asks for a (strong) environment; a question about malware does not.
_UNTRUSTED_WORK = re.compile(
    r"\b(?:analy[sz]\w*|open\w*|run\w*|inspect\w*|examin\w*|detonat\w*|test\w*|"
    r"check\w*|handl\w*|view\w*|study\w*|look\w*)\b[^.?!]*\b(?:malware|malicious|virus\w*|"
    r"ransomware|trojans?|suspicious|untrusted|infected|phishing|sketchy|dodgy|"
    r"booby[- ]?trapped|don'?t trust)\b"
)


def display(x: Extractor) -> None:
    """Protocol, resolution, window manager and headless wishes."""
    client = x.ent.remote_client or ""
    for value, pattern in PROTOCOLS.items():
        found = x.hit([pattern])
        if found and not re.search(pattern, client):
            x.ent.protocol = value
            x.ent.take(found.span(), "protocol", found.group(0))
            break
    res = _RESOLUTION.search(x.text)
    if res:
        x.ent.resolution = (int(res.group(1)), int(res.group(2)))
        x.ent.take(res.span())
    else:
        named = next((n for n in _NAMED_RES if re.search(rf"\b{n}\b", x.text)), None)
        x.ent.resolution = _NAMED_RES[named] if named else None
    for wm, pattern in WINDOW_MANAGERS.items():
        said = x.hit([pattern])
        if said:
            x.ent.window_manager = (wm, said.group(0))
            x.ent.take(said.span())
            break
    headless = x.hit(HEADLESS) or x.hit([_GUI.pattern], negated=True)
    if headless and x.hit([r"\bheadless\b"], negated=True) is None:
        x.ent.headless = True
        x.ent.take(headless.span(), "headless", headless.group(0))


def isolation(x: Extractor) -> None:
    """A tier asked for, and words that mark untrusted content."""
    for value, pattern in TIERS.items():
        found = x.hit([pattern])
        if found:
            x.ent.tier = value
            x.ent.take(found.span(), "tier", found.group(0))
            break
    x.take_all(tuple(TIERS.values()))  # "a vm ... to test a kernel module": both are taken
    hint = x.hit(TIER_HINTS)
    if hint:
        x.ent.tier_hint = hint.group(0)
        x.ent.evidence.setdefault("isolation", hint.group(0))
        if not hint.group(0).startswith("reverse"):  # reverse engineering is also the task
            # Only the warning word: in "a weird pdf" the pdf is still what is opened.
            x.ent.take((hint.start(), hint.start() + len(hint.group(0).split()[0])))
    work = _UNTRUSTED_WORK.search(x.text)
    if work:
        x.ent.evidence["untrusted_work"] = work.group(0)


def persistence(x: Extractor) -> None:
    """Keep files or keep nothing; a negated keep asks for nothing kept."""
    keep = x.hit(PERSIST)
    if keep:
        x.ent.persist = keep.group(0)
        x.ent.take(keep.span())
    gone = x.hit(EPHEMERAL)
    if gone:
        x.ent.ephemeral = gone.group(0)
        x.ent.take(gone.span())
    x.take_all((*PERSIST, *EPHEMERAL, *ENCRYPTED))
    undo = x.hit(NO_KEEP, negated=True)
    scope = x.reading.negated(*undo.span()) if undo else None
    if undo and scope:
        x.ent.ephemeral = x.ent.ephemeral or scope.quote(x.norm.text, *undo.span())
        if (
            x.ent.persist
            and keep
            and keep.start() >= undo.start() - 1
            and keep.start() <= undo.end()
        ):
            x.ent.persist = None  # "don't keep my files": the keep wish is the negated one
        x.ent.take(undo.span())
    x.ent.encrypted = first(ENCRYPTED, x.text) is not None
    name = _VOLUME_NAME.search(x.text)
    x.ent.volume = name.group(1) if name else None


def policy(x: Extractor) -> None:
    """Clipboard, file transfer and recording wishes."""
    for found in _CLIPBOARD.finditer(x.text):
        lo, hi = x.reading.clause_of(found.start())
        tail = _CLIP_TAIL.match(x.text, found.end())
        x.ent.take((found.start(), tail.end() if tail else found.end()))  # "... both ways"
        clause = x.text[lo:hi]
        if x.reading.negated(*found.span()) is not None:
            x.ent.clipboard = "to_env" if _CLIP_OUT_WORDS.search(clause) else "none"
        elif x.ent.clipboard is None:
            x.ent.clipboard = "to_env" if _CLIP_IN_ONLY.search(clause) else "both"
    if x.ent.clipboard is None and _CLIP_OUT.search(x.text):
        x.ent.clipboard = "both"
    ft = _FILE_TRANSFER.search(x.text)
    if ft and x.reading.negated(*ft.span()) is not None:
        x.ent.file_transfer = "none"
    elif _DOWNLOAD.search(x.text) or re.search(r"\bdownload files out\b", x.text):
        x.ent.file_transfer = "both"
    x.ent.recording = _RECORD.search(x.text) is not None
