"""Stage 3: pull what the request says out of the folded text, negations applied.

Each extractor reads the text through the language layer (``language``): a
mention under a negation asks for the opposite or for nothing ("no
persistence", "not a vm", "headless is not ok"). Extractors keep the words
they matched as evidence for the rationale, and the character spans they
used, so that what is left is the request's task (``tasks``). They never
decide between conflicting wishes; validation does that.
"""

from __future__ import annotations

import re

from genos.composer import mentions, network, refusals, tasks, wishes
from genos.composer.entities import Entities, Extractor
from genos.composer.knowledge import Knowledge
from genos.composer.language import Reading
from genos.composer.lexicon import (
    INJECTION,
    NOT_IMAGE_NAMES,
    OS_NAMES,
    REMOTE_TARGET,
    USER_IMAGE,
    first,
)
from genos.composer.normalise import Normalised

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(
    r"\b(\d+(?:\.\d+)?|an?)\s*-?\s*"
    r"(seconds?|secs?|minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|wks?|w)\b"
)
_IDLE = re.compile(
    r"(?:idle|inactiv\w*|unused)\s+(?:for|after|timeout(?: of)?|of)?\s*"
    r"(\d+(?:\.\d+)?|an?)\s*(seconds?|secs?|minutes?|mins?|hours?|hrs?|h|m|days?|d)\b"
    r"|(\d+(?:\.\d+)?|an?)\s*(seconds?|minutes?|mins?|hours?|hrs?|h|m|days?)\s+"
    r"(?:of\s+)?(?:idle|idleness|inactivity|idling)"
)
# Lifetimes said without a number ("for the whole week", "overnight").
_NAMED_DURATIONS = (
    (re.compile(r"\b(?:the |a )?(?:whole|entire|full) week\b|\ball week\b|\ba week\b"), 604800),
    (re.compile(r"\b(?:the |a )?(?:whole |entire )?weekend\b"), 172800),
    (re.compile(r"\b(?:the |a )?(?:whole|entire|full) day\b|\ball day\b"), 86400),
    (re.compile(r"\bovernight\b|\ball night\b"), 43200),
    (re.compile(r"\b(?:the |this )?(?:afternoon|evening|morning)\b"), 14400),
)
_CPUS = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:x\s*)?(?:v?cpus?|cores?|processors?|vcores?)\b")
_CPUS_AFTER = re.compile(r"\b(?:v?cpus?|cores?)\s*[:=]?\s*(\d+(?:\.\d+)?)\b")
_SIZE = re.compile(
    r"\b(\d+(?:\.\d+)?)\s*(tb|tib|terabytes?|gb|gib|g|gigs?|gigabytes?|mb|mib|megs?|megabytes?)\b"
)
_SIZE_MB = {"t": 1024 * 1024, "g": 1024, "m": 1}
_DISK_WORDS = re.compile(r"\b(disk|storage|ssd|hdd|drive|space|volume)\b")
_MEM_WORDS = re.compile(r"\b(ram|memory|mem)\b")


def extract(norm: Normalised, reading: Reading, kb: Knowledge) -> Entities:
    """Run every extractor over the folded, respelled prompt.

    Args:
        norm: the request after normalisation and spelling correction.
        reading: its clauses and negations.
        kb: the :class:`~genos.composer.knowledge.Knowledge` (catalog, index, programs).
    """
    x = Extractor(norm, reading)
    _user_image(x)  # first: its name is no one else's word
    _lifetime(x)
    _resources(x)
    _base(x)
    wishes.isolation(x)
    wishes.persistence(x)
    wishes.policy(x)
    _software(x, kb)  # after the words above are taken: none of them is an app name
    _network(x, kb)  # after the apps: "web browser" asks for no network by itself
    wishes.display(x)
    x.ent.refusals = refusals.check(norm.text, reading)
    x.ent.taken += x.ent.refusals.spans
    x.ent.injection = first(INJECTION, norm.text)
    x.ent.taken += [(s.trigger_start, s.start) for s in reading.negations]
    found = tasks.find(norm.text, reading, x.ent.taken)
    x.ent.tasks = tasks.on_categories(norm.text, found, x.ent.category_spans)
    return x.ent


def _user_image(x: Extractor) -> None:
    for pattern in USER_IMAGE:
        for found in re.finditer(pattern, x.text):
            if found.group(1) not in NOT_IMAGE_NAMES:
                x.ent.user_image = found.group(1)
                x.ent.evidence["user_image"] = found.group(0)
                x.blank(found)
                return


def _seconds(amount: str, unit: str) -> int:
    value = 1.0 if amount in {"a", "an"} else float(amount)
    key = "m" if unit.startswith(("min", "m")) and not unit.startswith("mo") else unit[0]
    return round(value * _UNIT_SECONDS[key])


