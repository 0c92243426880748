"""Rich consoles for the CLI, made at first use.

Rich costs tens of milliseconds to import; a command whose output is plain
text (``genos ls --json``, ``genos up`` from a warm pool) should not pay for
it. A :class:`LazyConsole` stands where a ``rich.console.Console`` would and
creates it the first time something is printed through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """A Rich ``Console`` (no highlighting, soft wrap) created on first use.

    Args:
        stderr: write to standard error instead of standard output.
    """

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        """The real console (created now if it was not yet)."""
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415 - the point of this class

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)
