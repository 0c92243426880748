"""The host end of a VM's command channel, against a guest played on a unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from genos.runtime.qemu.qmp import agent_run


async def run_against(tmp_path: Path, reply: bytes) -> tuple[tuple[int, str], bytes]:
    """``agent_run`` against a guest that says ready, reads one line and sends ``reply``."""
    path = tmp_path / "agent.sock"
    received: list[bytes] = []

    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"@genos-ready\n")
        received.append(await reader.readuntil(b"\n"))
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(guest, str(path))
    async with server:
        result = await agent_run(path, "xclip -o", 5.0)
    return result, received[0]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"one\ntwo\n@genos-exit 0\n", (0, "one\ntwo\n")),
        (b"no newline at the end@genos-exit 3\n", (3, "no newline at the end")),
        (b"@genos-exit 1\n", (1, "")),
        (b"says @genos-exit now\n@genos-exit 0\n", (0, "says @genos-exit now\n")),
    ],
)
def test_reply_is_the_output_before_the_exit_status(
    tmp_path: Path, reply: bytes, expected: tuple[int, str]
) -> None:
    """The exit status ends the reply even when the output has no final newline (xclip -o)."""
    result, command = asyncio.run(run_against(tmp_path, reply))
    assert command == b"xclip -o\n"
    assert result == expected
