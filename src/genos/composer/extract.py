"""Stage 3: pull what the request says out of the folded text.

Each extractor reads the text (and, for apps, the tokens) and fills one part
of :class:`Entities`, keeping the words it matched as evidence for the
rationale. Extractors never decide between conflicting wishes; validation
does that.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from genos.composer.lexicon import (
    BROWSE_WEB,
    ENCRYPTED,
    EPHEMERAL,
    ESCALATION,
    HEADLESS,
    INJECTION,
    NET_INTERNET,
    NET_NONE,
    NET_TOR,
    NOT_IMAGE_NAMES,
    OS_NAMES,
    PERSIST,
    PROTOCOLS,
    TIER_HINTS,
    TIERS,
    TLDS,
    USER_IMAGE,
    WINDOW_MANAGERS,
    first,
    pick,
)
from genos.composer.matcher import Match, PhraseMatcher
from genos.composer.normalise import Normalised, tokenize

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
_CPUS = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:x\s*)?(?:v?cpus?|cores?|processors?|vcores?)\b")
_CPUS_AFTER = re.compile(r"\b(?:v?cpus?|cores?)\s*[:=]?\s*(\d+(?:\.\d+)?)\b")
_SIZE = re.compile(
    r"\b(\d+(?:\.\d+)?)\s*(tb|tib|terabytes?|gb|gib|g|gigs?|gigabytes?|mb|mib|megs?|megabytes?)\b"
)
_SIZE_MB = {"t": 1024 * 1024, "g": 1024, "m": 1}
_DISK_WORDS = re.compile(r"\b(disk|storage|ssd|hdd|drive|space|volume)\b")
_MEM_WORDS = re.compile(r"\b(ram|memory|mem)\b")
_RESOLUTION = re.compile(r"\b(\d{3,4})\s*x\s*(\d{3,4})\b")
_NAMED_RES = {
    "4k": (3840, 2160),
    "1440p": (2560, 1440),
    "1080p": (1920, 1080),
    "full hd": (1920, 1080),
    "720p": (1280, 720),
}
_IP = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?)(?::(\d{1,5}))?\b")
_PORTS = re.compile(r"\bports?\s+((?:\d{1,5}(?:\s*(?:,|and|or|/)\s*)?)+)")
_DOMAIN = re.compile(r"\b((?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,12}))\b")
_CLIP_OUT = re.compile(r"\bcopy\w*\s+(?:\w+\s+){0,3}(?:out of|from) (?:the |my )?(?:env|vm|box)")
_NO_CLIP = re.compile(r"\b(no|without|disable\w*)\s+(?:the\s+)?clipboard")
_CLIP_ANY = re.compile(r"\bclipboard|copy[ -](?:and[ -])?paste\b")
_RECORD = re.compile(
    r"\brecord\w*\s+(?:the|this|my|every|all)\s+(?:session|screen|activity|thing)"
    r"|\bsession record\w*|\baudit trail\b"
)
_NO_FILES = re.compile(r"\bno file (?:transfer|sharing)\b|\bwithout file transfer\b")
_DOWNLOAD = re.compile(r"\b(download|get|take|copy)\w*\s+(?:\w+\s+){0,2}files?\s+(?:out|back)\b")
_VOLUME_NAME = re.compile(r"\bvolume\s+(?:named|called)\s+([a-z0-9][a-z0-9-]{0,62})\b")


@dataclass
class Entities:
    """Everything the request said, with the words that said it."""

    apps: list[Match] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    foreign_os: list[str] = field(default_factory=list)
    user_image: str | None = None
    distribution: str | None = None
    release: str | None = None
    network: dict[str, str] = field(default_factory=dict)
    browse_web: str | None = None
    allow: list[tuple[str, list[int]]] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    cpus: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    ttl_seconds: int | None = None
    idle_seconds: int | None = None
    protocol: str | None = None
    tier: str | None = None
    tier_hint: str | None = None
    persist: str | None = None
    ephemeral: str | None = None
    encrypted: bool = False
    volume: str | None = None
    resolution: tuple[int, int] | None = None
    window_manager: tuple[str, str] | None = None
    headless: bool = False
    clipboard: str | None = None
    file_transfer: str | None = None
    recording: bool = False
    escalation: str | None = None
    injection: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)


def extract(norm: Normalised, matcher: PhraseMatcher) -> Entities:
    """Run every extractor over the folded prompt."""
    ent = Entities()
    text = _user_image(norm.text, ent)  # first: its name is no one else's word
    text = _lifetime(text, ent)
    text = _resources(text, ent)
    _network(text, ent)
    _allowlist(text, ent, matcher)
    _base(text, ent)
    _display(text, ent)
    _isolation(text, ent)
    _persistence(text, ent)
    _policy(text, ent)
    ent.escalation = first(ESCALATION, text)
    ent.injection = first(INJECTION, text)
    ent.apps, ent.candidates = matcher.scan(tokenize(text) if ent.user_image else norm.tokens)
    return ent


def _user_image(text: str, ent: Entities) -> str:
    """The owner's image a request names; the words naming it are blanked out."""
    for pattern in USER_IMAGE:
        for found in re.finditer(pattern, text):
            if found.group(1) not in NOT_IMAGE_NAMES:
                ent.user_image = found.group(1)
                ent.evidence["user_image"] = found.group(0)
                return text.replace(found.group(0), " ")
    return text


def _seconds(amount: str, unit: str) -> int:
    value = 1.0 if amount in {"a", "an"} else float(amount)
    key = "m" if unit.startswith(("min", "m")) and not unit.startswith("mo") else unit[0]
    return round(value * _UNIT_SECONDS[key])


