"""Group commit for SQLite: many writers' transactions, one commit (one fsync).

SQLite lets one transaction write at a time and, with ``synchronous=FULL``,
each commit waits for the disk. Under load (creates arriving while earlier
environments write their transitions and events) that makes throughput the
disk's fsync rate. :class:`GroupWriter` runs every write on one thread: it
takes whatever work is waiting (up to :data:`MAX_BATCH`), runs each piece in
its own SAVEPOINT inside one transaction, and commits once. A piece that
raises is rolled back to its savepoint and its caller gets the exception;
the others commit. A piece alone needs no savepoint (its transaction is
one), and the savepoints are plain SQL on the driver's connection: the hot
pieces are a few Core statements, and SQLAlchemy's nested transactions
would cost more than they do. Under load (the last batch had more than one
piece) the writer waits up to :data:`GATHER` for company before it commits,
so moderate concurrency shares commits too; a lone writer, such as one
person's ``genos up``, never waits. Each caller's future resolves only
after the commit, so "stored before the side effect" still holds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

T = TypeVar("T")
MAX_BATCH = 64
GATHER = 0.003  # seconds a batch waits for company under load (see _loop)
log = logging.getLogger("genos.orchestrator.groupcommit")


@dataclass
class _Work:
    fn: Callable[[Session], Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    result: Any = None
    error: BaseException | None = None


class GroupWriter:
    """One writer thread committing batches of write transactions (see the module docstring).

    Args:
        bind: the engine (with the write execution option) to write through.
        translate: wraps each piece so database errors become GenOS errors.
    """

    def __init__(self, bind: Engine, translate: Callable[[Callable[[], Any]], Any]) -> None:
        self._bind = bind
        self._translate = translate
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._loop, name="genos-registry-writer", daemon=True
        )
        self._thread.start()

    def submit(self, fn: Callable[[Session], T]) -> concurrent.futures.Future[T]:
        """Queue one transaction's work; the future has its result after the commit."""
        work = _Work(fn)
        self._queue.put(work)
        return work.future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        busy = False
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            # Under load (the last batch had company) a moment for more writers,
            # whose commit this one then shares; a lone writer never waits.
            linger = GATHER if busy else 0.0
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get(timeout=linger) if linger else self._queue.get_nowait()
                except queue.Empty:
                    break
                linger = 0.0
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            busy = len(batch) > 1
            if stop:
                return

    def _commit(self, batch: list[_Work]) -> None:
        try:
            self._translate(lambda: self._run(batch))
        except BaseException as exc:  # noqa: BLE001 - the commit failed: every caller hears why
            for work in batch:
                if not work.future.done():
                    work.future.set_exception(exc)
            return
        for work in batch:
            if work.error is not None:
                work.future.set_exception(work.error)
            else:
                work.future.set_result(work.result)

    def _run(self, batch: list[_Work]) -> None:
        if len(batch) == 1:  # alone: its transaction is its savepoint
            work = batch[0]
            try:
                work.result = self._translate(lambda: self._alone(work))
            except BaseException as exc:  # noqa: BLE001 - handed to its caller
                work.error = exc
            return
        with Session(self._bind, expire_on_commit=False) as session, session.begin():
            # Savepoints straight on the driver's connection: SQLAlchemy's
            # nested transactions cost more than the work they wrap here.
            raw = session.connection().connection.driver_connection
            if raw is None:
                raise RuntimeError("the database connection is closed")
            for n, work in enumerate(batch):
                raw.execute(f"SAVEPOINT genos_{n}")
                try:
                    work.result = self._translate(lambda w=work: w.fn(session))  # type: ignore[misc]
                except BaseException as exc:  # noqa: BLE001 - handed to that caller alone
                    raw.execute(f"ROLLBACK TO genos_{n}")
                    session.expunge_all()  # what it added is gone from the database
                    work.error = exc
                raw.execute(f"RELEASE genos_{n}")

    def _alone(self, work: _Work) -> Any:
        with Session(self._bind, expire_on_commit=False) as session, session.begin():
            return work.fn(session)
