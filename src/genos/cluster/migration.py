"""Live migration of a VM from one node to another, as the control plane runs it.

The nodes do the work (:mod:`genos.runtime.qemu.migrate`: QEMU's block
migration of the disk overlay with the RAM, over TLS with the nodes' own
certificates); the control plane only tells each its part, through the relays
(mutual TLS, ``GENOS-MIGRATE`` verbs, :mod:`genos.node.relay`):

1. ``FACTS`` from the source: what the target needs (image, machine, accelerator).
2. ``PREPARE`` on the target: the environment made as ``create`` makes it, QEMU
   paused and listening; the answer is its port.
3. ``FINISH`` on the target (waiting) and ``SEND`` on the source at once: the
   guest's state streams node to node; the target runs it when it is complete.
4. The assignment moves by compare-and-swap on the owner key only now, when the
   target runs: the source's agent sees its assignment gone and destroys the
   paused copy; the target's agent finds it running and reports so.

Any failure before step 4 leaves the environment running on the source as it
was: the target is told to ``ABORT`` (it removes everything it made) and the
source to ``RESUME`` (in case it had paused for the final copy).

A suspended VM moves as files instead (:func:`carry_saved`): ``PACK`` on the
source (saved to disk first if it was paused in memory) streams its facts,
disk overlay and saved state through this control plane to ``ADOPT`` on the
target, which makes the environment, takes the files and holds it suspended.
The assignment moves (still ``suspended``) only then; its first resume there
restores the saved state and gives the guest the target's address. A failure
leaves it suspended on the source and nothing on the target.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from genos.node.relay import CHUNK, MIGRATE

log = logging.getLogger("genos.cluster.migration")
PREPARE_TIMEOUT = 600.0  # the target may build the VM's image first
MOVE_TIMEOUT = 900.0


@dataclass(frozen=True)
class Moved:
    """A finished live migration as the source's QEMU measured it."""

    total_ms: int
    downtime_ms: int
    ram_bytes: int


class MigrationError(Exception):
    """One side refused or failed (its words); the environment runs on the source."""


async def _ask(
    where: tuple[str, int], context: ssl.SSLContext, line: str, body: bytes = b"",
    timeout: float = MOVE_TIMEOUT,
) -> str:  # fmt: skip
    """One ``GENOS-MIGRATE`` request to a node's relay; its answer line (``OK ...``/``DONE ...``).

    Raises:
        MigrationError: the node answered ``ERR`` or could not be reached.
    """
    try:
        reader, writer = await asyncio.open_connection(*where, ssl=context)
    except OSError as exc:
        raise MigrationError(f"cannot reach the relay at {where[0]}:{where[1]}: {exc}") from exc
    try:
        writer.write(f"{MIGRATE.decode()} {line}\n".encode() + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError) as exc:
        raise MigrationError(
            f"{line.split(maxsplit=1)[0]} broke: {exc or type(exc).__name__}"
        ) from exc
    finally:
        writer.close()
    text = answer.decode("utf-8", "replace").strip()
    if text.startswith("ERR"):
        raise MigrationError(text[4:] or "refused")
    return text


async def migrate(
    env_id: str,
    spec: dict[str, Any],
    source: tuple[str, int],
    target: tuple[str, int],
    context: ssl.SSLContext,
) -> Moved:
    """Steps 1-3 above: on return the environment runs on ``target`` (its source copy
    is paused, for the caller to move the assignment).

    Raises:
        MigrationError: it did not move; it runs on the source as before.
    """
    facts = json.loads((await _ask(source, context, f"FACTS {env_id}", timeout=60))[3:])
    body = json.dumps({"spec": spec, "source": facts}).encode()
    answer = await _ask(target, context, f"PREPARE {env_id} {len(body)}", body, PREPARE_TIMEOUT)
    port = int(answer.split()[1])
    finish = asyncio.create_task(_ask(target, context, f"FINISH {env_id}"))
    try:
        sent = await _ask(source, context, f"SEND {env_id} {target[0]} {port}")
        await finish
    except BaseException as exc:
        finish.cancel()
        await asyncio.gather(finish, return_exceptions=True)
        await _undo(env_id, source, target, context)
        if isinstance(exc, MigrationError):
            raise
        raise MigrationError(f"{type(exc).__name__}: {exc}") from exc
    _, total, downtime, ram = sent.split()
    return Moved(int(total), int(downtime), int(ram))


