"""Stage 4: resolve the software a request names or needs against the knowledge base.

Catalog apps resolve to their packages for the chosen release (and are
checked against Debian's index when it is cached); generic phrases ("a pdf
reader") take the category's default or become a question; apps Debian does
not ship become a question with real alternatives; exact Debian package names
are installed as named; other names are looked up in Debian's index, with
close names offered when there is no such package. Task phrases ("cut a
podcast") go through the task search (``tasks``). Nothing the request
negated is ever added. Every question also picks a provisional answer (its
default, else its first option) so that a clarification carries a complete
draft, and every decision quotes the words it came from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from genos.composer import tasks as tasks_mod
from genos.composer.catalog import CatalogApp, Category
from genos.composer.entities import Entities
from genos.composer.knowledge import Knowledge
from genos.composer.result import Question, Violation
from genos.composer.search import Hit, networked
from genos.spec import App, Decision

_MAX_TASK_APPS = 3


@dataclass
class Resolved:
    apps: list[App] = field(default_factory=list)
    needs_network: list[str] = field(default_factory=list)
    forced_mode: tuple[str, str] | None = None
    min_tier: tuple[str, str] | None = None  # (tier, app name that needs it)
    questions: list[Question] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # task phrases nothing fits


class Resolver:
    """Resolves one request's software for one release."""

    def __init__(self, kb: Knowledge, release: str, answers: Mapping[str, str]) -> None:
        self.kb = kb
        self.release = release
        self.answers = answers
        self.out = Resolved()
        self._ids: set[str] = set()
        self._excluded: set[str] = set()
        self._task_only = False
        self._defaults = {
            app: cat.default
            for cat in kb.catalog.categories.values()
            if cat.default
            for app in cat.options
        }

    def run(self, ent: Entities, task_only: bool = False) -> Resolved:
        """Resolve ``ent``'s software.

        Args:
            ent: the request's entities.
            task_only: the request names nothing but a task; its words must then be
                ones several programs use ("a box of chocolates" is no task).

        Returns:
            The apps, what needs the network or a stronger tier, questions,
            violations, decisions, and the task phrases nothing fits.
        """
        self._task_only = task_only
        self._excluded = set(ent.excluded) - self._unsure(ent)
        mentioned = {m.id for m in ent.apps if m.kind == "app"}
        for match in ent.apps:
            if match.kind == "app":
                self._app(self.kb.catalog.apps[match.id], self._quote(match.phrase, ent))
            else:
                self._category(self.kb.catalog.categories[match.id], mentioned, match.phrase)
        for name, words in ent.explicit:
            index = self.kb.index(self.release)
            summary = index.summary(name) if index is not None else ""
            what = f" ({summary})" if summary else ""
            self._index_app(name, f"You named '{words}': installed as named{what}.")
        for word in ent.candidates:
            self._name(word)
        self._remote(ent)
        self._implied(ent)
        self._tasks(ent)
        self._note_excluded(ent)
        return self.out

    def _unsure(self, ent: Entities) -> set[str]:
        """Apps negated only through an "and" ("not chromium and gimp"): left out in the
        draft and asked about; the ones answered 'install' are installed."""
        wanted = set()
        for ident, words in ent.unsure.items():
            field_name = f"apps.{ident}"
            answer = self.answers.get(field_name)
            if answer in ("install", "leave-out"):
                wanted.update([ident] if answer == "install" else [])
                continue
            name = self.kb.catalog.apps[ident].name
            question = f"'{words}': should {name} be left out too?"
            self.out.questions.append(Question(field_name, question, ("leave-out", "install")))
        for ident in wanted:
            self._app(self.kb.catalog.apps[ident], f"'{ent.unsure[ident]}'")
        return wanted

    def _quote(self, phrase: str, ent: Entities) -> str:
        """The words as typed, and as read when a slip was corrected: "'fierfox' (read as
        'firefox')"."""
        typed = " ".join(ent.corrections.get(w, w) for w in phrase.split())
        return f"'{phrase}'" if typed == phrase else f"'{typed}' (read as '{phrase}')"

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
        browsing = "brows" in tor_said or ent.browse_web is not None or "web" in tor_said
        if has_browser or "browser" in ent.excluded:
            return
        if tor_said and browsing and tor_browser:
            self._add(tor_browser, f"'{tor_said}' with no browser named: Tor Browser.")
        elif ent.browse_web and not tor_said and "browser" in self.kb.catalog.categories:
            # "just browse a bit": browsing needs a browser, and which one is asked.
            self._category(self.kb.catalog.categories["browser"], set(), ent.browse_web)

    def _remote(self, ent: Entities) -> None:
        cat = self.kb.catalog.categories.get("remote-desktop-client")
        if ent.remote_client is None or cat is None:
            return
        if any(
            self.kb.catalog.apps[i].category == cat.id
            for i in self._ids
            if i in self.kb.catalog.apps
        ):
            return
        why = (
            f"'{ent.remote_client}' is another machine's desktop, reached from this "
            "environment with a client"
        )
        self._category(cat, set(), ent.remote_client, why=why)

    def _excluded_app(self, app: CatalogApp) -> bool:
        """Whether the request negated ``app``, or a suite it is part of ("not libreoffice"
        rules out libreoffice-calc too)."""
        packages = set(app.packages_for(self.release))
        if app.id in self._excluded or packages & self._excluded:
            return True
        suites = [
            f"{p}-"
            for name in self._excluded
            if name in self.kb.catalog.apps
            for p in self.kb.catalog.apps[name].packages_for(self.release)
        ]
        return bool(suites) and all(p.startswith(tuple(suites)) for p in packages)

    def _add(self, app: CatalogApp, why: str) -> None:
        if app.id in self._ids or self._excluded_app(app):
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
            self._add(app, f"{phrase} is {app.name} in Debian {self.release}.")
            return
        field_name = f"apps.{app.id}"
        options = tuple(
            a
            for a in app.alternatives
            if a in self.kb.catalog.apps and not self._excluded_app(self.kb.catalog.apps[a])
        )
        choice = self._answer(field_name, options)
        if choice is None:
            self.out.questions.append(
                Question(
                    field_name,
                    f"{phrase}: {app.unavailable}. Which app should stand in for it?",
                    options,
                )
            )
            choice = options[0] if options else None
        if choice:
            alt = self.kb.catalog.apps[choice]
            self._add(alt, f"{phrase}: {app.unavailable}; {alt.name} stands in for it.")

    def _category(self, cat: Category, mentioned: set[str], phrase: str, why: str = "") -> None:
        if mentioned & set(cat.options) or any(
            self.kb.catalog.apps[a].category == cat.id for a in mentioned
        ):
            return  # "firefox browser": the app already answers the category
        options = tuple(o for o in cat.options if not self._excluded_app(self.kb.catalog.apps[o]))
        field_name = f"apps.{cat.id}"
        if not options or any(q.field == field_name for q in self.out.questions):
            return  # "a dictionary and thesaurus": one question for the category
        choice = self._answer(field_name, options)
        lead = why or f"For '{phrase}'"
        if choice is not None:
            self._add(self.kb.catalog.apps[choice], f"You chose {choice} for '{phrase}'.")
            return
        default = cat.default if cat.default in options else None
        if default or len(options) == 1:
            app = self.kb.catalog.apps[default or options[0]]
            reason = cat.why if default else "the one option left."
            self._add(app, f"{lead}: {app.name} ({reason})")
            return
        names = ", ".join(self.kb.catalog.apps[o].name for o in options)
        question = f"Several programs fit '{phrase}': {names}. Which one?"
        self.out.questions.append(Question(field_name, question, options))
        self._add(self.kb.catalog.apps[options[0]], f"Draft pick for '{phrase}'.")

    def _tasks(self, ent: Entities) -> None:
        if ent.user_image is not None:
            return  # nothing is installed into the owner's own image
        # Named apps make the rest of the request context ("gimp for editing photos"); a
        # category can be a task's object ("streaming games to twitch"), so it does not.
        apps = [m for m in ent.apps if m.kind == "app"]
        named = bool(apps or ent.explicit or ent.candidates or ent.remote_client)
        added = 0
        for task in ent.tasks:
            if (named and not task.asked) or added >= _MAX_TASK_APPS:
                continue
            if task.on_category:
                continue  # "trace my family tree": the category is the software
            added += self._task(task)

    def _task(self, task: tasks_mod.Task) -> int:
        """Software for one task phrase; returns how many apps it added."""
        opened = tasks_mod.opens(task, self.kb.catalog)
        if opened is not None:
            word, cat = opened
            before = len(self.out.apps)
            self._category(cat, set(), word, why=f"To open '{word}' ('{task.quote}')")
            return len(self.out.apps) - before
        index = self.kb.tasks(self.release)
        strict = self._task_only
        choice = tasks_mod.pick(index, task, self._usable, self._defaults, strict=strict)
        if choice.pick is None:
            self.out.unresolved.append(task.quote)
            return 0
        if tasks_mod.NEEDS_NETWORK.search(" ".join(choice.words)):
            self.out.needs_network.append(f"'{task.quote}'")
        why = f"For '{task.quote}'"
        if choice.options and not choice.by_default:
            field_name = f"apps.{_slug(task.quote)}"
            keys = tuple(_option(h) for h in choice.options)
            picked = self._answer(field_name, keys)
            if picked is None:
                names = ", ".join(_label(h) for h in choice.options)
                question = f"Several programs fit '{task.quote}': {names}. Which one?"
                self.out.questions.append(Question(field_name, question, keys))
            chosen = next((h for h in choice.options if _option(h) == picked), choice.pick)
            self._install(chosen, why + ("" if picked else " (draft pick)"))
            return 1
        if choice.by_default:
            cat = next(
                c for c in self.kb.catalog.categories.values() if c.default == choice.by_default
            )
            why += f", the {cat.id} default: {cat.why}"
        self._install(choice.pick, why)
        return 1

    def _usable(self, hit: Hit) -> bool:
        doc = hit.doc
        if doc.app is not None:
            return not self._excluded_app(doc.app) and doc.app.id not in self._ids
        return doc.package not in self._excluded and doc.package not in self._ids

    def _install(self, hit: Hit, why: str) -> None:
        if hit.doc.app is not None:
            self._add(hit.doc.app, f"{why}: {hit.doc.app.name}.")
            return
        index = self.kb.index(self.release)
        summary = index.summary(hit.doc.package) if index is not None else ""
        said = f"{why}: {hit.doc.package}, '{summary}' (Debian {self.release}'s description)."
        self._index_app(hit.doc.package, said)

    def _note_excluded(self, ent: Entities) -> None:
        for name, words in ent.excluded.items():
            why = f"You asked for '{words}': never installed."
            self.out.decisions.append(
                Decision(field=f"apps.{name}", value="excluded", rationale=why)
            )

    def _name(self, word: str) -> None:
        """A name that is no catalog phrase: a Debian package, a virtual one, or a question."""
        field_name = f"apps.{word}"
        index = self.kb.index(self.release)
        if index is None:
            why = (
                f"'{word}' is not in the catalog and Debian's package index is not cached; "
                "run `genos catalog update`"
            )
            self.out.violations.append(Violation(field_name, why))
            return
        chosen = self.answers.get(field_name, word)
        if index.has(chosen):
            said = f"'{word}' found in Debian {self.release}'s package index: "
            self._index_app(chosen, said + index.summary(chosen))
            return
        providers = tuple(index.provides.get(chosen, ()))
        if len(providers) == 1:  # a virtual name only one real package provides
            said = f"'{word}' is provided by {providers[0]}: "
            self._index_app(providers[0], said + index.summary(providers[0]))
            return
        question = f"'{word}' is provided by several Debian packages."
        self._ask_name(field_name, word, providers or self._ranked(index.suggest(word)), question)

    def _ask_name(
        self, field_name: str, word: str, options: tuple[str, ...], question: str
    ) -> None:
        index = self.kb.index(self.release)
        if not options or index is None:
            why = f"no app or Debian package named '{word}' in Debian {self.release}"
            self.out.violations.append(Violation(field_name, why))
            return
        if not index.provides.get(word):
            question = (
                f"There is no app or Debian package named '{word}'. Did you mean one of these?"
            )
        self.out.questions.append(Question(field_name, question, options))
        self._index_app(options[0], f"Draft pick for '{word}': {index.summary(options[0])}")

    def _ranked(self, names: list[str]) -> tuple[str, ...]:
        """Close names, desktop applications first ("telegram" -> telegram-desktop)."""
        found = self.kb.programs(self.release)
        if found is None:
            return tuple(names)
        desktop = [n for n in names if n in found.programs and found.programs[n].desktop]
        return tuple(dict.fromkeys([*desktop, *names]))

    def _index_app(self, name: str, rationale: str) -> None:
        if name in self._ids or name in self._excluded:
            return
        self._ids.add(name)
        self.out.apps.append(App(name=name, packages=[name], source="index"))
        self.out.decisions.append(Decision(field=f"apps.{name}", value=name, rationale=rationale))
        found = self.kb.programs(self.release)
        program = found.programs.get(name) if found is not None else None
        if program is not None and networked(program):
            self.out.needs_network.append(name)  # a mail or chat client, by its debtags

    def _answer(self, field_name: str, options: tuple[str, ...]) -> str | None:
        given = self.answers.get(field_name)
        return given if given in options else None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "task"


def _option(hit: Hit) -> str:
    return hit.doc.app.id if hit.doc.app is not None else hit.doc.package


def _label(hit: Hit) -> str:
    return hit.doc.app.name if hit.doc.app is not None else hit.doc.package
