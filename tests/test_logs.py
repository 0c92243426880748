"""Per-environment loggers are dropped when their environment is gone."""

from __future__ import annotations

import logging

import pytest

from genos import logs
from genos.ids import new_env_id


def _named(env_id: str) -> list[str]:
    return sorted(n for n in logging.Logger.manager.loggerDict if n.endswith("." + env_id))


def test_forget_drops_one_environment_s_loggers_and_logging_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only that environment's loggers go, under every parent; the parents and another
    environment's stay; a line logged for it afterwards still reaches the parent's handlers."""
    gone, kept = new_env_id(), new_env_id()
    parents = [logging.getLogger(n) for n in ("genos.test-logs.a", "genos.test-logs.b.c")]
    held = [p.getChild(gone) for p in parents]
    for parent in parents:
        parent.getChild(kept)
    assert logs.forget(gone) == 2
    assert _named(gone) == []
    assert _named(kept) == ["genos.test-logs.a." + kept, "genos.test-logs.b.c." + kept]
    assert {"genos.test-logs.a", "genos.test-logs.b.c"} <= set(logging.Logger.manager.loggerDict)
    caplog.set_level(logging.INFO, logger="genos.test-logs")
    held[0].info("through the one still held")
    parents[1].getChild(gone).info("through a new one")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("genos.test-logs.a." + gone, "through the one still held"),
        ("genos.test-logs.b.c." + gone, "through a new one"),
    ]
    assert logs.forget(gone) == 1  # the new one
    assert logs.forget(kept) == 2


def test_forget_ignores_what_is_not_an_environment_id() -> None:
    """An empty or foreign name drops nothing (not every logger ending in '.')."""
    logging.getLogger("genos.test-logs.x.")
    before = set(logging.Logger.manager.loggerDict)
    assert (logs.forget(""), logs.forget("x"), logs.forget("../a")) == (0, 0, 0)
    assert set(logging.Logger.manager.loggerDict) == before
