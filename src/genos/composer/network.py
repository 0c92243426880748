"""Network wishes, read through the language layer.

Every mention of the network ("internet", "online", "phone home", "browse")
is looked at in place: under a negation ("it should not have internet",
"internet: no", "networking disabled") it asks for no network and the
rationale quotes those words; under a hedge ("maybe internet") it is a
question; otherwise only the mentions in ``NET_INTERNET`` ask for the internet
(a bare "network class" asks for nothing). A negated Tor mention ("not over
tor") rules Tor out. Addresses and domains make an allowlist, whose
exceptions ("no access except example.com") are what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from genos.composer.language import Reading
from genos.composer.lexicon import (
    BROWSE_WEB,
    NET_INTERNET,
    NET_MENTION,
    NET_NONE,
    NET_TOR,
    TLDS,
)

_IP = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?)(?::(\d{1,5}))?\b")
_PORTS = re.compile(r"\bports?\s+((?:\d{1,5}(?:\s*(?:,|and|or|/)\s*)?)+)")
_DOMAIN = re.compile(r"\b((?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,12}))\b")


@dataclass
class NetworkWishes:
    """What the request says about the network, each with the words that said it."""

    said: dict[str, str] = field(default_factory=dict)  # mode -> words
    browse_web: str | None = None
    hedge: str | None = None
    no_tor: str | None = None
    allow: list[tuple[str, list[int]]] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)


def read_network(
    text: str, reading: Reading, taken: Callable[[int, int], bool], is_phrase: Callable[[str], bool]
) -> NetworkWishes:
    """Network wishes of a request.

    Args:
        text: the folded request.
        reading: its clauses and negations.
        taken: whether a character span belongs to something else (an app name).
        is_phrase: whether a dotted word is a catalog phrase ("node.js"), not a domain.

    Returns:
        The modes asked for with their words, Tor ruled out, hedges, and the allowlist.
    """
    out = NetworkWishes()
    for found in _free(NET_NONE, text, _nothing):
        if reading.negated(*found.span()) is None:
            out.said.setdefault("none", found.group(0))
            out.spans.append(found.span())
    for found in _free(NET_MENTION, text, taken):
        _mention(found, text, reading, out)
    for found in _free(NET_INTERNET, text, taken):
        if reading.negated(*found.span()) is None and reading.hedged(*found.span()) is None:
            out.said.setdefault("internet", found.group(0))
            out.spans.append(found.span())
    for found in _free(BROWSE_WEB, text, _nothing):
        if out.browse_web is None and reading.negated(*found.span()) is None:
            out.browse_web = found.group(0)
            out.spans.append(found.span())
    for found in _free(NET_TOR, text, taken):
        _tor(found, text, reading, out)
    _allowlist(text, out, is_phrase)
    return out


def _nothing(start: int, end: int) -> bool:
    """No span is taken: "offline" and "browse the web" mean what they say anywhere."""
    return start > end


def _free(
    patterns: tuple[str, ...], text: str, taken: Callable[[int, int], bool]
) -> Iterator[re.Match[str]]:
    """Matches of ``patterns`` in ``text`` that nothing else has taken."""
    for pattern in patterns:
        for found in re.finditer(pattern, text):
            if not taken(*found.span()):
                yield found


def _mention(found: re.Match[str], text: str, reading: Reading, out: NetworkWishes) -> None:
    """A mention of the network: negated, it asks for none; hedged, it is a question."""
    start, end = found.span()
    out.spans.append((start, end))
    scope = reading.negated(start, end)
    if scope is not None:
        out.said.setdefault("none", scope.quote(text, start, end))
    elif reading.hedged(start, end) is not None:
        out.hedge = out.hedge or text[start:end]


def _tor(found: re.Match[str], text: str, reading: Reading, out: NetworkWishes) -> None:
    start, end = found.span()
    scope = reading.negated(start, end)
    if scope is not None:
        out.no_tor = out.no_tor or scope.quote(text, start, end)
    else:
        out.said.setdefault("tor", found.group(0))
    out.spans.append((start, end))


def _allowlist(text: str, out: NetworkWishes, is_phrase: Callable[[str], bool]) -> None:
    out.spans += [m.span() for m in _PORTS.finditer(text)]
    ports = [int(p) for p in re.findall(r"\d+", " ".join(_PORTS.findall(text)))]
    ports = [p for p in ports if 1 <= p <= 65535]
    for found in _IP.finditer(text):
        try:
            net = ipaddress.ip_network(found.group(1), strict=False)
        except ValueError:
            continue
        own = [int(found.group(2))] if found.group(2) else []
        out.allow.append((str(net), sorted(set(own + ports))))
        out.spans.append(found.span())
    for found in _DOMAIN.finditer(text):
        name, tld = found.group(1), found.group(2)
        if tld in TLDS and not is_phrase(name) and not _IP.fullmatch(name):
            out.domains.append(name)
            out.spans.append(found.span())
    if out.allow or out.domains:
        out.said["allowlist"] = ", ".join([a for a, _ in out.allow] + out.domains)
