"""Stage 2: is this a request for a computer, and if not, what is it?

A request names something GenOS provides: an environment ("a debian box", not
"a box of chocolates"), software (an app, a Debian package), an operating
system, the owner's own image, a network, isolation, protocol, resource,
lifetime or persistence wish, or work on untrusted content. A task alone
("draw circuit diagrams") is a request too, once the task search finds
software for it (the pipeline checks that).

Other text is told apart with a reason the user can act on: a question
("what is malware?"), a question about GenOS itself, a request for content
("write me a poem"), an errand ("book me a flight"), a greeting. A request
frame ("can I get", "give me", "is it possible to have") turns a question
back into a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genos.composer.lexicon import ENV_NOUNS
from genos.composer.normalise import Normalised

_NOT_COMPUTING = re.compile(
    r"\b(?:washing|coffee|espresso|time|sewing|slot|vending|answering|fax|lunch|shoe|gift|"
    r"post|letter|juke|pizza|cereal|tool|sound|solar|immune|nervous|heating|ticket|voting|"
    r"bread|ice|snow|pinball|pasta|rowing|lottery|cash|fruit|toy|jewel\w*|moving|"
    r"cardboard|litter|sand|skin)\s+(?:machines?|box(?:es)?|systems?|"
    r"environments?|sessions?|setups?)\b|\bbox(?:es)? of\b|\b(?:therapy|gym|study|photo|"
    r"jam|q&a|training) sessions?\b"
)
_REQUEST_FRAME = re.compile(
    r"\b(?:i need|i want|i'd like|i would like|give me|get me|can i (?:get|have|use)|"
    r"could i (?:get|have|use)|can you (?:give|set|make|create|spin|start|build|prepare|"
    r"provision|get|launch)|could you (?:give|set|make|create|spin|start|build|prepare|"
    r"provision|get|launch)|is it possible to (?:get|have|run|use|open)|set me up|spin up|"
    r"how (?:can|do|could) i (?:get|have|run|use|browse|open|edit|watch|play)|"
    r"do you have|have you got)\b"
)
_ASK = r"(?:please |can you |could you )?"
_KINDS = (
    (
        "about-genos",
        r"\bgenos\b.*\?|^(?:what|how|why|can|could|does|is)\b[^.]*\bgenos\b|"
        r"^how (?:do|can|could|should) i (?:delete|remove|stop|kill|suspend|resume|connect to|"
        r"log ?in|sign ?in|share|see|list|find|update|rename|restart)\b|"
        r"^what (?:apps|software|programs|can i|do you)\b",
        "this is a question about GenOS; `genos --help` and the README answer it",
    ),
    (
        "content",
        "|".join(
            (
                rf"^{_ASK}(?:write|compose|draft|generate|tell|sing|draw) me\b",
                rf"^{_ASK}give me (?:a|an|some|the) (?:joke|poem|story|fact|quote|recipe|"
                r"summary|haiku|riddle|idea|advice|answer|definition)s?\b",
                rf"^{_ASK}(?:write|compose|generate|draft) (?:a|an|some) [\w ]{{0,30}}?"
                r"(?:about|that|which)\b",
                rf"^{_ASK}(?:tell me|explain|summari[sz]e|define|describe|recommend|suggest|"
                r"calculate|compute)\b",
                rf"^{_ASK}translate\b(?:.*\b(?:into|to) [a-z]+\W*$|\s*['\"])",
                r"^(?:a |the )?recipe for\b|\blyrics (?:of|to|for)\b",
            )
        ),
        "this asks for something to be written, explained or worked out, not for a computer",
    ),
    (
        "errand",
        rf"^{_ASK}(?:book|order|buy|call|text|remind|schedule|"
        r"reserve|send|pay|set (?:a|an|my) (?:timer|alarm|reminder))\b",
        "this is an errand, not a request for a computer",
    ),
    (
        "question",
        r"^(?:what|what's|whats|who|whom|whose|when|where|why|which|how)\b|"
        r"^(?:is|are|does|do|did|was|were|will|should) (?:it|there|this|that|a|an|the|linux|"
        r"windows|debian|firefox|my|your|you)\b.*(?:\?|better|worse|difference|than)|"
        r"^(?:is|are|does|did|was|were|has|have)\b[^?]*\?\s*$",
        "this reads as a question, not a request for a computer",
    ),
    (
        "greeting",
        r"^(?:hi|hello|hey|yo|thanks|thank you|thx|good (?:morning|evening|night|day|afternoon)|"
        r"lol|ok|okay|bye|cheers|howdy|sup)(?:\s+(?:there|you|so much|a lot|all))?\W*$",
        "this is a greeting, not a request for a computer",
    ),
)


@dataclass(frozen=True)
class Intent:
    """Whether the text asks for a computer, and why the composer thinks so."""

    request: bool
    kind: str  # "environment", "task", or what the text is instead
    reason: str


def computing_nouns(text: str, tokens: tuple[str, ...]) -> list[str]:
    """The environment nouns of ``text`` used in a computing sense."""
    if not any(t in ENV_NOUNS for t in tokens):
        return []
    blanked = _NOT_COMPUTING.sub(" ", text)
    return [t for t in tokens if t in ENV_NOUNS and re.search(rf"\b{re.escape(t)}\b", blanked)]


def classify(
    norm: Normalised, evidence: list[str], has_task: bool, host_access: bool = False
) -> Intent:
    """Decide what ``norm`` is.

    Args:
        norm: the folded request.
        evidence: the words that name a computer or something GenOS provides.
        has_task: whether a task phrase was found (the pipeline then checks that
            software fits it before composing).
        host_access: the text asks for the host (always answered as a request,
            so that the refusal says why).

    Returns:
        The intent; for anything but a request, ``reason`` says what it is instead.
    """
    text = norm.text.strip()
    if host_access:
        return Intent(True, "environment", "it asks for access to the host")
    framed = _REQUEST_FRAME.search(text) is not None
    for kind, pattern, reason in _KINDS:
        if re.search(pattern, text) and not (framed and kind in ("question", "about-genos")):
            if kind == "question" and evidence and _asks_for_software(text):
                break
            quote = text[:60].rstrip(" ?!.")
            return Intent(False, kind, f"'{quote}': {reason}")
    if evidence:
        return Intent(True, "environment", f"'{evidence[0]}' names what GenOS provides")
    if has_task:
        return Intent(True, "task", "a task to find software for")
    return Intent(
        False,
        "other",
        f"'{text[:60]}': nothing in it names a computer, software or a task GenOS knows",
    )


def _asks_for_software(text: str) -> bool:
    # "how about firefox with tor?" style questions that still order something.
    return re.match(r"^(?:how about|what about)\b", text) is not None
