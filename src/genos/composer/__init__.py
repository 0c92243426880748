"""The composer: a request in plain words -> a spec, a clarification or a rejection.

Layout, in pipeline order:

- ``normalise``: refuse non-text, fold spelling, tokens.
- ``intent``: is it a request for an environment; does it ask for the host.
- ``lexicon`` + ``extract``: which words mean which wish (OS, apps, network,
  resources, durations, protocol, isolation, persistence, policy).
- ``matcher``: catalog phrases in the token stream, unknown names in app slots.
- ``catalog`` (curated apps, ``data/catalog.yaml``) + ``debindex`` (Debian's
  real package index) = ``knowledge``.
- ``resolve``: app mentions -> Debian packages, questions, suggestions.
- ``decide``: spec sections with a rationale per decision, conflicts.
- ``pipeline``: :func:`compose`, the whole path; ``result``: the three outcomes.
"""

from genos.composer.knowledge import HostLimits, Knowledge
from genos.composer.pipeline import compose
from genos.composer.result import (
    EXIT_CODES,
    Clarification,
    Composed,
    Question,
    Rejection,
    Result,
    Violation,
    to_json,
)

__all__ = [
    "EXIT_CODES",
    "Clarification",
    "Composed",
    "HostLimits",
    "Knowledge",
    "Question",
    "Rejection",
    "Result",
    "Violation",
    "compose",
    "to_json",
]