async def abort(env_id: str, target: tuple[str, int], context: ssl.SSLContext) -> None:
    """The target forgets what it made of ``env_id`` (a move that did not commit).

    Raises:
        MigrationError: it could not be told.
    """
    await _ask(target, context, f"ABORT {env_id}", timeout=120)


async def _undo(
    env_id: str, source: tuple[str, int], target: tuple[str, int], context: ssl.SSLContext
) -> None:
    """The target forgets it; the source runs it (as it was)."""
    for where, verb in ((target, "ABORT"), (source, "RESUME")):
        try:
            await _ask(where, context, f"{verb} {env_id}", timeout=120)
        except MigrationError as exc:
            log.warning("undoing the migration of %s: %s failed: %s", env_id, verb, exc)


async def carry_saved(
    env_id: str,
    spec: dict[str, Any],
    source: tuple[str, int],
    target: tuple[str, int],
    context: ssl.SSLContext,
) -> int:
    """Move suspended VM ``env_id``'s files from ``source`` to ``target`` (see above);
    on return it is held suspended on both (the caller moves the assignment). The bytes
    carried.

    Raises:
        MigrationError: it did not move; it stays suspended on the source, the target
            has nothing of it.
    """
    opened: list[asyncio.StreamWriter] = []
    try:
        return await _carry(env_id, spec, source, target, context, opened)
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, ValueError) as exc:
        raise MigrationError(f"moving the files broke: {exc or type(exc).__name__}") from exc
    finally:
        for writer in opened:
            writer.close()


async def _carry(  # noqa: PLR0917 - carry_saved's arguments and its open streams
    env_id: str,
    spec: dict[str, Any],
    source: tuple[str, int],
    target: tuple[str, int],
    context: ssl.SSLContext,
    opened: list[asyncio.StreamWriter],
) -> int:
    src_reader, src_writer = await asyncio.open_connection(*source, ssl=context)
    opened.append(src_writer)
    src_writer.write(MIGRATE + f" PACK {env_id}\n".encode())
    said = (await asyncio.wait_for(src_reader.readuntil(b"\n"), MOVE_TIMEOUT)).decode()
    parts = said.split()
    if len(parts) != 4 or parts[0] != "OK" or not all(p.isdigit() for p in parts[1:]):
        raise MigrationError(f"the source would not pack it: {said.strip()[4:300]}")
    facts_size, disk_size, state_size = (int(p) for p in parts[1:])
    facts = json.loads(await src_reader.readexactly(facts_size))
    body = json.dumps({"spec": spec, "source": facts}).encode()
    dst_reader, dst_writer = await asyncio.open_connection(*target, ssl=context)
    opened.append(dst_writer)
    line = f" ADOPT {env_id} {len(body)} {disk_size} {state_size}\n"
    dst_writer.write(MIGRATE + line.encode() + body)
    left = disk_size + state_size
    while left:
        chunk = await src_reader.read(min(CHUNK, left))
        if not chunk:
            raise MigrationError(f"the source stopped {left} bytes short")
        dst_writer.write(chunk)
        await dst_writer.drain()
        left -= len(chunk)
    # The target removes what it made itself when ADOPT fails.
    done = (await asyncio.wait_for(dst_reader.readuntil(b"\n"), MOVE_TIMEOUT)).decode()
    if done.strip() != "DONE":
        raise MigrationError(f"the target could not take it: {done.strip()[4:300]}")
    return disk_size + state_size
