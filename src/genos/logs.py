"""Per-environment loggers, forgotten once their environment is gone.

Each module logs an environment's lines on a child logger named after it
(``logger.getChild(env_id)``, as ../shared/STYLE.md asks), so an operator can
follow or tune one environment by name. The logging module keeps every logger
it ever made, though: a control plane or node that runs for months would hold
one per module for every environment it ever saw (about 2 KB for four, so
2 GB after a million). :func:`forget` drops an environment's loggers when it
ends; a line logged for it later makes a fresh one, which the engine's
maintenance loop forgets again within a period or two
(``Lifecycle.forget_late``).
"""

from __future__ import annotations

import logging

from genos.ids import is_env_id


def forget(env_id: str) -> int:
    """Drop every logger named ``<anything>.<env_id>``; how many there were.

    Safe at any time: a module still holding one logs on through it (its parents
    are unchanged), and ``getChild`` makes a new one when asked again.
    """
    if not is_env_id(env_id):
        return 0
    loggers = logging.Logger.manager.loggerDict
    suffix = "." + env_id
    names = [name for name in list(loggers) if name.endswith(suffix)]
    for name in names:
        loggers.pop(name, None)
    return len(names)
