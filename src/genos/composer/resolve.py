"""Stage 4: resolve the apps a request names against the knowledge base.

Catalog apps resolve to their packages for the chosen release (and are
checked against Debian's index when it is cached); generic phrases ("a pdf
reader") take the category's default or become a question; apps Debian does
not ship become a question with real alternatives; other names are looked up
in Debian's index, with close names offered when there is no such package.
Every question also picks a provisional answer (its default, else its first
option) so that a clarification can carry a complete draft.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from genos.composer.catalog import CatalogApp, Category
from genos.composer.extract import Entities
from genos.composer.knowledge import Knowledge
from genos.composer.result import Question, Violation
from genos.spec import App, Decision


@dataclass
class Resolved:
    apps: list[App] = field(default_factory=list)
    needs_network: list[str] = field(default_factory=list)
    forced_mode: tuple[str, str] | None = None
    min_tier: tuple[str, str] | None = None  # (tier, app name that needs it)
    questions: list[Question] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


class Resolver:
    """Resolves one request's app mentions for one release."""

    def __init__(self, kb: Knowledge, release: str, answers: Mapping[str, str]) -> None:
        self.kb = kb
        self.release = release
        self.answers = answers
        self.out = Resolved()
        self._ids: set[str] = set()

    def run(self, ent: Entities) -> Resolved:
        mentioned = {m.id for m in ent.apps if m.kind == "app"}
        for match in ent.apps:
            if match.kind == "app":
                self._app(self.kb.catalog.apps[match.id], match.phrase)
            else:
                self._category(self.kb.catalog.categories[match.id], mentioned)
        for word in ent.candidates:
            self._name(word)
        self._implied(ent)
        return self.out

    def _implied(self, ent: Entities) -> None:
        # "an anonymous browsing session": Tor browsing with no browser named
        # means Tor Browser (Firefox ESR set up for Tor).
        tor_said = ent.network.get("tor", "")
        tor_browser = self.kb.catalog.apps.get("tor-browser")
        has_browser = any(
            self.kb.catalog.apps[i].category == "browser"
            for i in self._ids
            if i in self.kb.catalog.apps
        )
        browsing = "brows" in tor_said or ent.browse_web is not None
        if tor_said and browsing and tor_browser and not has_browser:
            self._add(tor_browser, f"'{tor_said}' with no browser named: Tor Browser.")

    def _add(self, app: CatalogApp, why: str) -> None:
        if app.id in self._ids:
            return
        self._ids.add(app.id)
        packages = list(app.packages_for(self.release))
        index = self.kb.index(self.release)
        missing = [p for p in packages if index is not None and not index.has(p)]
        if missing:
            self.out.violations.append(
                Violation(
                    f"apps.{app.id}",
                    f"{app.name} needs {', '.join(missing)}, "
                    f"which Debian {self.release} does not have",
                )
            )
            return
        self.out.apps.append(
            App(name=app.name, packages=packages, source="catalog", command=app.command)
        )
        self.out.decisions.append(
            Decision(
                field=f"apps.{app.id}",
                value=", ".join(packages),
                rationale=" ".join(filter(None, [why, app.note])),
            )
        )
        if app.network:
            self.out.needs_network.append(app.name)
        if app.network_mode:
            self.out.forced_mode = (app.network_mode, app.name)
        if app.min_tier:
            self.out.min_tier = (app.min_tier, app.name)

    def _app(self, app: CatalogApp, phrase: str) -> None:
        if not app.unavailable:
            self._add(app, f"'{phrase}' is {app.name} in Debian {self.release}.")
            return
        field_name = f"apps.{app.id}"
        options = tuple(a for a in app.alternatives if a in self.kb.catalog.apps)
        choice = self._answer(field_name, options)
        if choice is None:
            self.out.questions.append(
                Question(
                    field_name, f"{app.unavailable}. Which app should stand in for it?", options
                )
            )
            choice = options[0] if options else None
        if choice:
            alt = self.kb.catalog.apps[choice]
            self._add(alt, f"{app.unavailable}; {alt.name} stands in for it.")

    def _category(self, cat: Category, mentioned: set[str]) -> None:
        if mentioned & set(cat.options) or any(
            self.kb.catalog.apps[a].category == cat.id for a in mentioned
        ):
            return  # "firefox browser": the app already answers the category
        field_name = f"apps.{cat.id}"
        choice = self._answer(field_name, cat.options)
        if choice is not None:
            self._add(self.kb.catalog.apps[choice], f"You chose {choice} for '{cat.id}'.")
            return
        if cat.default:
            app = self.kb.catalog.apps[cat.default]
            self._add(app, f"For a {cat.id}, {app.name} is the default: {cat.why}")
            return
        names = ", ".join(self.kb.catalog.apps[o].name for o in cat.options)
        self.out.questions.append(
            Question(field_name, f"Which {cat.id}? Debian offers {names}.", cat.options)
        )
        self._add(self.kb.catalog.apps[cat.options[0]], f"Draft pick for '{cat.id}'.")

    def _name(self, word: str) -> None:
        field_name = f"apps.{word}"
        index = self.kb.index(self.release)
        if index is None:
            self.out.violations.append(
                Violation(
                    field_name,
                    f"'{word}' is not in the catalog and Debian's package index is not "
                    "cached; run `genos catalog update`",
                )
            )
            return
        chosen = self.answers.get(field_name, word)
        if index.has(chosen):
            self._index_app(chosen, index.summary(chosen))
            return
        providers = tuple(index.provides.get(chosen, ()))
        if len(providers) == 1:  # a virtual name only one real package provides
            self._index_app(providers[0], index.summary(providers[0]))
            return
        if providers:
            self.out.questions.append(
                Question(field_name, f"'{word}' is provided by several Debian packages.", providers)
            )
            self._index_app(providers[0], index.summary(providers[0]))
            return
        options = tuple(index.suggest(word))
        if not options:
            self.out.violations.append(
                Violation(
                    field_name, f"no app or Debian package named '{word}' in Debian {self.release}"
                )
            )
            return
        self.out.questions.append(
            Question(
                field_name,
                f"There is no app or Debian package named '{word}'. Did you mean one of these?",
                options,
            )
        )
        self._index_app(options[0], index.summary(options[0]))

    def _index_app(self, name: str, summary: str) -> None:
        if name in self._ids:
            return
        self._ids.add(name)
        self.out.apps.append(App(name=name, packages=[name], source="index"))
        self.out.decisions.append(
            Decision(
                field=f"apps.{name}",
                value=name,
                rationale=f"Found in Debian {self.release}'s package index: {summary}",
            )
        )

    def _answer(self, field_name: str, options: tuple[str, ...]) -> str | None:
        given = self.answers.get(field_name)
        return given if given in options else None
