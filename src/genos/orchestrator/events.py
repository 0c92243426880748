"""Live event streams: history from the registry first, then each new event as it lands.

The registry holds every event; the :class:`EventBus` only wakes readers when
an environment got a new one, and a reader then reads what it has not seen
from the registry. So a slow reader never loses events and memory stays flat
however many readers there are. A reader also re-reads every ``poll`` seconds,
which picks up events written by another control plane sharing the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncGenerator, Iterator

from genos.orchestrator.records import Event, EventType
from genos.orchestrator.registry import Registry


class EventBus:
    """Wakes whoever waits on an environment's events (in-process, never stores them)."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def publish(self, env_id: str) -> None:
        """Tell every reader of ``env_id`` that something new is in the registry."""
        for waiter in self._waiters.get(env_id, ()):
            waiter.set()

    @contextlib.contextmanager
    def subscribe(self, env_id: str) -> Iterator[asyncio.Event]:
        """An :class:`asyncio.Event` set on each publish for ``env_id``, while in the block."""
        waiter = asyncio.Event()
        self._waiters[env_id].add(waiter)
        try:
            yield waiter
        finally:
            self._waiters[env_id].discard(waiter)
            if not self._waiters[env_id]:
                del self._waiters[env_id]


async def stream(
    registry: Registry,
    bus: EventBus,
    env_id: str,
    after_seq: int = 0,
    *,
    follow: bool = True,
    poll: float = 2.0,
) -> AsyncGenerator[Event, None]:
    """Events of ``env_id`` with ``seq > after_seq``: the stored ones, then live ones.

    Args:
        registry: where the events are.
        bus: wakes the stream when a new event is stored.
        env_id: the environment.
        after_seq: the last seq the reader already has (0 for everything).
        follow: keep yielding new events until the environment ends; False stops
            after the history.
        poll: seconds between re-reads when nothing woke the stream.

    Yields:
        Events in seq order, without gaps or repeats; the stream ends after the
        event of a final state (``terminated``, ``failed``).

    Raises:
        NotFoundError: no such environment.
    """
    with bus.subscribe(env_id) as wake:
        env = await registry.get(env_id)
        last = after_seq
        while True:
            wake.clear()
            for event in await registry.events(env_id, last):
                yield event
                last = event.seq
                if event.type is EventType.STATE and event.state.final:
                    return
            if not follow or env.state.final:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), poll)
            env = await registry.get(env_id)
