"""Task -> software: a ranked search over the archive's programs and the curated catalog.

Each program of the release is a document made of the archive's own words
about it (name, summary, AppStream name, summary, keywords and categories,
the media types it opens, debtags facets, the long description), each field
weighted by how directly it says what the program is for. A catalog app
absorbs the document of its main package and adds the curated words (its
aliases and keywords, its category's phrases). Scores are BM25 with a prior
that prefers well-known desktop programs: curated ones, AppStream desktop
applications, programs with a graphical interface and careful debtags.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from genos.composer.catalog import Catalog, CatalogApp
from genos.composer.programs import Program, ProgramIndex
from genos.composer.words import expand, terms

_K1, _B = 1.2, 0.5
_CANDIDATES = 200
_CACHED_MEMBERS = 300  # only common terms' document sets are worth keeping
_FACETS = ("use::", "works-with::", "works-with-format::", "field::", "game::", "junior::")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_GUI_TAGS = frozenset({"interface::x11", "interface::graphical", "x11::application"})
_NETWORK_TAGS = (
    "network::client",
    "use::browsing",
    "use::downloading",
    "use::chatting",
    "works-with::mail",
)


@dataclass(frozen=True)
class Doc:
    """One searchable program: a catalog app (``app`` set) or an archive package."""

    key: str
    package: str
    app: CatalogApp | None
    prior: float


@dataclass(frozen=True)
class Hit:
    """A ranked result and the share of the query's weight it matched."""

    doc: Doc
    score: float
    coverage: float


class TaskIndex:
    """BM25 over one release's programs plus the catalog; built once per release."""

    def __init__(self, catalog: Catalog, programs: ProgramIndex | None, release: str) -> None:
        self.release = release
        self.docs: list[Doc] = []
        self._postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        # Words the archive uses for what programs do (summaries, AppStream keywords
        # and categories, debtags, the catalog): a task must use at least one.
        self.vocabulary: Counter[str] = Counter()
        self._member_sets: dict[str, frozenset[int]] = {}
        bags = self._bags(catalog, programs)
        avg = sum(sum(b.values()) for b in bags) / max(1, len(bags))
        for idx, bag in enumerate(bags):
            length = sum(bag.values())
            for term, tf in bag.items():
                norm = tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * length / avg))
                self._postings[term].append((idx, norm))
        total = len(bags)
        self._idf = {
            t: math.log(1 + (total - len(p) + 0.5) / (len(p) + 0.5))
            for t, p in self._postings.items()
        }

    def _bags(self, catalog: Catalog, programs: ProgramIndex | None) -> list[Counter[str]]:
        found = programs.programs if programs is not None else {}
        absorbed: set[str] = set()
        bags: list[Counter[str]] = []
        for app in catalog.apps.values():
            packages = app.packages_for(self.release)
            if not packages:
                continue  # unavailable apps are reached through their alternatives
            main = _main_package(app, packages)
            program = found.get(main)
            if program is not None and main not in absorbed:
                absorbed.add(main)
            bag = _program_bag(program) if program is not None else Counter()
            curated = " ".join((app.name, app.id, *app.aliases, *app.keywords))
            _add(bag, curated, 3.0)
            # Curated words count as much as three programs' own words.
            self.vocabulary.update(dict.fromkeys(terms(curated), 3))
            for cat in catalog.categories.values():
                if app.id in cat.options:
                    phrases = " ".join((*cat.phrases, *cat.keywords))
                    _add(bag, phrases, 2.0)
                    self.vocabulary.update(dict.fromkeys(terms(phrases), 3))
            prior = 2.0 * (_program_prior(program) if program is not None else 1.5)
            self.docs.append(Doc(f"app:{app.id}", main, app, prior))
            bags.append(bag)
        for program in found.values():
            self.vocabulary.update(set(terms(_strong_text(program))))
        for name, program in found.items():
            if name in absorbed:
                continue
            self.docs.append(Doc(name, name, None, _program_prior(program)))
            bags.append(_program_bag(program))
        return bags

    def knows(self, words: list[str], least: int = 1) -> bool:
        """Whether one of ``words`` is one the archive uses for what programs do.

        Args:
            words: a task phrase.
            least: how many programs (or catalog entries) must use the word.
        """
        query = expand(terms(" ".join(words)), lambda t: t in self._idf)
        return any(self.vocabulary.get(t, 0) >= least for t, w, _ in query if w == 1.0)

    def search(self, words: list[str], limit: int = 8) -> list[Hit]:
        """The best documents for ``words`` (a task phrase), best first.

        Args:
            words: the task's words as the user wrote them.
            limit: at most this many hits.

        Returns:
            Hits with a score (BM25 x coverage^2 x prior) and their coverage:
            the idf-weighted share of the query's words the document has (a
            word counts 0.6 when the document has only what it stands for).
        """
        query = expand(terms(" ".join(words)), lambda t: t in self._idf)
        sources = sorted({src for _, _, src in query})  # sorted: sums in one order, one result
        known = [self._idf[s] for s in sources if s in self._idf]
        average = sum(known) / len(known) if known else 1.0
        # A word the archive never uses counts against coverage (as an average word):
        # "identify plants" is not a task for software just because "identify" is.
        weight_of = {s: self._idf.get(s, average) for s in sources}
        total = sum(weight_of.values()) or 1.0
        scores: dict[int, float] = defaultdict(float)
        for term, weight, _ in query:
            if term in self._idf:
                boost = weight * self._idf[term]
                for idx, norm in self._postings[term]:
                    scores[idx] += boost * norm
        # Coverage only for the best raw scores: the rest cannot reach the top.
        prior = [d.prior for d in self.docs]
        best = heapq.nlargest(_CANDIDATES, scores.items(), key=lambda kv: kv[1] * prior[kv[0]])
        members = {t: self._members(t) for t, _, _ in query if t in self._idf}
        ranked = []
        for idx, score in best:
            credit: dict[str, float] = {}
            for term, weight, source in query:
                if idx in members.get(term, ()):
                    credit[source] = max(credit.get(source, 0.0), 1.0 if weight == 1.0 else 0.6)
            coverage = min(1.0, sum(weight_of[s] * c for s, c in credit.items()) / total)
            ranked.append(Hit(self.docs[idx], score * coverage**2 * prior[idx], coverage))
        ranked.sort(key=lambda h: (-h.score, h.doc.key))
        return ranked[:limit]

    def _members(self, term: str) -> frozenset[int]:
        """The documents that have ``term`` (cached: common terms come back often)."""
        found = self._member_sets.get(term)
        if found is None:
            found = frozenset(idx for idx, _ in self._postings[term])
            if len(found) > _CACHED_MEMBERS:
                self._member_sets[term] = found
        return found


