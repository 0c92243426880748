"""Provisioning one environment: create, start, and report each step as an event.

A driver whose ``create`` takes a keyword ``progress`` gets a
:class:`Progress` reporter: call it ``progress("image: layer 2/3 built",
{"layer": 2})`` from the event loop or from any thread; the messages become
``progress`` events in the order they were sent. The engine itself reports
"sandbox ready" (create returned) and "display ready" (start returned, so the
RFB banner answered) before moving the environment to ``running``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from genos.errors import GenOSError
from genos.runtime.driver import Driver
from genos.spec import EnvironmentSpec

Emit = Callable[[str, dict[str, Any]], Awaitable[object]]


class Progress:
    """A thread-safe progress callback that turns messages into events, in order."""

    def __init__(self, emit: Emit) -> None:
        """Report through ``emit`` (message, data), awaited one at a time.

        Args:
            emit: stores one progress event.
        """
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def __call__(self, message: str, data: dict[str, Any] | None = None) -> None:
        """Report one step (callable from any thread).

        Args:
            message: what happened, for people ("image: layer 2/3 built").
            data: the same as machine-readable fields.
        """
        item = (message, dict(data or {}))
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def __aenter__(self) -> Progress:
        self._writer = asyncio.create_task(self._write())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._queue.put_nowait(None)
        if self._writer is not None:
            if kind is not None and issubclass(kind, asyncio.CancelledError):
                self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write(self) -> None:
        while (item := await self._queue.get()) is not None:
            await self._emit(*item)


def _keywords(driver: Driver) -> frozenset[str]:
    # Keyed by the function behind the bound method: one signature per driver
    # class, not one per create (inspect.signature is a few percent of a node's
    # time per create when many arrive).
    create = driver.create
    return _parameters(getattr(create, "__func__", create))


@functools.lru_cache(maxsize=64)
def _parameters(function: Callable[..., Any]) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()


def accepts_progress(driver: Driver) -> bool:
    """True if ``driver.create`` takes a ``progress`` keyword argument."""
    return "progress" in _keywords(driver)


async def create(
    driver: Driver,
    env_id: str,
    spec: EnvironmentSpec,
    progress: Progress,
    owner: str,
    *,
    node: str | None = None,
) -> None:
    """``driver.create``, with ``progress``, ``owner`` and ``node`` where the driver takes them.

    ``owner`` names whose volumes a persistent environment attaches; ``node``
    is where placement put it (the cluster's driver needs it).
    """
    accepted = _keywords(driver)
    extra: dict[str, object] = {}
    if "progress" in accepted:
        extra["progress"] = progress
    if "owner" in accepted:
        extra["owner"] = owner
    if "node" in accepted:
        extra["node"] = node
    create_with: Callable[..., Awaitable[None]] = driver.create
    await create_with(env_id, spec, **extra)


def describe(exc: BaseException) -> str:
    """One line for a failure reason: a GenOS error's message, else its type and text."""
    if isinstance(exc, GenOSError):
        return exc.message
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
