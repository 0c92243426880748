"""Sound out of a real environment (runc): PulseAudio's null sink, Opus in Ogg on audio.sock."""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path

import pytest

from genos.gateway.ogg import read_page
from genos.gateway.streams import AsyncioStream
from genos.runtime.driver import endpoint
from tests.sandbox.probes import Env

pytestmark = [pytest.mark.root, pytest.mark.runc]
# A square wave of about 900 Hz, u8 at 8 kHz, for as long as it runs.
TONE = (
    "(export XDG_RUNTIME_DIR=/tmp/runtime-1000; exec </dev/null >/dev/null 2>&1;"
    " yes $(printf '\\100\\100\\100\\100\\300\\300\\300\\300')"
    " | pacat --raw --format=u8 --rate=8000 --channels=1 & echo $! >/tmp/tone.pid)"
)


def packets(data: bytes) -> list[bytes]:
    """The packets of one Ogg page (each under 255 * 255 bytes, as genos-audio's are)."""
    count = data[26]
    table, at, out, current = data[27 : 27 + count], 27 + count, [], b""
    for length in table:
        current += data[at : at + length]
        at += length
        if length < 255:
            out.append(current)
            current = b""
    return out


async def listen(socket: Path, seconds: float) -> list[bytes]:
    """Every packet one viewer receives in ``seconds`` (headers included)."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    stream, found = AsyncioStream(reader, writer), []
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                page = await asyncio.wait_for(read_page(stream), left)
            except TimeoutError:
                break
            assert struct.unpack_from("<4sB", page) == (b"OggS", 0)
            found += packets(page)
    finally:
        await stream.close()
    return found


def audio_socket(env: Env) -> Path:
    """The env's audio.sock, once socat listens (just after the display answers)."""
    socket = endpoint(env.driver, env.env_id, "audio")
    deadline = time.monotonic() + 10
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return socket


def test_a_tone_arrives_as_opus_and_silence_does_not(env: Env) -> None:
    """While nothing plays, a viewer gets no sound; with a tone playing it gets OpusHead
    (stereo, 48 kHz), OpusTags, then about 50 packets a second, each carrying real sound."""
    socket = audio_socket(env)
    quiet = env.runner.run(listen(socket, 2.0))
    assert [p for p in quiet if p[:8] not in (b"OpusHead", b"OpusTags")] == []
    env.sh(TONE)
    try:
        loud = env.runner.run(listen(socket, 4.0))
    finally:
        env.sh("kill $(cat /tmp/tone.pid)")
    assert [p[:8] for p in loud[:2]] == [b"OpusHead", b"OpusTags"]
    assert struct.unpack_from("<BBHI", loud[0], 8)[1:4:2] == (2, 48000)  # stereo, 48 kHz
    sound = loud[2:]
    assert len(sound) >= 50  # 20 ms packets: at least a second of sound in four
    assert sum(map(len, sound)) / len(sound) > 40  # a tone: ~180 bytes a packet


def test_each_viewer_gets_its_own_stream_from_the_start(env: Env) -> None:
    """Two viewers at once each get the headers first, then sound (one encoder per viewer)."""

    async def both() -> list[list[bytes]]:
        socket = audio_socket(env)
        return list(await asyncio.gather(listen(socket, 4.0), listen(socket, 4.0)))

    env.sh(TONE)
    try:
        found = env.runner.run(both())
    finally:
        env.sh("kill $(cat /tmp/tone.pid)")
    for packets_seen in found:
        assert [p[:8] for p in packets_seen[:2]] == [b"OpusHead", b"OpusTags"]
        assert len(packets_seen) > 20
