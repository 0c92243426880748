"""Task phrases: what a request wants to *do* ("cut a podcast", "draw circuit diagrams").

After every extractor has taken its words (apps, network, resources,
durations, the environment nouns...), what is left of each clause, minus
filler, is the clause's task phrase. A phrase introduced by a generic head
("something to edit photos", "a way to draw plots", "an app for budgeting")
asks for software even next to named apps; any other phrase next to named
apps only says what they are for ("gimp for editing photos") and adds
nothing. :func:`choose` turns a task's search hits into one app or a question.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from genos.composer.catalog import Catalog, Category
from genos.composer.language import NEGATION_WORDS, Reading, Word
from genos.composer.lexicon import ENV_NOUNS
from genos.composer.search import Hit, TaskIndex
from genos.composer.words import STOP, stem

_GENERIC_HEAD = re.compile(
    r"\b(?:something|somewhere|smth|anything|a way|a place|a program|a tool|an app|"
    r"an application|a utility|some software|software|apps?|programs?|tools?|stuff)\s+"
    r"(?:to|for|that|which|where|so|i can)\b"
)
FILLER = frozenset(
    """
    hi hello hey yo thanks thank cheers ok okay yes yeah lol thx ty real quick quickly asap
    now today tomorrow tonight soon later right basically honestly actually really kindly
    simply good great nice cool awesome fine perfect small little big large tiny fast slow
    clean fresh basic basics minimal plain modern latest default standard normal regular
    usual proper decent safe safely secure securely isolated sure able allowed enough
    something somewhere anything everything way place stuff thing things spin create
    provide provision start set setup give get make want need like would could should
    maybe also one two couple bunch few lots kinda sorta gonna wanna pls plz please
    env environment environments box boxes machine computer desktop sandbox linux debian
    system workspace session instance container pc laptop gui os distro vm reach only
    i'm i'd i've it's that's there's here's gimme lemme u ur im id ive else preferably
    ideally year years old mum mom dad uncle aunt wife husband son daughter grandma
    grandmother grandpa grandfather friend friends boss colleague colleagues teacher
    got sent told said asked gave bought received found brought smth sth wana gonna
    day morning evening night afternoon install installed ram memory cpu cpus cores disk
    storage gb ways way direction directions fancy frills go going afterwards later
    first again sometimes often daily weekly usually mostly together boot booting launch
    launching reboot restart blank empty bare vanilla bit weird strange supposedly home
    think guess suppose believe quiet calm cozy nice lovely short long few several various
    turn works matter matters probably definitely full entire whole plus dev wrote written
    made
    """.split()
)
_MAX_WORDS = 8
_VERB_GAP = re.compile(
    r"\s*(?:(?:a|an|the|my|our|some|his|her|their|your|in|into|on|to|with|up|out)\s+)*"
)
_DETERMINERS = frozenset(
    "a an the my our your his her their some this that these those it them".split()
)
_PURPOSE_GAP = re.compile(r"\s*(?:for|to)\s+(?:(?:a|an|the|my|our|some|your)\s+)*")
_PREPOSITIONS = frozenset("of from for about with in at on during before after into like".split())
# Verbs that only open a file: with a format word they ask for its viewer.
VIEW_VERBS = frozenset(
    "open view read see look check inspect review examine watch play listen browse".split()
)
VIEW_STEMS = frozenset(stem(v) for v in VIEW_VERBS)
# Verbs that start an activity of their own after "and" ("... and edit the video").
TASK_VERBS = frozenset(
    """
    edit write draw record play watch listen read compile debug scan convert make create
    design print burn rip sync encrypt chat browse download upload learn practise practice
    study analyse analyze plot solve compare merge manage organize organise plan translate
    build develop code program cut mix compose sketch paint model render animate stream
    search track back share send sort tag clean remove fix trace tune type teach present
    calculate simulate take keep turn view look open test check run add stream
    """.split()
)
# "test a shell script", "open an attachment", "try some code": the user brings
# the thing and a shell or a viewer is enough; no software is asked for.
_BRINGS_ITS_OWN = frozenset(
    """
    test testing try trying run running check checking open opening look see use do work
    play review inspect handle view examine experiment experiments analyse analyze
    analysing analyzing analysis investigate investigating study studying detonate
    extension extensions plugin plugins addon addons add-on add-ons service services
    script scripts file files code program binary binaries attachment attachments link
    links document documents sample samples project projects idea ideas it this that
    shell command commands thing things url urls tutorial course
    class homework lab workshop stuff
    """.split()
)


@dataclass(frozen=True)
class Task:
    """A task phrase of one clause: its words, where it is, and how it was introduced."""

    words: tuple[str, ...]
    quote: str
    start: int
    end: int
    generic: bool
    listed: bool = False  # a short item of a list ("browser, email, office")
    heads: tuple[tuple[str, ...], ...] = ()  # the activity and its object, shortest last
    said: tuple[str, ...] = ()  # every word of the phrase, stop words too ("open")
    another: bool = False  # a second activity of its clause ("... and edit the video")
    on_category: bool = False  # only qualifies a named category ("download torrents")

    @property
    def asked(self) -> bool:
        """Whether the phrase asks for software even next to named apps."""
        return self.generic or self.listed or self.another


def on_categories(text: str, found: list[Task], categories: list[tuple[int, int]]) -> list[Task]:
    """Mark the tasks that are only the verb of a category named right after them.

    Args:
        text: the folded request.
        found: its task phrases.
        categories: character spans of the category phrases it names.

    Returns:
        The tasks, ``on_category`` set where "download" meets "torrents".
    """
    return [replace(task, on_category=_verb_of(text, task, categories)) for task in found]


def _verb_of(text: str, task: Task, categories: list[tuple[int, int]]) -> bool:
    """The task is the verb of a category after it ("download torrents"), or the purpose
    of one before it ("a dictionary and thesaurus for writing")."""
    return any(
        (start >= task.end and _VERB_GAP.fullmatch(text[task.end : start]) is not None)
        or (end <= task.start and _PURPOSE_GAP.fullmatch(text[end : task.start]) is not None)
        for start, end in categories
    )


def find(text: str, reading: Reading, taken: list[tuple[int, int]]) -> list[Task]:
    """The task phrase of each clause of ``text``: its words no extractor took.

    Args:
        text: the folded request.
        reading: its clauses.
        taken: character spans other extractors used.
    """
    out = []
    for lo, hi in reading.clauses:
        in_clause = [w for w in reading.words if lo <= w.start < hi and not w.punct]
        # A negated word asks for nothing ("no impress"): it is nobody's task.
        kept = [w for w in in_clause if reading.negated(w.start, w.end) is None]
        for n, part in enumerate(_activities(kept)):
            task = _task(text, part, taken, len(reading.clauses) > 1 and len(in_clause) <= 3)
            if task is not None:
                out.append(replace(task, another=n > 0))
    return out


def _task(text: str, part: list[Word], taken: list[tuple[int, int]], short: bool) -> Task | None:
    words = [w for w in part if _content(w.text) and not _in(w, taken)]
    words = [w for i, w in enumerate(words) if not _attachment_kind(words, i)]
    if not words or all(w.text in _BRINGS_ITS_OWN for w in words):
        return None
    words = words[:_MAX_WORDS]
    span = text[part[0].start : part[-1].end]
    generic = _GENERIC_HEAD.search(span) is not None
    quote = text[words[0].start : words[-1].end]
    names = tuple(w.text for w in words)
    kept = tuple(h for h in dict.fromkeys(_heads(part, words)) if h and h != names)
    listed = short and len(words) <= 2
    said = tuple(w.text for w in part)
    return Task(names, quote, words[0].start, words[-1].end, generic, listed, kept, said=said)


def _activities(words: list[Word]) -> list[list[Word]]:
    """Split a clause at "and"/"then" before a second activity ("record my screen and edit
    the video"), not inside one ("merge and split pdf files", "write and run code")."""
    parts: list[list[Word]] = [[]]
    for i, word in enumerate(words):
        nxt = words[i + 1].text if i + 1 < len(words) else ""
        if word.text in ("and", "then") and nxt in TASK_VERBS and _has_object(parts[-1]):
            parts.append([])
            continue
        parts[-1].append(word)
    return [p for p in parts if p]


def _has_object(part: list[Word]) -> bool:
    """Whether an activity is complete: its verb has an object ("record my screen")."""
    left = [w.text for w in part if w.text not in _DETERMINERS]
    verb = next((i for i, w in enumerate(left) if w in TASK_VERBS), None)
    if verb is None:
        return len(left) >= 2
    return len(left) > verb + 1


def _heads(part: list[Word], words: list[Word]) -> list[tuple[str, ...]]:
    """The activity without what follows its object, longest first: "edit photos" of
    "edit photos from my holiday", "write sheet music" of "... for my choir", "pdf" of
    "open a weird pdf my bank sent"."""
    kept = {id(w) for w in words}
    head: list[str] = []
    for word in part:
        if word.text in _PREPOSITIONS and len(head) >= 2:
            break
        if id(word) in kept:
            head.append(word.text)
    out = [tuple(head)]
    verb = next((i for i, w in enumerate(part) if w.text in TASK_VERBS), None)
    if verb is not None:
        after = [w.text for w in part[verb + 1 :] if id(w) in kept]
        lead = (part[verb].text,) if id(part[verb]) in kept else ()
        out += [(*lead, *after[:2]), (*lead, *after[:1])]
    return out


def _attachment_kind(words: list[Word], i: int) -> bool:
    """'email' in "an email attachment": where the file came from, not a task."""
    nxt = words[i + 1].text if i + 1 < len(words) else ""
    return words[i].text in ("email", "mail", "e-mail") and nxt.startswith("attachment")


def _content(word: str) -> bool:
    return (
        word not in STOP
        and word not in FILLER
        and word not in NEGATION_WORDS
        and word not in ENV_NOUNS
        and not word.isdigit()
        and not word.endswith("n't")
        and len(word) > 1
    )


def _in(word: Word, taken: list[tuple[int, int]]) -> bool:
    return any(a <= word.start and word.end <= b for a, b in taken)


@dataclass(frozen=True)
class Choice:
    """What a task resolves to: one hit, a question among several, or nothing."""

    pick: Hit | None
    options: tuple[Hit, ...] = ()
    by_default: str = ""  # the category whose default was taken
    words: tuple[str, ...] = ()  # the words that found it (the phrase or its activity)


def choose(hits: list[Hit], min_coverage: float, defaults: dict[str, str]) -> Choice:
    """Pick from a task's hits.

    The top hit must cover ``min_coverage`` of the task's words. When it is a
    curated app whose category has a default that scored nearly as well, the
    default wins (curated "why"); when two to four hits score within 20% of
    the top, they are asked about; otherwise the top hit is taken.

    Args:
        hits: search hits, best first, already without excluded apps.
        min_coverage: the least share of the task's words the top hit must have.
        defaults: catalog app id -> its category's default app id.
    """
    if not hits or hits[0].coverage < min_coverage:
        return Choice(None)
    top = hits[0]
    default = defaults.get(top.doc.app.id) if top.doc.app is not None else None
    if default is not None:
        found = next((h for h in hits if h.doc.app is not None and h.doc.app.id == default), None)
        if found is not None and found.score >= 0.5 * top.score:
            return Choice(found, by_default=default)
    close = tuple(h for h in hits[:4] if h.score >= 0.8 * top.score)
    if len(close) >= 2:
        return Choice(top, close)
    return Choice(top)


# A task with one of these words needs the network whatever program does it.
NEEDS_NETWORK = re.compile(
    r"\b(?:stream\w*|twitch|youtube|iptv|online|internet|web ?sites?|email\w*|e-mail|chat\w*|"
    r"download\w*|upload\w*|sync\w*|cloud|remote\w*|server|ssh|video ?call\w*|voip|"
    r"torrent\w*|rss|news ?feeds?|podcasts? subscriptions?)\b"
)
_MIN_COVERAGE = 0.6  # the least share of a phrase its pick must explain
_SURE = 0.8  # above this the whole phrase's pick stands
_FULL = 0.9  # what the activity alone must have of its own words


def opens(task: Task, catalog: Catalog) -> tuple[str, Category] | None:
    """The category that opens the file format of a task that only views files.

    "reading pdfs" and "check an invoice pdf" ask for a pdf reader; editing,
    converting or splitting a file is a task for the search.

    Args:
        task: the task phrase.
        catalog: the catalog, with its ``formats``.

    Returns:
        The format word and the category, or None.
    """
    viewing = any(stem(w) in VIEW_STEMS for w in task.said)
    only_files = all(w in catalog.formats or w in ("file", "files") for w in task.words)
    if not (viewing or only_files):
        return None
    for word in task.words:
        cat = catalog.categories.get(catalog.formats.get(word, ""))
        if cat is not None:
            return word, cat
    return None


def pick(
    index: TaskIndex,
    task: Task,
    usable: Callable[[Hit], bool],
    defaults: dict[str, str],
    *,
    strict: bool,
) -> Choice:
    """The software for a task phrase: from the whole phrase, else from its activity.

    Args:
        index: the release's task search.
        task: the task phrase.
        usable: whether a hit may be installed (not negated, not already there).
        defaults: catalog app id -> the default of its category.
        strict: the request is nothing but this task; its words must be ones
            several programs use ("a box of chocolates" is no task).

    Returns:
        The choice, with the words that found it.
    """
    if not index.knows(list(task.words), least=3 if strict else 1):
        return Choice(None)
    hits = [h for h in index.search(list(task.words), 12) if usable(h)]
    choice = replace(choose(hits, _MIN_COVERAGE, defaults), words=task.words)
    if choice.pick is not None and choice.pick.coverage >= _SURE:
        return choice
    relevant = {h.doc.key for h in hits}
    for head in task.heads:
        # The activity alone ("edit photos" of "edit photos from my holiday", "pdf" of
        # "open a weird pdf my bank sent"), if a program has all of its words and is
        # among what the whole phrase finds.
        found = [h for h in index.search(list(head), 12) if h.doc.key in relevant]
        better = choose(found, _FULL, defaults)
        if better.pick is not None:
            return replace(better, words=head)
    return choice
