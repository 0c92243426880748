"""Sound latency: a click played in the environment to its first Opus packet at the gateway.

A real desktop on runc; one listener on the environment's ``audio.sock`` (what
the gateway reads) stays connected. In the environment, ``pacat`` is already
playing from a pipe that is empty (the sink renders silence, so the encoder is
warm); after a pause the shell notes the time (``date +%s.%N``; the host and
the container share the clock) and writes a 50 ms click into the pipe. The
latency is the arrival of the first packet carrying sound (larger than
silence's few bytes) less that time. The gateway's WebSocket hop on loopback
and the web client's jitter buffer (60 ms) and audio output come on top.

Needs root, runc and the warm test image store.
Run: .venv/bin/python bench/sound.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.runtime.test_sound_real import packets
from tests.sandbox.probes import Env, running_env

from genos.errors import StreamClosedError
from genos.gateway.ogg import read_page
from genos.gateway.streams import AsyncioStream
from genos.runtime.driver import endpoint
from genos.runtime.images import ImageStore
from genos.spec import EnvironmentSpec

CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
SOUND_BYTES = 40  # a 20 ms Opus packet of silence is a few bytes; of the click, ~150
# 50 ms of a square wave (u8, 8 kHz), after a pause, into a pacat that is already playing.
CLICK = (
    "(export XDG_RUNTIME_DIR=/tmp/runtime-1000; exec </dev/null >/dev/null 2>&1;"
    " { sleep 1.5; date +%s.%N >/tmp/click.t;"
    " yes $(printf '\\100\\100\\100\\100\\300\\300\\300\\300') | head -c 400; sleep 1; }"
    " | pacat --raw --format=u8 --rate=8000 --channels=1 --latency-msec=10 &)"
)


async def first_sound(socket: Path, timeout: float) -> float | None:
    """Wall-clock time of the first packet carrying sound, or None."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    stream = AsyncioStream(reader, writer)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            page = await asyncio.wait_for(read_page(stream), deadline - time.monotonic())
            now = time.time()
            if any(len(p) > SOUND_BYTES and p[:4] != b"Opus" for p in packets(page)):
                return now
    except (TimeoutError, StreamClosedError):
        return None
    finally:
        await stream.close()
    return None


def one_round(env: Env) -> float | None:
    """Latency of one click in ms (None if no sound arrived)."""
    env.sh("rm -f /tmp/click.t")
    socket = endpoint(env.driver, env.env_id, "audio")

    async def go() -> float | None:
        listening = asyncio.create_task(first_sound(socket, 8.0))
        await asyncio.sleep(0.3)  # the listener is connected before the click's player starts
        await env.driver.exec(env.env_id, ["/bin/sh", "-c", CLICK])
        return await listening

    heard = env.runner.run(go())
    played = env.sh("cat /tmp/click.t").stdout.strip()
    if heard is None or not played:
        return None
    return (heard - float(played)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="genos-bench-sound-", dir="/var/tmp"))
    os.environ["GENOS_DATA_DIR"] = str(data)
    store = ImageStore(CACHE / "images")
    results: list[float] = []
    missed = 0
    try:
        with (
            asyncio.Runner() as runner,
            running_env(runner, store, EnvironmentSpec(name="sound-bench"), data) as env,
        ):
            time.sleep(3)
            for _ in range(args.rounds):
                ms = one_round(env)
                if ms is None:
                    missed += 1
                else:
                    results.append(ms)
                time.sleep(1.5)  # the previous click's player has ended
    finally:
        shutil.rmtree(data, ignore_errors=True)
    if not results:
        print(f"no click arrived in {args.rounds} rounds")
        return
    results.sort()
    print(f"rounds {len(results)} (missed {missed})")
    print(
        f"click in the environment -> first sound packet on audio.sock: median "
        f"{statistics.median(results):.0f} ms, min {results[0]:.0f}, max {results[-1]:.0f}"
    )


if __name__ == "__main__":
    main()
