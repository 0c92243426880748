"""Word-level helpers shared by the task search and the language layer.

:func:`stem` folds inflections ("editing", "editor", "edits" -> "edit") with a
few suffix rules, enough to meet the archive's descriptions halfway; it is not
a linguistic stemmer, only a consistent one. :func:`terms` turns text into
search terms (stems, no stop words); :func:`expand` adds the everyday words
for what software does ("cut" a podcast is *editing* audio).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

_WORD = re.compile(r"[a-z0-9][a-z0-9+#]*")
_SUFFIXES = (
    "ational", "ization", "isation", "fulness", "ation", "ment", "ing", "ion", "ial",
    "al", "ers", "er", "or", "ed",
)  # fmt: skip
# Four-letter words whose final "e" tells them apart from another word.
_KEEP_E = frozenset({"note", "none", "tune", "tone", "cute", "nose", "sure", "tube"})
STOP = frozenset(
    """
    a about above after again all almost also am an and any anything are as at be been
    being both but by can could did do does doing done each either etc even ever every
    for from further get gets getting give got had has have having he her here hers him his
    how i i'd i'm if in into is it it's its itself just let lets like ll me might more most
    much must my myself need needs no nor not now of off on once only or other our ours out
    over own per please pls plz put quite rather re really s same she should so some
    something somewhere such than thank thanks that the their them then there these they
    thing things this those though through thus to too under until up upon us use used
    using ve very via want wanna was way we well were what when where whether which while
    who whom why will with within without would yet you your yours able allow allows
    program programs application applications app apps tool tools software package packages
    utility utilities support supports supported provide provides providing based written
    free open source simple easy new include includes including contains feature features
    user users set debian linux gnu gtk qt kde gnome x11 version etc. e.g i.e. many
    lot lots kind sort stuff help
    """.split()
)
# Everyday words for tasks -> the words the archive uses for them.
_EVERYDAY = {
    "cut": "edit", "trim": "edit", "splice": "edit", "tweak": "edit", "retouch": "edit photo",
    "crop": "edit image", "pic": "photo image", "picture": "photo image",
    "photograph": "photo", "photo": "image", "movie": "video", "film": "video",
    "clip": "video", "song": "music audio", "tune": "music", "track": "music audio",
    "album": "music", "flac": "music audio", "mp3": "music audio", "listen": "music audio play",
    "watch": "video play", "sketch": "draw paint", "doodle": "draw paint",
    "comic": "draw paint", "manga": "draw comic", "cartoon": "draw animation",
    "illustrate": "draw vector", "budget": "finance accounting money",
    "expenses": "finance money", "money": "finance", "taxes": "finance accounting",
    "invoice": "accounting finance", "bank": "finance", "bookkeeping": "accounting",
    "typing": "keyboard tutor", "learn": "education tutor", "study": "learn education",
    "practice": "learn", "practise": "learn", "kid": "child education",
    "child": "education", "chat": "messaging instant", "message": "chat", "call": "voip",
    "code": "programming development", "programming": "development",
    "development": "programming", "flowchart": "diagram", "maths": "math mathematics",
    "math": "mathematics", "plot": "graph", "beat": "music drum", "podcast": "audio record",
    "voice": "audio record", "novel": "writing", "stargazing": "astronomy planetarium",
    "star": "astronomy", "planet": "astronomy", "genealogy": "family tree",
    "ancestor": "genealogy", "ebook": "book epub", "ocr": "scan text recognition",
    "rip": "cd extract", "shrink": "compress convert", "mkv": "video matroska",
    "mp4": "video", "avi": "video", "mov": "video", "webm": "video", "wav": "audio",
    "ogg": "audio", "m4a": "audio", "jpg": "image photo", "jpeg": "image photo",
    "png": "image", "heic": "image photo", "svg": "vector", "gif": "animation image",
    "docx": "word document", "doc": "document word", "odt": "document", "xlsx": "spreadsheet",
    "xls": "spreadsheet", "csv": "spreadsheet data", "pptx": "presentation",
    "epub": "ebook", "mobi": "ebook", "cbz": "comic", "cbr": "comic", "iso": "disc image",
    "zip": "archive", "rar": "archive", "7z": "archive", "tarball": "archive",
    "pcap": "packet capture", "stream": "streaming broadcast", "streaming": "broadcast live",
    "twitch": "streaming", "iptv": "tv streaming", "resize": "image scale", "drum": "drums",
    "colour": "color", "colours": "color", "table": "spreadsheet", "tables": "spreadsheet",
    "german": "language", "french": "language", "spanish": "language", "italian": "language",
    "japanese": "language", "chinese": "language", "russian": "language", "english": "language",
    "website": "web html", "websites": "web html", "webpage": "web html",
}  # fmt: skip


@cache
def stem(word: str) -> str:
    """A word's stem: plural and common suffixes off, a doubled last letter undone."""
    w = word.lower()
    if re.fullmatch(r"[a-z]+[0-9]+s", w):
        return w[:-1]  # "mp3s", "mp4s"
    if len(w) <= 3 or not w.isalpha():
        return w
    w = _plural(w)
    if len(w) > 3 and w[-1] == "y" and w[-2] not in "aeiou":
        w = w[:-1] + "i"
    cut = next((s for s in _SUFFIXES if w.endswith(s) and len(w) - len(s) >= 3), "")
    w = w[: len(w) - len(cut)]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
        w = w[:-1]
    if w.endswith("e") and (len(w) > 4 or (len(w) == 4 and w not in _KEEP_E)):
        w, cut = w[:-1], cut or "e"
    if cut and w.endswith("at") and len(w) > 4:
        w = w[:-2]  # "animated", "animate" -> "anim", as "animation" is
    return w


def _plural(w: str) -> str:
    if w.endswith("sses"):
        return w[:-2]
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "i"
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def terms(text: str) -> list[str]:
    """Search terms of ``text``: stems of its words, stop words left out."""
    return [stem(w) for w in _WORD.findall(text.lower().replace("-", " ")) if w not in STOP]


def expand(
    stems: list[str], known: Callable[[str], bool] = lambda _: True
) -> list[tuple[str, float, str]]:
    """Query terms as ``(term, weight, the query stem it stands for)``.

    The given stems weigh 1.0 and what they stand for 0.5 ("cut" -> "edit"). A
    stem the archive does not use (``known`` says so) but that stands for others
    ("pics") is replaced by them at full weight.
    """
    out: dict[str, tuple[float, str]] = {}
    for s in stems:
        extras = _EXPANSIONS.get(s, ())
        if extras and not known(s):
            for extra in extras:
                out[extra] = (1.0, s)
        else:
            out[s] = (1.0, s)
    for s in stems:
        for extra in _EXPANSIONS.get(s, ()):
            out.setdefault(extra, (0.5, s))
    return [(term, weight, source) for term, (weight, source) in out.items()]


_EXPANSIONS = {stem(k): tuple(stem(w) for w in v.split()) for k, v in _EVERYDAY.items()}
