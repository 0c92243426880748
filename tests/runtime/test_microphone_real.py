"""A viewer's microphone in a real environment (runc): mic.sock, genos-mic, PulseAudio.

What a viewer writes to mic.sock (16 kHz mono s16le) is what an app recording
the environment's default source hears; nothing of it comes back out of the
sound output (no echo) or lingers after the viewer stops, one viewer speaks
at a time, and an environment whose spec does not allow a microphone has no
mic.sock at all.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from pathlib import Path

import pytest

from genos.errors import NotFoundError
from genos.runtime.driver import endpoint
from genos.runtime.images import ImageStore
from genos.spec import EnvironmentSpec
from tests.sandbox.probes import Env, running_env

pytestmark = [pytest.mark.root, pytest.mark.runc]
RATE = 16000
# Record a device as raw 16 kHz mono into a file, in the background (as the user).
RECORD = (
    "(export XDG_RUNTIME_DIR=/tmp/runtime-1000; exec </dev/null >/dev/null 2>&1;"
    " parec --raw --format=s16le --rate=16000 --channels=1 --latency-msec=20 {device}"
    " >/tmp/{name}.raw &"
    " echo $! >/tmp/{name}.pid)"
)
# Samples, RMS and sign changes of a recording (awk: the image has no python).
MEASURE = (
    "od -An -v -td2 -w2 /tmp/{name}.raw | awk '{{n++; s+=$1*$1;"
    " if (($1>0 && p<0) || ($1<0 && p>0)) z++; if ($1) p=$1}}"
    ' END {{printf "%d %d %d\\n", n, (n ? sqrt(s/n) : 0), z}}\''
)


@pytest.fixture(scope="module")
def env_security() -> dict[str, bool]:
    """The shared desktop (tests/runtime/conftest.py's ``env``) allows a microphone."""
    return {"microphone": True}


def sine(seconds: float, hz: float = 440.0) -> bytes:
    """A tone at half of full scale, 16 kHz mono s16le."""
    count = int(seconds * RATE)
    return b"".join(
        struct.pack("<h", int(16383 * math.sin(2 * math.pi * hz * n / RATE))) for n in range(count)
    )


async def speak(socket: Path, pcm: bytes, chunk: int = 1280) -> None:
    """Write ``pcm`` to mic.sock in 40 ms pieces at real time, as the gateway passes them on."""
    _reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        started = time.monotonic()
        for n, at in enumerate(range(0, len(pcm), chunk)):
            writer.write(pcm[at : at + chunk])
            await writer.drain()
            await asyncio.sleep(max(0.0, started + (n + 1) * chunk / (2 * RATE) - time.monotonic()))
    finally:
        writer.close()


def mic_socket(env: Env) -> Path:
    """The env's mic.sock, once socat listens (just after the display answers)."""
    socket = endpoint(env.driver, env.env_id, "mic")
    deadline = time.monotonic() + 10
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return socket


def record(env: Env, name: str, device: str = "") -> None:
    """Start recording ``device`` (default: the default source) into /tmp/NAME.raw; return
    once samples arrive (a new recording stream takes a second or two to start)."""
    assert env.sh(RECORD.format(name=name, device=device)).code == 0
    waited = env.sh(f"n=0; until [ -s /tmp/{name}.raw ] || [ $n -ge 200 ]; do n=$((n+1));"
                    f" sleep 0.05; done; [ -s /tmp/{name}.raw ]")  # fmt: skip
    assert waited.code == 0, f"no samples from {device or 'the default source'} in 10 s"


def measured(env: Env, name: str) -> tuple[int, int, int]:
    """Stop recording ``name``: its samples, RMS and sign changes."""
    env.sh(f"kill $(cat /tmp/{name}.pid)")
    found = env.sh(MEASURE.format(name=name))
    assert found.code == 0, found.stdout
    samples, rms, crossings = (int(v) for v in found.stdout.split())
    return samples, rms, crossings


def test_what_a_viewer_says_is_what_the_default_source_records(env: Env) -> None:
    """Two seconds of a 440 Hz tone into mic.sock: an app recording the default source
    gets it (loud, about 880 sign changes a second); the sound output carries none of it."""
    socket = mic_socket(env)
    record(env, "heard")
    record(env, "echo", "--device=genos.monitor")
    time.sleep(0.5)
    env.runner.run(speak(socket, sine(2.0)))
    time.sleep(0.5)
    samples, rms, crossings = measured(env, "heard")
    assert samples >= 2 * RATE  # recording all through the tone
    assert rms > 3000  # a half-scale tone over most of the recording
    assert 1500 < crossings < 2100  # 440 Hz for two seconds, not noise
    _, echo, _ = measured(env, "echo")
    assert echo == 0  # the viewer does not hear itself
    time.sleep(0.4)
    record(env, "after")  # nothing of the tone was held back: it ended with the speaking
    time.sleep(1.0)
    _, after, _ = measured(env, "after")
    assert after == 0


def test_one_microphone_at_a_time(env: Env) -> None:
    """While one viewer speaks, a second connection to mic.sock is hung up on; the first
    goes on being heard."""
    socket = mic_socket(env)

    async def second_is_refused() -> bool:
        first = asyncio.create_task(speak(socket, sine(3.0)))
        await asyncio.sleep(1.0)
        reader, writer = await asyncio.open_unix_connection(str(socket))
        try:
            writer.write(sine(0.2))
            await writer.drain()
            return await asyncio.wait_for(reader.read(1), 5) == b""  # the env hung up
        except ConnectionError:
            return True  # it hung up before the write went through
        finally:
            writer.close()
            await first

    record(env, "first")
    assert env.runner.run(second_is_refused())
    _, rms, crossings = measured(env, "first")
    assert rms > 3000
    assert crossings > 1000


def test_silence_when_no_viewer_speaks(env: Env) -> None:
    """With nobody on mic.sock the default source is exact silence."""
    record(env, "quiet")
    time.sleep(1.0)
    samples, rms, _ = measured(env, "quiet")
    assert samples >= RATE // 2
    assert rms == 0


def test_no_microphone_unless_the_spec_allows_it(
    runner: asyncio.Runner,
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    data_root: Path,
) -> None:
    """The default spec: no mic.sock, no genos_mic source; the driver says so for ``mic``."""
    with running_env(runner, image_store, desktop_spec, data_root) as plain:
        socket = endpoint(plain.driver, plain.env_id, "mic")
        time.sleep(1.0)  # the sound server and its sockets are up by now
        assert socket.with_name("audio.sock").exists()
        assert not socket.exists()
        sources = plain.sh("XDG_RUNTIME_DIR=/tmp/runtime-1000 pactl list short sources")
        assert "genos_mic" not in sources.stdout
        with pytest.raises(NotFoundError):
            endpoint(plain.driver, "0000000000", "mic")