def _lifetime(x: Extractor) -> None:
    idle = _IDLE.search(x.text)
    if idle:
        amount, unit = (idle.group(1), idle.group(2)) if idle.group(1) else idle.group(3, 4)
        x.ent.idle_seconds = _seconds(amount, unit)
        x.ent.evidence["idle"] = idle.group(0)
        x.blank(idle)
    for pattern, seconds in _NAMED_DURATIONS:
        named = pattern.search(x.text)
        if named and not _DURATION.search(x.text):
            x.ent.ttl_seconds = seconds
            x.ent.evidence["ttl"] = named.group(0)
            x.blank(named)
            return
    for found in _DURATION.finditer(x.text):
        unit = found.group(2)
        if unit in {"m", "d", "h", "s", "w"} and not found.group(1)[0].isdigit():
            continue
        if found.group(0) in ("2d", "3d"):
            continue  # "model a chair in 3d": dimensions, not days
        x.ent.ttl_seconds = _seconds(found.group(1), unit)
        x.ent.evidence["ttl"] = found.group(0)
        x.blank(found)
        return


def _resources(x: Extractor) -> None:
    cpus = _CPUS.search(x.text) or _CPUS_AFTER.search(x.text)
    if cpus:
        x.ent.cpus = float(cpus.group(1))
        x.ent.evidence["cpus"] = cpus.group(0)
        x.blank(cpus)
    for found in list(_SIZE.finditer(x.text)):
        mb = round(float(found.group(1)) * _SIZE_MB[found.group(2)[0]])
        after = x.text[found.end() : found.end() + 24]
        before = x.text[max(0, found.start() - 16) : found.start()]
        is_disk = bool(_DISK_WORDS.search(after) or _DISK_WORDS.search(before))
        if is_disk and not _MEM_WORDS.search(after):
            x.ent.disk_mb, x.ent.evidence["disk"] = mb, found.group(0)
        elif x.ent.memory_mb is None:
            x.ent.memory_mb, x.ent.evidence["memory"] = mb, found.group(0)
        x.blank(found)


def _base(x: Extractor) -> None:
    remote = [m.span() for p in REMOTE_TARGET for m in re.finditer(p, x.text)]
    for name, pattern in OS_NAMES.items():
        for found in re.finditer(pattern, x.text):
            start, end = found.span()
            x.ent.taken.append((start, end))
            scope = x.reading.negated(start, end)
            if scope is not None:
                x.ent.evidence.setdefault("not_os", scope.quote(x.norm.text, start, end))
            elif any(a <= start < b for a, b in remote):
                x.ent.evidence.setdefault("remote_os", found.group(0))
            elif name not in x.ent.foreign_os:
                x.ent.foreign_os.append(name)
                x.ent.evidence.setdefault(f"os:{name}", found.group(0))
    if re.search(r"\bdebian\b", x.text):
        x.ent.distribution = "debian"
    said = re.search(r"\b(bookworm|trixie)\b|\bdebian\s*(12|13)(?:\.\d+)?\b", x.text)
    if said:
        x.ent.release = said.group(1) or {"12": "bookworm", "13": "trixie"}[said.group(2)]
        x.ent.take(said.span(), "release", said.group(0))
    other = re.search(r"\b(bullseye|buster|stretch|sid|forky|debian\s*(?:8|9|10|11|14))\b", x.text)
    if other and not said:
        x.ent.take(other.span(), "unsupported_release", other.group(0))


def _software(x: Extractor, kb: Knowledge) -> None:
    release = x.ent.release or "bookworm"
    sources = mentions.Sources(kb.matcher, kb.index(release), kb.programs(release))
    found = mentions.find(x.norm, x.reading, sources, blanked=x.blanked, taken=list(x.ent.taken))
    x.ent.apps, x.ent.candidates = found.apps, found.candidates
    x.ent.explicit, x.ent.excluded = found.explicit, found.excluded
    x.ent.unsure = found.unsure
    x.ent.remote_client = found.remote_client
    x.ent.category_spans = found.category_spans
    x.ent.taken += found.spans
    # An OS word inside an app's name ("windows programs" -> Wine) is the app's.
    app_spans = found.spans
    x.ent.foreign_os = [
        name
        for name in x.ent.foreign_os
        if not any(
            a <= m.start() < b for m in re.finditer(OS_NAMES[name], x.text) for a, b in app_spans
        )
    ]


def _network(x: Extractor, kb: Knowledge) -> None:
    app_spans = list(x.ent.taken)

    def taken(start: int, end: int) -> bool:
        return any(a <= start and end <= b for a, b in app_spans)

    x.ent.net = network.read_network(x.text, x.reading, taken, kb.matcher.is_phrase)
    x.ent.taken += x.ent.net.spans
