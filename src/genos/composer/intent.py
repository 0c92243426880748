"""Stage 2: is this a request for an environment at all, and does it ask for the host?

A request names something GenOS provides: an environment word ("desktop",
"sandbox", "vm"), an app or kind of app from the catalog, an operating system,
the owner's own disk image ("boot my image win-test"), or a network,
isolation or protocol wish. Anything else ("what's the weather
today?") is refused as not a request. Asking for the host (mount it, run
privileged, take its network) is refused whatever else the text says.
"""

from __future__ import annotations

from dataclasses import dataclass

from genos.composer.lexicon import (
    ENV_NOUNS,
    ESCALATION,
    INJECTION,
    NET_INTERNET,
    NET_NONE,
    NET_TOR,
    OS_NAMES,
    PROTOCOLS,
    TIERS,
    USER_IMAGE,
    first,
)
from genos.composer.matcher import PhraseMatcher
from genos.composer.normalise import Normalised

_SIGNALS = (
    *NET_NONE,
    *NET_TOR,
    *NET_INTERNET,
    *OS_NAMES.values(),
    *PROTOCOLS.values(),
    *TIERS.values(),
    *USER_IMAGE,
    # Work on untrusted content asks for a (strong) environment too; a mere
    # question about malware does not.
    r"\b(?:analy[sz]\w*|open\w*|run\w*|inspect\w*|examin\w*|detonat\w*|test\w*|"
    r"check\w*|handl\w*|view\w*|study\w*)\b[^.?!]*\b(?:malware|malicious|virus\w*|"
    r"ransomware|trojans?|suspicious|untrusted|infected|phishing)\b",
)


@dataclass(frozen=True)
class Intent:
    request: bool
    escalation: str | None
    injection: str | None


def classify(norm: Normalised, matcher: PhraseMatcher) -> Intent:
    """Decide whether ``norm`` asks for an environment; note host-escalation wishes."""
    text = norm.text
    request = (
        any(tok in ENV_NOUNS for tok in norm.tokens)
        or bool(matcher.scan(norm.tokens)[0])
        or first(_SIGNALS, text) is not None
    )
    return Intent(request, first(ESCALATION, text), first(INJECTION, text))
