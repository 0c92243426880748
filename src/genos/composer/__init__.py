"""The composer: a request in plain words -> a spec, a clarification or a rejection.

Layout, in pipeline order:

- ``normalise``: refuse non-text, fold spelling, tokens; ``spelling``: read
  "libreofice" as LibreOffice.
- ``language`` (+ ``triggers``): clauses, negation and its scope, hedges.
- ``extract`` (+ ``entities``, ``mentions``, ``network``, ``wishes``,
  ``refusals``, ``tasks``): which words mean which wish, judged in place (a
  negated mention asks for nothing or the opposite); what nobody took is the
  request's task.
- ``intent``: a request for a computer, or what the text is instead.
- ``lexicon``: the tables of words; ``matcher``: catalog phrases in the tokens.
- ``catalog`` (curated apps, ``data/catalog.yaml``) + ``debindex`` (Debian's
  package index) + ``programs`` (what the archive says its programs are for)
  + ``wordlist`` (Debian's English words) = ``knowledge``; ``search`` (+
  ``words``): task phrases -> ranked programs.
- ``resolve``: named software, tasks -> Debian packages, questions, suggestions.
- ``decide``: spec sections with a rationale per decision, conflicts.
- ``pipeline``: :func:`compose`, the whole path; ``result``: the three outcomes;
  ``model``: the optional model backend, through the same validator.
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
