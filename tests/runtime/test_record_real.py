"""Recording a real environment (runc): record.sock, genos-record, an MP4 of screen and sound.

The recording is asked for as the API route asks for it
(:func:`genos.api.routes_record.open_recording`) and checked with the host's
ffprobe and ffmpeg: one H.264 and one Opus stream of about the asked length,
and the sound of a tone playing in the environment is in it; while one
recording runs, others are refused.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from genos.api.routes_record import ANSWER_GRACE, open_recording
from genos.errors import ConflictError, ExternalError
from genos.runtime.driver import endpoint
from tests.runtime.test_sound_real import TONE
from tests.sandbox.probes import Env, wait_for

pytestmark = [pytest.mark.root, pytest.mark.runc]
# What pgrep finds while genos-record records (without touching its lock).
RECORDING = "filesink location=/tmp/.genos-record.mp4"


@pytest.fixture(scope="module")
def env_security() -> dict[str, bool]:
    """The shared desktop (tests/runtime/conftest.py's ``env``) allows recording."""
    return {"recording": True}


async def record(env: Env, seconds: int) -> bytes:
    """A whole recording of ``seconds``, asked for as the API asks."""
    target = endpoint(env.driver, env.env_id, "record")
    opened = await open_recording(target, env.env_id, seconds)
    assert opened is not None
    reader, writer, head = opened
    try:
        return head + await asyncio.wait_for(reader.read(), ANSWER_GRACE)
    finally:
        writer.close()


def record_socket(env: Env) -> Path:
    """The env's record.sock, once socat listens (just after the display answers)."""
    socket = endpoint(env.driver, env.env_id, "record")
    assert isinstance(socket, Path)
    assert wait_for(socket.exists, timeout=10), f"no {socket}"
    return socket


def streams(path: Path) -> list[dict[str, Any]]:
    """ffprobe's streams of ``path``: codec type, codec name, duration."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,duration",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found: list[dict[str, Any]] = json.loads(probe.stdout)["streams"]
    return found


def mean_volume(path: Path) -> float:
    """The mean volume of the audio of ``path`` in dB (about -91 for digital silence)."""
    run = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a",
         "-af", "volumedetect", "-f", "null", "-"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"mean_volume: (-?[\d.]+) dB", run.stderr)
    assert found is not None, run.stderr[-2000:]
    return float(found.group(1))


def codecs(path: Path) -> dict[str, float]:
    """One H.264 video and one Opus audio stream (else the assertion fails): their durations."""
    found = streams(path)
    assert sorted((s["codec_type"], s["codec_name"]) for s in found) == [
        ("audio", "opus"),
        ("video", "h264"),
    ], found
    return {s["codec_type"]: float(s["duration"]) for s in found}


@pytest.fixture(scope="module")
def tone(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s recorded while a tone plays in the environment."""
    record_socket(env)
    env.sh(TONE)
    try:
        data = env.runner.run(record(env, 3))
    finally:
        env.sh("kill $(cat /tmp/tone.pid)")
    path = tmp_path_factory.mktemp("record") / "tone.mp4"
    path.write_bytes(data)
    return path


def test_a_recording_holds_the_screen_and_the_sound_playing(tone: Path) -> None:
    """ffprobe reads one H.264 and one Opus stream covering the same time, and the sound is
    the tone playing, not silence."""
    assert tone.read_bytes()[4:8] == b"ftyp"
    durations = codecs(tone)
    assert durations["video"] > 0.5
    assert abs(durations["video"] - durations["audio"]) < 0.5, durations
    assert mean_volume(tone) > -60


def test_a_recording_lasts_about_the_asked_length(tone: Path) -> None:
    """Both streams of a 3 s recording last 3 s (counted in frames and sound buffers, so
    GStreamer's start-up takes nothing off)."""
    for kind, seconds in codecs(tone).items():
        assert 2.8 <= seconds <= 3.2, (kind, seconds)


def test_a_second_recording_is_refused_while_one_runs(env: Env, tmp_path: Path) -> None:
    """While a recording runs, others are refused and never record; the first still
    arrives whole (and, nothing playing, silent). Each refusal says why (the recorder
    holds its short answer until the client hangs up, so socat cannot drop it)."""
    record_socket(env)
    target = endpoint(env.driver, env.env_id, "record")

    async def refused() -> str:
        try:
            opened = await open_recording(target, env.env_id, 2)
        except (ConflictError, ExternalError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return f"started: {opened is not None}"

    async def both() -> tuple[bytes, list[str]]:
        first = asyncio.ensure_future(record(env, 8))
        try:
            deadline = time.monotonic() + 10
            while (await env.driver.exec(env.env_id, ["pgrep", "-f", RECORDING])).code != 0:
                assert time.monotonic() < deadline, "the first recording never started"
                await asyncio.sleep(0.1)
            answers = []
            for _ in range(8):
                answers.append(await refused())
                await asyncio.sleep(0.2)
        except BaseException:
            first.cancel()
            raise
        return await first, answers

    data, answers = env.runner.run(both())
    in_progress = "ConflictError: another recording is in progress"
    assert answers == [in_progress] * len(answers), answers
    out = tmp_path / "first.mp4"
    out.write_bytes(data)
    assert codecs(out)["video"] > 0.5
    assert mean_volume(out) < -80