def _lifetime(text: str, ent: Entities) -> str:
    idle = _IDLE.search(text)
    if idle:
        amount, unit = (idle.group(1), idle.group(2)) if idle.group(1) else idle.group(3, 4)
        ent.idle_seconds = _seconds(amount, unit)
        ent.evidence["idle"] = idle.group(0)
        text = text.replace(idle.group(0), " ")
    for found in _DURATION.finditer(text):
        unit = found.group(2)
        if unit in {"m", "d", "h", "s", "w"} and not found.group(1)[0].isdigit():
            continue
        ent.ttl_seconds = _seconds(found.group(1), unit)
        ent.evidence["ttl"] = found.group(0)
        return text.replace(found.group(0), " ")
    return text


def _resources(text: str, ent: Entities) -> str:
    cpus = _CPUS.search(text) or _CPUS_AFTER.search(text)
    if cpus:
        ent.cpus = float(cpus.group(1))
        ent.evidence["cpus"] = cpus.group(0)
        text = text.replace(cpus.group(0), " ")
    for found in _SIZE.finditer(text):
        mb = round(float(found.group(1)) * _SIZE_MB[found.group(2)[0]])
        after = text[found.end() : found.end() + 24]
        before = text[max(0, found.start() - 16) : found.start()]
        is_disk = bool(_DISK_WORDS.search(after) or _DISK_WORDS.search(before))
        if is_disk and not _MEM_WORDS.search(after):
            ent.disk_mb, ent.evidence["disk"] = mb, found.group(0)
        elif ent.memory_mb is None:
            ent.memory_mb, ent.evidence["memory"] = mb, found.group(0)
    return _SIZE.sub(" ", text)


def _network(text: str, ent: Entities) -> None:
    # Negated forms first ("without internet access"), then blanked out so
    # "internet access" inside them does not count as asking for the internet.
    none = first(NET_NONE, text)
    if none:
        ent.network["none"] = none
        text = text.replace(none, " ")
    for mode, table in (("tor", NET_TOR), ("internet", NET_INTERNET)):
        said = first(table, text)
        if said:
            ent.network[mode] = said
    ent.browse_web = first(BROWSE_WEB, text)


def _allowlist(text: str, ent: Entities, matcher: PhraseMatcher) -> None:
    ports = [int(p) for p in re.findall(r"\d+", " ".join(_PORTS.findall(text)))]
    ports = [p for p in ports if 1 <= p <= 65535]
    for found in _IP.finditer(text):
        try:
            net = ipaddress.ip_network(found.group(1), strict=False)
        except ValueError:
            continue
        own = [int(found.group(2))] if found.group(2) else []
        ent.allow.append((str(net), sorted(set(own + ports))))
    for found in _DOMAIN.finditer(text):
        name, tld = found.group(1), found.group(2)
        if tld in TLDS and not matcher.is_phrase(name) and not _IP.fullmatch(name):
            ent.domains.append(name)
    if ent.allow or ent.domains:
        ent.evidence["allowlist"] = ", ".join([a for a, _ in ent.allow] + ent.domains)


def _base(text: str, ent: Entities) -> None:
    for name, pattern in OS_NAMES.items():
        if re.search(pattern, text):
            ent.foreign_os.append(name)
    if re.search(r"\bdebian\b", text):
        ent.distribution = "debian"
    found = re.search(r"\b(bookworm|trixie)\b|\bdebian\s*(12|13)(?:\.\d+)?\b", text)
    if found:
        ent.release = found.group(1) or {"12": "bookworm", "13": "trixie"}[found.group(2)]
        ent.evidence["release"] = found.group(0)
    other = re.search(r"\b(bullseye|buster|stretch|sid|forky|debian\s*(?:8|9|10|11|14))\b", text)
    if other and not found:
        ent.evidence["unsupported_release"] = other.group(0)


def _display(text: str, ent: Entities) -> None:
    ent.protocol = pick(PROTOCOLS, text)
    res = _RESOLUTION.search(text)
    if res:
        ent.resolution = (int(res.group(1)), int(res.group(2)))
    else:
        named = next((n for n in _NAMED_RES if re.search(rf"\b{n}\b", text)), None)
        ent.resolution = _NAMED_RES[named] if named else None
    for wm, pattern in WINDOW_MANAGERS.items():
        said = re.search(pattern, text)
        if said:
            ent.window_manager = (wm, said.group(0))
            break
    ent.headless = first(HEADLESS, text) is not None


def _isolation(text: str, ent: Entities) -> None:
    ent.tier = pick(TIERS, text)
    hint = first(TIER_HINTS, text)
    if hint:
        ent.tier_hint = hint
        ent.evidence["isolation"] = hint


def _persistence(text: str, ent: Entities) -> None:
    ent.persist = first(PERSIST, text)
    ent.ephemeral = first(EPHEMERAL, text)
    ent.encrypted = first(ENCRYPTED, text) is not None
    name = _VOLUME_NAME.search(text)
    ent.volume = name.group(1) if name else None


def _policy(text: str, ent: Entities) -> None:
    if _NO_CLIP.search(text):
        ent.clipboard = "none"
    elif _CLIP_OUT.search(text) or _CLIP_ANY.search(text):
        ent.clipboard = "both"
    if _NO_FILES.search(text):
        ent.file_transfer = "none"
    elif _DOWNLOAD.search(text):
        ent.file_transfer = "both"
    ent.recording = _RECORD.search(text) is not None
