"""Talking to one QEMU: its QMP monitor (``qemu.qmp``) and the guest's command channel.

Every call opens the monitor, does its work and closes it again, so nothing
is held between driver calls and a restarted control plane just reconnects.
QMP and socket failures become GenOS errors here: a monitor that is not
there is :class:`~genos.errors.ExternalError` (QEMU died or hangs), a
refused command too, with QEMU's own words in ``detail``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, ExecuteError, QMPClient, QMPError

from genos.errors import ExternalError, WaitTimeoutError
from genos.runtime.qemu.guest import AGENT_EXIT, AGENT_READY

logger = logging.getLogger("genos.runtime.qemu")
# QMP runstates (qapi/run-state.json) that mean the guest does not run.
PAUSED = frozenset({"paused", "postmigrate", "suspended", "save-vm", "restore-vm", "debug"})
MAX_BANDWIDTH = 8 << 30  # bytes/s for a save to a local file (QEMU's default is 32 MiB/s)


@contextlib.asynccontextmanager
async def monitor(path: Path, timeout: float = 10.0) -> AsyncIterator[QMPClient]:
    """An open QMP session, retried until ``timeout`` (QEMU may still be starting).

    Raises:
        ExternalError: no monitor answered in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        client = QMPClient(f"genos-{path.parent.parent.name}")
        try:
            await asyncio.wait_for(client.connect(str(path)), max(deadline - time.monotonic(), 0.1))
            break
        except (ConnectError, TimeoutError, OSError) as exc:
            await client.disconnect()
            if time.monotonic() > deadline:
                raise ExternalError("QEMU's monitor does not answer", detail=str(exc)) from exc
            await asyncio.sleep(0.02)
    try:
        yield client
    finally:
        # After "quit" QEMU hangs up first; disconnect() re-raises that EOF.
        with contextlib.suppress(QMPError, EOFError, OSError):
            await client.disconnect()


async def call(client: QMPClient, command: str, args: dict[str, Any] | None = None) -> Any:
    """Run one QMP command.

    Raises:
        ExternalError: QEMU refused it or the monitor went away.
    """
    try:
        return await client.execute(command, args)
    except ExecuteError as exc:
        raise ExternalError(f"QEMU refused {command}", detail=str(exc)) from exc
    except QMPError as exc:
        raise ExternalError(f"QMP {command} failed", detail=str(exc)) from exc


async def status(path: Path, timeout: float = 5.0) -> str:
    """QEMU's runstate (``running``, ``paused``, ``prelaunch``, ``shutdown``...)."""
    async with monitor(path, timeout) as client:
        reply = await call(client, "query-status")
    return str(reply["status"])


async def save_state(path: Path, fd: int, timeout: float) -> None:
    """Stop the guest and write its whole state to the file ``fd`` (a ``fd:`` migration).

    Raises:
        ExternalError: the migration failed.
        WaitTimeoutError: it did not finish in ``timeout`` seconds (it is cancelled).
    """
    async with monitor(path) as client:
        await call(client, "stop")
        await call(client, "migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})
        await _pass_fd(client, fd, "genos-state")
        await call(client, "migrate", {"uri": "fd:genos-state"})
        await _wait_migration(client, timeout)


async def load_state(path: Path, fd: int, timeout: float) -> None:
    """Feed a QEMU started with ``-incoming defer`` the state in the file ``fd``, then run it.

    Raises:
        ExternalError: the state could not be loaded.
        WaitTimeoutError: loading did not finish in ``timeout`` seconds.
    """
    async with monitor(path) as client:
        await _pass_fd(client, fd, "genos-state")
        await call(client, "migrate-incoming", {"uri": "fd:genos-state"})
        await _wait_migration(client, timeout)
        deadline = time.monotonic() + timeout
        while (await call(client, "query-status"))["status"] == "inmigrate":
            if time.monotonic() > deadline:
                raise WaitTimeoutError("the saved state did not finish loading")
            await asyncio.sleep(0.02)
        await call(client, "cont")


async def _pass_fd(client: QMPClient, fd: int, name: str) -> None:
    try:
        client.send_fd_scm(fd)
    except (OSError, QMPError) as exc:
        raise ExternalError("passing a file to QEMU failed", detail=str(exc)) from exc
    await call(client, "getfd", {"fdname": name})


async def _wait_migration(client: QMPClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = await call(client, "query-migrate")
        state = info.get("status", "none")
        if state == "completed":
            return
        if state in {"failed", "cancelled"}:
            raise ExternalError("saving or loading the VM's state failed",
                                detail=str(info.get("error-desc", state)))  # fmt: skip
        if time.monotonic() > deadline:
            with contextlib.suppress(ExternalError):
                await call(client, "migrate_cancel")
            raise WaitTimeoutError(f"saving or loading the VM's state took over {timeout:g}s")
        await asyncio.sleep(0.02)


async def agent_run(path: Path, command: str, timeout: float) -> tuple[int, str]:
    """Run one shell command line as root in the guest over its virtio-serial channel.

    Args:
        path: the host end of the channel (a unix socket QEMU serves).
        command: one line for ``sh -c``.
        timeout: seconds for the whole exchange.

    Returns:
        Exit status and combined output.

    Raises:
        ExternalError: the channel is not there or the guest did not answer in time.
    """
    if "\n" in command:
        raise ValueError("a guest command is one line")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                await _wait_agent_ready(reader, writer)
                writer.write(command.encode() + b"\n")
                await writer.drain()
                return await _read_reply(reader)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise ExternalError("the guest's command channel did not answer", detail=str(exc)) from exc


async def _wait_agent_ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # If we connected between the guest's (lost) "ready" and its read, it now
    # waits for a line while we wait for "ready": an empty line (a no-op
    # command) breaks the tie, and the guest says "ready" on its next open.
    while True:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), 1.0)
        except TimeoutError:
            writer.write(b"\n")
            await writer.drain()
            continue
        if line.strip() == AGENT_READY.encode():
            return


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines: list[str] = []
    while True:
        line = (await reader.readuntil(b"\n")).decode(errors="replace")
        # The status follows the output at once, and output need not end in a newline.
        output, marker, status = line.rpartition(AGENT_EXIT)
        if marker and status.strip().isdigit():
            return int(status), "".join(lines) + output
        lines.append(line)
