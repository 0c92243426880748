"""Video mode from a real environment (runc): genos-video's H.264 of the screen on video.sock."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from genos.gateway.video import is_key, read_frame
from genos.runtime.driver import endpoint
from tests.runtime.screens import screenshot
from tests.sandbox.probes import Env

pytestmark = [pytest.mark.root, pytest.mark.runc]


def video_socket(env: Env) -> Path:
    """The env's video.sock, once socat listens (just after the display answers)."""
    socket = endpoint(env.driver, env.env_id, "video")
    deadline = time.monotonic() + 10
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert isinstance(socket, Path)
    return socket


async def watch(socket: Path, ask: bytes, seconds: float) -> list[bytes]:
    """The frames one viewer that asked ``ask`` receives in ``seconds``."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    frames: list[bytes] = []
    try:
        writer.write(ask)
        await writer.drain()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frames.append(await asyncio.wait_for(read_frame(reader), left))
            except (TimeoutError, asyncio.IncompleteReadError):
                break
    finally:
        writer.close()
    return frames


def probe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-count_frames", "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    streams: list[dict[str, object]] = json.loads(out)["streams"]
    assert len(streams) == 1
    return streams[0]


def test_the_screen_arrives_as_h264_that_decodes_to_the_screen(env: Env, tmp_path: Path) -> None:
    """Asked for 24 fps at 1000 kbit/s: about 24 frames a second, the first a key frame and no
    other (intra refresh), constrained baseline at the screen's size; its last frame, decoded by
    ffmpeg, is the picture an RFB client gets of the same screen."""
    socket = video_socket(env)
    frames = env.runner.run(watch(socket, b"24 1000\n", 3.0))
    assert len(frames) >= 24, f"{len(frames)} frames in 3 s at 24 fps"
    assert is_key(frames[0])
    assert not any(is_key(f) for f in frames[1:])
    stream = tmp_path / "screen.h264"
    stream.write_bytes(b"".join(frames))
    info = probe(stream)
    assert info["codec_name"] == "h264"
    assert info["profile"] == "Constrained Baseline"
    assert int(str(info["nb_read_frames"])) == len(frames)
    rfb = screenshot(endpoint(env.driver, env.env_id, "vnc"))  # type: ignore[arg-type]
    assert (info["width"], info["height"]) == (rfb.width // 2 * 2, rfb.height // 2 * 2)
    last = tmp_path / "last.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(stream), "-vf", "select=eq(n\\," + str(len(frames) - 1)
         + ")", "-frames:v", "1", str(last)],
        check=True, timeout=60,
    )  # fmt: skip
    decoded = Image.open(last).convert("RGB")
    crop = rfb.crop((0, 0, decoded.width, decoded.height))
    diff = ImageStat.Stat(ImageChops.difference(decoded, crop)).mean
    assert max(diff) < 8, f"mean difference per channel {diff}"


@pytest.mark.parametrize(
    "ask", [b"0 1000\n", b"61 1000\n", b"24 10\n", b"24 99999\n", b"abc\n", b"24 1000 5\n", b"\n"]
)
def test_a_bad_ask_gets_nothing(env: Env, ask: bytes) -> None:
    assert env.runner.run(watch(video_socket(env), ask, 2.0)) == []


def test_two_viewers_get_their_own_levels(env: Env) -> None:
    """Two viewers at once, 5 and 20 fps: each gets its own stream at its own rate."""
    socket = video_socket(env)

    async def both() -> tuple[list[bytes], list[bytes]]:
        return await asyncio.gather(watch(socket, b"5 300\n", 3.0), watch(socket, b"20 800\n", 3.0))

    slow, fast = env.runner.run(both())
    assert is_key(slow[0])
    assert is_key(fast[0])
    assert 8 <= len(slow) <= 20, len(slow)
    assert len(fast) >= 2 * len(slow), (len(slow), len(fast))
