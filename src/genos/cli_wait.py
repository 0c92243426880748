"""How ``genos up`` waits for an environment: its events, its place in the queue, a deadline.

The environment's server-sent events are read on a thread of their own and
handed over through a queue; the calling thread owns the deadline, so a wait
ends on time whatever the server sends or leaves unsent. While the
environment is ``queued``, its place in the queue is read every
:data:`POLL` seconds (``GET /v1/environments/{id}``): the place moves when
*other* environments start or leave, which is no event of this one. If the
stream ends early or breaks, the wait goes on by polling.

What the wait sees goes to a reporter, one dict at a time: the server's
event objects as they are (``env_id``, ``seq``, ``time``, ``type``,
``state``, ``message``, ``data``), and ``{"type": "queue", "env_id": ID,
"position": N}`` each time the place in the queue changes (1 is next).

A wait that gives up (deadline, Ctrl-C) ends the environment it waited for:
``genos up`` leaves either a running desktop or nothing (:func:`give_up`).
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from genos.client import Client, EventStream

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

POLL = 2.0
SETTLED = frozenset({"running", "terminated", "failed", "lost"})
MAX_BLOCK = 60.0  # longest single block on the inbox (a lock's timeout is bounded; --timeout inf)
CANCEL_TIMEOUT = 5.0  # seconds each call of a cancellation may take once we gave up

Item = dict[str, Any]


class Reporter(Protocol):
    """Shows what a wait sees."""

    def __call__(self, item: Item) -> None: ...

    def close(self) -> None: ...


class Wait:
    """Follows one environment until it settles (running, failed, terminated).

    Args:
        client: the API client.
        env: the environment's record as ``POST /v1/environments`` answered.
        report: gets each event and each new queue position.
        clock: the monotonic clock the deadline is on.

    Attributes:
        env: the last known record: ``state`` follows the events and the polls,
            ``queue_position`` the polls.
        step: the last progress message seen (for the message when giving up).
    """

    def __init__(
        self,
        client: Client,
        env: Item,
        report: Callable[[Item], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.env = dict(env)
        self.step: str | None = None
        self._client = client
        self._report = report
        self._clock = clock
        self._position: int | None = None
        self._streamed: str | None = None  # the state the stream's events last said

    @property
    def settled(self) -> bool:
        """True once the environment runs or ended."""
        return self.env["state"] in SETTLED

    def until(self, deadline: float) -> bool:
        """Follow the environment until it settles or the clock reaches ``deadline``.

        Returns:
            True if it settled (see :attr:`env`), False if the deadline came first.

        Raises:
            RemoteError: the server refused (the environment is gone, not yours).
            ExternalError: the server could not be reached.
        """
        if self.settled:
            return True
        left = max(deadline - self._clock(), 0.1)
        stream = self._client.events(
            self.env["id"], timeout=min(left, self._client.timeout), after=0
        )
        inbox: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        reader = threading.Thread(
            target=_pump, args=(stream, inbox), name=f"genos-events-{self.env['id']}", daemon=True
        )
        reader.start()
        try:
            return self._follow(inbox, deadline)
        finally:
            stream.close()
            reader.join(timeout=1.0)

    def _follow(self, inbox: queue.SimpleQueue[Item | None], deadline: float) -> bool:
        streaming = True
        next_poll = 0.0
        while not self.settled:
            now = self._clock()
            if now >= deadline:
                return False
            # While the stream is up, its own "queued" event starts the polls, so the
            # place in the queue follows the history of events rather than preceding it.
            polling = not streaming or self._streamed == "queued"
            if polling and now >= next_poll:
                self.poll(timeout=deadline - now)
                next_poll = now + POLL
                continue
            until = min(deadline, next_poll) if polling else deadline
            try:
                item = inbox.get(timeout=min(until - now, MAX_BLOCK))
            except queue.Empty:
                continue
            if item is None:
                streaming = False  # ended or broke before settling: poll from now on
            else:
                self._event(item)
        return True

    def poll(self, timeout: float | None = None) -> None:
        """Read the record again; report the queue position if it moved.

        Raises:
            RemoteError: the server refused.
            ExternalError: the server could not be reached.
        """
        limit = self._client.timeout if timeout is None else min(timeout, self._client.timeout)
        fresh = self._client.call(
            "GET", f"/v1/environments/{self.env['id']}", timeout=max(limit, 0.1)
        )
        self.env = dict(fresh)
        position = fresh.get("queue_position") if fresh["state"] == "queued" else None
        if position is not None and position != self._position:
            self._report({"type": "queue", "env_id": fresh["id"], "position": position})
        self._position = position

    def _event(self, event: Item) -> None:
        self._report(event)
        if event.get("type") == "state":
            self.env["state"] = self._streamed = event["state"]
        elif event.get("type") == "progress":
            self.step = str(event.get("message"))


def give_up(client: Client, wait: Wait, why: str, *, hint: str = "") -> tuple[Item, str]:
    """End the environment a wait gave up on, unless it runs after all.

    Args:
        client: the API client.
        wait: the wait that gave up.
        why: what ended it ("timed out after 30s", "interrupted").
        hint: words to end the message with.

    Returns:
        The environment's last record, and the one-line message to show
        (empty if it was running by then).

    Raises:
        RemoteError: the server refused to end it.
        ExternalError: the server could not be reached.
    """
    wait.poll(timeout=CANCEL_TIMEOUT)
    env = wait.env
    if env["state"] in SETTLED:
        return env, ""
    if env["state"] == "queued" and env.get("queue_position") is not None:
        where = f"queued at position {env['queue_position']}"
    elif env["state"] == "provisioning" and wait.step:
        where = f"provisioning ({wait.step})"
    elif env["state"] == "requested":
        where = "waiting to be admitted"
    else:
        where = str(env["state"])
    ended = client.call("DELETE", f"/v1/environments/{env['id']}", timeout=CANCEL_TIMEOUT)
    return dict(ended), f"{why}: {env['id']} was {where}; cancelled it{hint}"


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM or SIGHUP arrived while waiting (raised in the main thread)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Stopped` inside the block, as Ctrl-C is
    KeyboardInterrupt, so a killed or hung-up ``genos up`` still cancels its request."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; nothing to catch elsewhere
        return

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe(item: Item) -> str:
    """One line in words for a reported item."""
    if item.get("type") == "queue":
        return f"waiting in the queue, position {item['position']}"
    return str(item.get("message") or item.get("state") or item.get("type"))


def reporter(env_id: str, *, as_json: bool, events: bool) -> Reporter:
    """The reporter for ``genos up``'s output mode.

    JSON lines on stdout with ``--json --events``; nothing else with ``--json``;
    otherwise on stderr a progress bar on a terminal, or one line per change.
    """
    if events:
        return JsonLines()
    if as_json:
        return Quiet()
    if sys.stderr.isatty():
        return Bar(env_id)
    return Lines(env_id)


class Quiet:
    """Shows nothing (``--json`` alone: only the final object)."""

    def __call__(self, item: Item) -> None:
        pass

    def close(self) -> None:
        pass


class JsonLines:
    """One compact JSON object per line on stdout, flushed at once."""

    def __call__(self, item: Item) -> None:
        print(json.dumps(item, separators=(",", ":")), flush=True)

    def close(self) -> None:
        pass


class Lines:
    """One line on stderr per change of what the wait is at (stderr is no terminal)."""

    def __init__(self, env_id: str) -> None:
        self._env_id = env_id
        self._last: str | None = None

    def __call__(self, item: Item) -> None:
        text = describe(item)
        if text != self._last:
            print(f"{self._env_id}: {text}", file=sys.stderr, flush=True)
            self._last = text

    def close(self) -> None:
        pass


class Bar:
    """A transient progress bar on the terminal (stderr), drawn from the first update.

    A launch that is running at once (a warm pool) reports nothing, so it
    never loads Rich.
    """

    def __init__(self, env_id: str) -> None:
        self._env_id = env_id
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, item: Item) -> None:
        if self._progress is None or self._task is None:
            self._progress, self._task = self._start()
        data = item.get("data") or {}
        if "steps" in data and "step" in data:
            self._progress.update(self._task, total=data["steps"], completed=data["step"])
        self._progress.update(self._task, description=f"{self._env_id}: {describe(item)}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _start(self) -> tuple[Progress, TaskID]:
        from rich.console import Console  # noqa: PLC0415 - only a wait that shows anything
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

        columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
        console = Console(stderr=True, highlight=False, soft_wrap=True)
        progress = Progress(*columns, console=console, transient=True)
        progress.start()
        return progress, progress.add_task(self._env_id, total=None)


def _pump(stream: EventStream, inbox: queue.SimpleQueue[Item | None]) -> None:
    """Hand the stream's events over until it ends, breaks or is closed (then None)."""
    try:
        for event in stream:
            inbox.put(event)
    except Exception:  # noqa: BLE001, S110 - a broken stream only means: poll instead
        pass
    finally:
        inbox.put(None)
