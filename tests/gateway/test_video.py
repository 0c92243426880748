"""Video mode's framing of genos-video's output and its controller of levels, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from genos.errors import ProtocolError
from genos.gateway.video import (
    LADDER,
    MAX_FRAME,
    Change,
    VideoController,
    VideoTuning,
    header,
    is_key,
    read_frame,
)
from genos.runtime.fake_media import fake_frame, part

pytestmark = pytest.mark.anyio


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_frames_come_out_whole_and_in_order() -> None:
    frames = [fake_frame(0, 5000), fake_frame(1, 300), fake_frame(2, 1)]
    reader = reader_of(b"".join(part(f) for f in frames))
    assert [await read_frame(reader) for _ in frames] == frames
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(reader)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"--other\r\nContent-Length: 1\r\n\r\nx\r\n", "framing"),
        (b"--genos\r\nContent-Type: video/x-h264\r\n\r\nx\r\n", "missing"),
        (b"--genos\r\nContent-Length: -1\r\n\r\nx\r\n", "not a number"),
        (b"--genos\r\nContent-Length: 0\r\n\r\n\r\n", "missing or over"),
        (b"--genos\r\nContent-Length: %d\r\n\r\n" % (MAX_FRAME + 1), "missing or over"),
        (b"--genos\r\nContent-Length: 1\r\n\r\nxy\r\n", "does not end"),
        (b"--genos\r\n" + b"X-A: b\r\n" * 9 + b"\r\n", "too many headers"),
        (b"--genos\r\nX-Long: " + b"a" * 200 + b"\r\n\r\n", "too long"),
    ],
)
async def test_bad_framing_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        await read_frame(reader_of(data))


async def test_a_frame_cut_short_is_the_end_of_the_stream() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(reader_of(part(fake_frame(0, 100))[:-20]))


def test_key_frames_are_told_by_their_first_slice() -> None:
    assert is_key(fake_frame(0, 10))
    assert not is_key(fake_frame(1, 10))
    # SPS, PPS then an IDR slice (a real x264 key frame's order), 3-byte start codes.
    assert is_key(b"\x00\x00\x01\x09\xf0\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x01\x65")
    assert not is_key(b"\x00\x00\x01\x09\xf0")
    assert header(3, 0x01020304) == b"\x01\x03\x01\x02\x03\x04\x00\x00"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(c: VideoController, clock: Clock, seconds: float, delay: float, size: int) -> list[Change]:
    """Frames at the current fps for ``seconds``, each acked ``delay`` after it was sent."""
    changes = []
    fps = c.levels()[0]
    seq = getattr(c, "_test_seq", 0)
    for _ in range(int(seconds * fps)):
        c.sent(seq, size)
        clock.now += delay
        c.acked(seq)
        clock.now += max(0.0, 1 / fps - delay)
        seq += 1
        changes.append(c.tick())
        if changes[-1] is not Change.NONE:
            c.restarted()
            fps = c.levels()[0]
    c._test_seq = seq  # type: ignore[attr-defined]
    return changes


def test_a_full_link_steps_down_and_is_not_tried_again_at_once() -> None:
    clock = Clock()
    c = VideoController(clock)
    assert c.levels() == (LADDER[5][1], LADDER[5][0])
    run(c, clock, 3, 0.02, 6000)  # a quiet link: the least delay is 20 ms
    assert c.level == 5
    run(c, clock, 3, 0.30, 6000)  # 280 ms queued on the way
    assert c.level < 5
    low = c.level
    run(c, clock, 5, 0.02, 6000)  # clear again, with a fast link
    assert c.level <= low + 1, "climbed back to the level that filled the link within the hold"


def test_a_clear_link_climbs_while_the_encoder_uses_its_bitrate() -> None:
    """Frames queue nowhere: with the encoder using its whole bitrate the level climbs; with a
    still or simple screen (frames far under the bitrate) it stays, as more would buy nothing."""
    clock = Clock()
    c = VideoController(clock)
    run(c, clock, 8, 0.021, 500)  # 24 fps x 500 bytes: 96 kbit/s of a 1300 kbit/s level
    assert c.level == 5
    for _ in range(3):
        fps, kbps = c.levels()
        run(c, clock, 4, 0.021, kbps * 1000 // 8 // fps)
    assert c.level > 5
    assert c.stats().delivered_kbps >= 0.8 * LADDER[5][0]


def test_a_viewer_far_behind_is_flushed_two_levels_down() -> None:
    clock = Clock()
    c = VideoController(clock)
    for seq in range(30):
        c.sent(seq, 5000)
        clock.now += 0.05
    assert c.backlog() > 1.0
    assert c.tick() is Change.FLUSH
    assert c.level == 3
    assert c.silent() == pytest.approx(1.5)
    c.restarted()
    assert c.backlog() == 0.0
    assert not c.acked(5), "a frame of the old encoder is not waited for"


def test_fixed_levels_never_move() -> None:
    clock = Clock()
    c = VideoController(clock, fixed=(10, 200))
    for seq in range(40):
        c.sent(seq, 5000)
        clock.now += 0.1
    assert c.tick() is Change.NONE
    assert c.levels() == (10, 200)
    assert not c.stats().adaptive


def test_tuning_is_respected() -> None:
    clock = Clock()
    c = VideoController(clock, VideoTuning(start_level=0))
    assert c.levels() == (LADDER[0][1], LADDER[0][0])
    run(c, clock, 2, 0.5, 3000)
    assert c.level == 0, "the bottom of the ladder is the floor"