def _main_package(app: CatalogApp, packages: tuple[str, ...]) -> str:
    for name in (app.id, app.command):
        if name in packages:
            return name
    return next((p for p in packages if p != "tor"), packages[0])


def _add(bag: Counter[str], text: str, weight: float) -> None:
    for term in terms(text):
        bag[term] += weight  # type: ignore[assignment]


def _program_bag(p: Program) -> Counter[str]:
    bag: Counter[str] = Counter()
    _add(bag, p.name.replace("-", " "), 3.0)
    _add(bag, p.summary, 2.5)
    _add(bag, f"{p.app_name} {p.app_summary}", 2.5)
    _add(bag, " ".join(p.keywords), 2.5)
    _add(bag, " ".join(_CAMEL.sub(" ", c) for c in p.categories), 1.5)
    # Media types say what a program opens; a browser opening every format says little.
    media = {m.rpartition("/")[2].removeprefix("x-") for m in p.mediatypes}
    _add(bag, " ".join(sorted(media)[:12]), 0.3)
    facets = [t.partition("::")[2] for t in p.tags if t.startswith(_FACETS)]
    _add(bag, " ".join(f.replace(":", " ") for f in facets), 1.5)
    _add(bag, p.description, 0.6)
    return bag


def _strong_text(p: Program) -> str:
    facets = [t.partition("::")[2].replace(":", " ") for t in p.tags if t.startswith(_FACETS)]
    return " ".join(
        (p.summary, p.app_summary, *p.keywords, *(_CAMEL.sub(" ", c) for c in p.categories),
         *facets)
    )  # fmt: skip


# Debtags' placeholder for "not reviewed yet" (``role::TODO``, ``use::TODO``...):
# such a tag says nothing about the program, so it does not count as curation.
_UNREVIEWED = "::TODO"


def _program_prior(p: Program) -> float:
    tags = set(p.tags)
    careful = len([t for t in p.tags if not t.endswith(_UNREVIEWED)]) >= 5
    return (
        1.0
        * (1.6 if p.desktop else 1.0)
        * (1.25 if tags & _GUI_TAGS else 1.0)
        * (1.1 if careful else 1.0)
    )


def networked(p: Program) -> bool:
    """Whether the archive's debtags say the program works over the network."""
    return any(t.startswith(_NETWORK_TAGS) for t in p.tags)
