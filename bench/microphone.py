"""Microphone latency: a click written to an environment's mic.sock to its first samples
in a recording of the environment's default source.

A real desktop on runc whose spec allows a microphone. The host speaks as the
gateway does: one connection to ``mic.sock`` carrying 40 ms pieces of silence
at real time, then a 50 ms click in place of silence. Inside, ``parec`` records
the default source ("Microphone") and socat serves that recording on a socket
in the display directory, which the host reads; the latency is the host's time
at the first non-zero sample less the time the click was written (one clock).
Baseline in the same run and environment: the sound-out path of
``bench/sound.py`` (a click played inside to its first Opus packet on
``audio.sock``). The gateway's WebSocket hop and the browser's capture come on
top of both.

Needs root, runc and the warm test image store.
Run: .venv/bin/python bench/microphone.py [--rounds 10]
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
from bench.sound import CACHE, one_round
from tests.sandbox.probes import Env, running_env

from genos.runtime.driver import endpoint
from genos.runtime.images import ImageStore
from genos.spec import EnvironmentSpec, Security

PIECE = 1280  # 40 ms of 16 kHz mono s16le, as the web client sends
CLICK = (b"\x00\x40" * 4 + b"\x00\xc0" * 4) * 100  # 50 ms of a 2 kHz square wave
RECORDER = (
    "(export XDG_RUNTIME_DIR=/tmp/runtime-1000; exec </dev/null >/dev/null 2>&1;"
    " socat UNIX-LISTEN:/run/genos-display/rec.sock,fork"
    " 'EXEC:parec --raw --format=s16le --rate=16000 --channels=1 --latency-msec=10' &)"
)


async def mic_round(mic: Path, rec: Path, timeout: float = 8.0) -> float | None:
    """Milliseconds from writing a click to mic.sock to its first sample in the recording."""
    _, mic_writer = await asyncio.open_unix_connection(str(mic))
    rec_reader, rec_writer = await asyncio.open_unix_connection(str(rec))
    sent: list[float] = []
    heard: list[float] = []

    async def speak() -> None:
        start = time.monotonic()
        for n in range(int(timeout / 0.04)):
            click = n == 50 and not sent  # after two seconds of silence
            mic_writer.write(CLICK[:PIECE] if click else b"\x00" * PIECE)
            await mic_writer.drain()
            if click:
                sent.append(time.time())
            if heard:
                return
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.04 - time.monotonic()))

    async def listen() -> None:
        while data := await rec_reader.read(4096):
            if sent and any(data):
                heard.append(time.time())
                return

    try:
        await asyncio.wait_for(asyncio.gather(speak(), listen()), timeout + 2)
    except TimeoutError:
        pass
    finally:
        mic_writer.close()
        rec_writer.close()
    return (heard[0] - sent[0]) * 1000 if sent and heard else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="genos-bench-mic-", dir="/var/tmp"))
    os.environ["GENOS_DATA_DIR"] = str(data)
    store = ImageStore(CACHE / "images")
    spec = EnvironmentSpec(name="mic-bench", security=Security(microphone=True))
    mic_ms: list[float] = []
    out_ms: list[float] = []
    missed = 0
    try:
        with asyncio.Runner() as runner, running_env(runner, store, spec, data) as env:
            time.sleep(3)
            env.sh(RECORDER)
            mic = endpoint(env.driver, env.env_id, "mic")
            rec = mic.with_name("rec.sock")
            deadline = time.monotonic() + 10
            while not (rec.exists() and mic.exists()) and time.monotonic() < deadline:
                time.sleep(0.05)
            for _ in range(args.rounds):
                ms = env.runner.run(mic_round(mic, rec))
                missed += ms is None
                mic_ms += [] if ms is None else [ms]
                out = one_round(env)
                out_ms += [] if out is None else [out]
                time.sleep(1.5)
            _report(env, mic_ms, out_ms, missed, args.rounds)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _report(_env: Env, mic_ms: list[float], out_ms: list[float], missed: int, rounds: int) -> None:
    if not mic_ms or not out_ms:
        print(f"too few results: microphone {len(mic_ms)}, sound out {len(out_ms)} of {rounds}")
        return
    mic_ms.sort()
    out_ms.sort()
    print(f"rounds {rounds} (microphone missed {missed})")
    print(
        f"click to mic.sock -> first sample recorded from the default source: median "
        f"{statistics.median(mic_ms):.0f} ms, min {mic_ms[0]:.0f}, max {mic_ms[-1]:.0f}"
    )
    print(
        f"baseline: click played inside -> first Opus packet on audio.sock: median "
        f"{statistics.median(out_ms):.0f} ms, min {out_ms[0]:.0f}, max {out_ms[-1]:.0f}"
    )
    print(
        f"ratio microphone / sound out (medians): "
        f"{statistics.median(mic_ms) / statistics.median(out_ms):.2f}"
    )


if __name__ == "__main__":
    main()
