"""What a request said, with the words that said it, and the reader that fills it in.

:class:`Entities` is what extraction produces and resolution and decisions
read. :class:`Extractor` is the shared state of one extraction: the folded
text (with the words one extractor used blanked out for the others), the
language layer's reading, and helpers that honour negation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from genos.composer import refusals, tasks
from genos.composer.language import Reading
from genos.composer.matcher import Match
from genos.composer.network import NetworkWishes
from genos.composer.normalise import Normalised


@dataclass
class Entities:
    """Everything the request said, with the words that said it."""

    apps: list[Match] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    explicit: list[tuple[str, str]] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    unsure: dict[str, str] = field(default_factory=dict)
    category_spans: list[tuple[int, int]] = field(default_factory=list)
    tasks: list[tasks.Task] = field(default_factory=list)
    corrections: dict[str, str] = field(default_factory=dict)
    remote_client: str | None = None
    foreign_os: list[str] = field(default_factory=list)
    user_image: str | None = None
    distribution: str | None = None
    release: str | None = None
    net: NetworkWishes = field(default_factory=NetworkWishes)
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
    refusals: refusals.Refusals = field(default_factory=refusals.Refusals)
    injection: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)
    taken: list[tuple[int, int]] = field(default_factory=list)

    # The network wishes under the names the decider has always read.
    @property
    def network(self) -> dict[str, str]:
        """Modes asked for, with their words."""
        return self.net.said

    @property
    def browse_web(self) -> str | None:
        """The words asking to browse the web."""
        return self.net.browse_web

    @property
    def allow(self) -> list[tuple[str, list[int]]]:
        """Addresses and ports to allow."""
        return self.net.allow

    @property
    def domains(self) -> list[str]:
        """Domains to allow."""
        return self.net.domains

    def take(self, span: tuple[int, int], key: str | None = None, words: str = "") -> None:
        """Record that ``span`` was used (and, with ``key``, the words as evidence)."""
        self.taken.append(span)
        if key is not None:
            self.evidence.setdefault(key, words)


class Extractor:
    """Runs every extractor over one folded request."""

    def __init__(self, norm: Normalised, reading: Reading) -> None:
        self.norm = norm
        self.reading = reading
        self.ent = Entities()
        self.text = norm.text
        self.blanked: list[tuple[int, int]] = []

    def take_all(self, patterns: tuple[str, ...]) -> None:
        """Take every match of ``patterns``: those words are nobody's task."""
        for pattern in patterns:
            self.ent.taken += [m.span() for m in re.finditer(pattern, self.text)]

    def hit(
        self, patterns: tuple[str, ...] | list[str], negated: bool = False
    ) -> re.Match[str] | None:
        """The first match of ``patterns`` that is (or, with ``negated``, is not) negated."""
        for pattern in patterns:
            for found in re.finditer(pattern, self.text):
                is_negated = self.reading.negated(*found.span()) is not None
                if is_negated == negated:
                    return found
        return None

    def blank(self, found: re.Match[str]) -> None:
        """Take ``found`` out of the text others read (same length: spans stay valid)."""
        start, end = found.span()
        self.text = self.text[:start] + " " * (end - start) + self.text[end:]
        self.ent.taken.append((start, end))
        self.blanked.append((start, end))
