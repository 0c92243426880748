"""bench/stream.py's building blocks work: one measured frame through each path."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from _stream_host import Display, Procs, free_port, start_gateway, start_websockify  # noqa: E402
from _stream_rfb import RAW, SocketLink, WsLink  # noqa: E402
from stream import Opener, inputs, one_shot, viewer  # noqa: E402


async def frames(opener: Opener) -> tuple[int, int]:
    """Bytes of one 64x64 Raw update and of one pointer-move update on ``opener``'s path."""
    v = await viewer(opener, [RAW])
    try:
        [small] = await one_shot(v, 1, (0, 0, 64, 64))
        [moved] = await inputs(v, 1)
        return small.nbytes, moved.nbytes
    finally:
        await v.close()


def test_one_frame_through_each_path(tmp_path: Path) -> None:
    """Direct, websockify and the gateway route deliver the same small and pointer frames."""
    for tool in ("Xvnc", "xsetroot", "websockify"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed")
    procs = Procs()
    try:
        display = Display(procs, tmp_path)
        display.start()  # 1280x800: the pointer probes sit at x=1000+
        ws, gw = free_port(), free_port()
        start_websockify(procs, tmp_path, display.socket, "127.0.0.1", ws)
        start_gateway(procs, tmp_path, display.socket, "127.0.0.1", gw, mode="adaptive")
        paths: list[Opener] = [
            lambda: SocketLink.unix(str(display.socket)),
            lambda: WsLink.connect(f"ws://127.0.0.1:{ws}/"),
            lambda: WsLink.connect(f"ws://127.0.0.1:{gw}/ws"),
        ]

        async def go() -> list[tuple[int, int]]:
            async with asyncio.timeout(15):
                return [await frames(p) for p in paths]

        results = asyncio.run(go())
    finally:
        procs.stop_all()
    # 4 header + 12 rectangle header + 64*64*4 pixels; the cursor update is the same on each.
    assert [small for small, _ in results] == [16_400] * 3
    assert len({moved for _, moved in results}) == 1
