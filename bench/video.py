"""Video mode against RFB (issue #14): the same clip, the same environment, the same run.

A real desktop on runc (1280x800). ``_video_clip.py`` draws a 1280x720 clip into the
environment's X server at 24 frames a second for the whole run: a photo-like picture panned
8 pixels a frame, each frame's number in a strip of squares at the top, and a magenta square
where the pointer is (an app that answers input). Two gateways (``_video_host.py``: the API's
display and video routes without accounts) serve it: one on loopback, one in namespace
``genos-bench-b`` behind the 4 Mbit/s, 60 ms link of ``bench/stream.py`` (tbf each way and a
30 ms delay line each way), reached from ``genos-bench-a``.

For each run of :data:`SECONDS` a viewer takes the picture while a probe moves the pointer
(through RFB, as the web client does in both modes) every 250-350 ms to a point in a band at
the bottom of the clip:

* ``rfb``: Tight with JPEG (quality 6, compression 2 asked; the gateway's adaptive controller
  sets the levels), request, receive, request again as noVNC does; every rectangle is decoded
  (Tight: fill, JPEG, copy and palette filters over its four zlib streams);
* ``video``: the video channel, adaptive or at fixed levels; each frame acked on arrival; the
  stream is decoded afterwards by ffmpeg, frame for frame.

Figures per run: clip frames a second that reached the viewer (distinct frame numbers read
off its picture) and updates or frames a second; kbit/s on the wire; the environment's CPU
(its cgroup, Xvnc and the encoders, the clip's drawing requests included); input-to-frame
latency (pointer move sent -> first picture with the square there) p50/p95; and "the same
picture": SSIM (ffmpeg's ``ssim`` filter, all planes) of every third received frame against
the clip's own frame of the number it shows, over the part of the clip without the strip and
the pointer's band.

Needs root (namespaces, tc), runc, the warm test image store, ffmpeg. Loopback and the two
namespaces only; every process, namespace, environment and file is removed at the end.

Run: .venv/bin/python bench/video.py [--seconds 20] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.sandbox.probes import Env, running_env

from _stream_host import (
    ADDR_B,
    NS_B,
    PYTHON,
    Procs,
    connect_in,
    free_port,
    link_down,
    link_up,
    start_delay,
    wait_for,
)
from _stream_rfb import COPY_RECT, LAST_RECT, RAW, TIGHT, Update, Viewer, WsLink, _compact
from _video_clip import (
    HEIGHT,
    MARK,
    SQUARE,
    WIDTH,
    Pixel,
    frame,
    has_mark,
    picture,
    pixels,
    read_code,
)
from genos.runtime.driver import endpoint
from genos.runtime.images import ImageStore
from genos.runtime.oci.driver import default_run_root
from genos.sandbox import cgroups
from genos.spec import EnvironmentSpec

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
SECONDS = 20.0  # one whole cycle of the clip: every run sees the same pictures
FPS = 24
QUALITY6, COMPRESS2 = -32 + 6, -256 + 2
BAND = (HEIGHT - 110, HEIGHT - MARK - 30)  # the probe's rows (its square is drawn below)
SSIM_ROWS = (SQUARE + 8, BAND[0] - 10)
SAMPLE_EVERY = 3


@dataclass
class Result:
    """One run's figures."""

    name: str
    seconds: float
    clip_frames: int = 0
    updates: int = 0
    wire_bytes: int = 0
    cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    probes: int = 0
    ssim: float | None = None
    levels: list[str] = field(default_factory=list)

    def row(self) -> str:
        lat = sorted(self.latencies)
        p50 = f"{statistics.median(lat) * 1000:.0f}" if lat else "-"
        p95 = f"{lat[int(len(lat) * 0.95)] * 1000:.0f}" if lat else "-"
        ssim = f"{self.ssim:.3f}" if self.ssim is not None else "-"
        return (
            f"{self.name:<22} {self.clip_frames / self.seconds:6.1f} "
            f"{self.updates / self.seconds:6.1f} {self.kbps():7.0f} "
            f"{self.cpu_seconds / self.seconds * 100:5.0f}% {p50:>5} {p95:>5} "
            f"{len(lat):>3}/{self.probes:<3} {ssim:>6}"
        )

    def kbps(self) -> float:
        return self.wire_bytes * 8 / self.seconds / 1000


class Samples:
    """Pictures a viewer showed and the clip's frames they show, for SSIM."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.got = (tmp / f"{name}.got.rgb").open("wb")
        self.want = (tmp / f"{name}.want.rgb").open("wb")
        self.count = 0
        self.seen = 0

    def add(self, image: Image.Image, number: int, big: Image.Image) -> None:
        self.seen += 1
        if self.seen % SAMPLE_EVERY:
            return
        box = (0, SSIM_ROWS[0], WIDTH, SSIM_ROWS[1])
        self.got.write(image.crop(box).tobytes())
        self.want.write(frame(big, number).crop(box).tobytes())
        self.count += 1

    def ssim(self) -> float | None:
        self.got.close()
        self.want.close()
        if not self.count:
            return None
        size = f"{WIDTH}x{SSIM_ROWS[1] - SSIM_ROWS[0]}"
        raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size, "-i"]
        argv = ["ffmpeg", "-v", "info", "-nostats", *raw, self.got.name, *raw, self.want.name]
        argv += ["-lavfi", "ssim", "-f", "null", "-"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        out = done.stderr
        found = re.search(r"SSIM .*All:([0-9.]+)", out)
        return float(found.group(1)) if found else None


class Probe:
    """Pointer moves, and the first picture that shows each; a new move supersedes the one
    still waited for (it counts as not seen)."""

    def __init__(self) -> None:
        self.pending: tuple[float, int, int] | None = None
        self.moves: list[tuple[float, int, int]] = []
        self.latencies: list[float] = []

    async def run(self, viewer: Viewer, until: float) -> None:
        rng = random.Random(7)  # noqa: S311 - where the pointer goes, not a secret
        while time.perf_counter() < until:
            await asyncio.sleep(rng.uniform(0.25, 0.35))
            x = rng.randrange(40, WIDTH - MARK - 60)
            y = rng.randrange(*BAND)
            self.pending = (time.perf_counter(), x, y)
            self.moves.append(self.pending)
            await viewer.pointer(x, y)

    def look(self, pixel: Pixel, at: float) -> None:
        if self.pending is None:
            return
        sent, x, y = self.pending
        if at > sent and has_mark(pixel, x, y):
            self.latencies.append(at - sent)
            self.pending = None


class DecodingViewer(Viewer):
    """The bench's RFB viewer, decoding every rectangle into ``self.picture``."""

    def __init__(self, link: WsLink) -> None:
        super().__init__(link)
        self.picture = Image.new("RGB", (1, 1))
        self.streams = [zlib.decompressobj() for _ in range(4)]

    async def _update(self, first: float) -> Update:
        read = self.link.read_exact
        if self.picture.size != (self.width, self.height):
            self.picture = Image.new("RGB", (self.width, self.height))
        before = self.link.rx - 1
        n = int.from_bytes((await read(3))[1:3], "big")
        update = Update(first, 0.0, 0)
        for _ in range(n):
            head = await read(12)
            x, y, w, h = (int.from_bytes(head[i : i + 2], "big") for i in (0, 2, 4, 6))
            enc = int.from_bytes(head[8:12], "big", signed=True)
            if enc == LAST_RECT:
                break
            update.rects.append((x, y, w, h, enc))
            if enc == TIGHT:
                await self._tight(x, y, w, h)
            elif enc == RAW:
                data = await read(w * h * 4)
                self.picture.paste(Image.frombytes("RGB", (w, h), data, "raw", "BGRX"), (x, y))
            elif enc == COPY_RECT:
                src = await read(4)
                sx, sy = int.from_bytes(src[:2], "big"), int.from_bytes(src[2:], "big")
                self.picture.paste(self.picture.crop((sx, sy, sx + w, sy + h)), (x, y))
            else:
                await self._payload(enc, w, h)
        update.done = time.perf_counter()
        update.nbytes = self.link.rx - before
        return update

    async def _tight(self, x: int, y: int, w: int, h: int) -> None:  # noqa: PLR0912
        read = self.link.read_exact
        ctl = (await read(1))[0]
        for i in range(4):
            if ctl >> i & 1:
                self.streams[i] = zlib.decompressobj()
        kind = ctl >> 4
        if kind == 0x8:
            r, g, b = await read(3)
            self.picture.paste((r, g, b), (x, y, x + w, y + h))
            return
        if kind == 0x9:
            jpeg = await read(await _compact(read))
            self.picture.paste(Image.open(io.BytesIO(jpeg)).convert("RGB"), (x, y))
            return
        if kind > 0x9:
            raise RuntimeError(f"Tight compression {kind}")
        flt = (await read(1))[0] if kind & 0x4 else 0
        colours, palette = 0, b""
        if flt == 0:
            size = w * h * 3
        elif flt == 1:
            colours = (await read(1))[0] + 1
            palette = await read(3 * colours)
            size = ((w + 7) // 8 if colours == 2 else w) * h
        else:
            raise RuntimeError(f"Tight filter {flt}")
        if size < 12:
            data = await read(size)
        else:
            data = self.streams[kind & 0x3].decompress(await read(await _compact(read)))
        if flt == 0:
            image = Image.frombytes("RGB", (w, h), data[:size])
        elif colours == 2:
            mask = Image.frombytes("1", (w, h), data[:size]).convert("L")
            one, zero = (Image.new("RGB", (w, h), tuple(palette[i : i + 3])) for i in (3, 0))
            image = Image.composite(one, zero, mask)
        else:
            image = Image.frombytes("P", (w, h), data[:size])
            image.putpalette(palette)
            image = image.convert("RGB")
        self.picture.paste(image, (x, y))


async def open_ws(where: tuple[str, str, int], path: str) -> websockets.ClientConnection:
    netns, host, port = where
    sock = connect_in(netns, host, port)
    return await websockets.connect(
        f"ws://{host}:{port}{path}",
        subprotocols=[websockets.Subprotocol("binary")],
        max_size=None,
        compression=None,
        sock=sock,
    )


async def input_viewer(where: tuple[str, str, int]) -> DecodingViewer:
    viewer = DecodingViewer(WsLink(await open_ws(where, "/ws")))
    await viewer.handshake([TIGHT, QUALITY6, COMPRESS2])
    return viewer


def cpu(env: Env) -> float:
    return cgroups.usage(env.env_id).cpu_seconds


@dataclass
class Bench:
    """What every run shares."""

    env: Env
    big: Image.Image
    tmp: Path
    seconds: float


async def rfb_run(bench: Bench, name: str, where: tuple[str, str, int]) -> Result:
    viewer = await input_viewer(where)
    link = viewer.link
    assert isinstance(link, WsLink)
    env, seconds = bench.env, bench.seconds
    result, samples, probe = Result(name, seconds), Samples(bench.tmp, name), Probe()
    await viewer.request(incremental=False)
    await viewer.next_update()  # the first, whole picture is not counted
    start, cpu0, wire0 = time.perf_counter(), cpu(env), link.wire_rx
    until = start + seconds
    probing = asyncio.create_task(probe.run(viewer, until))
    numbers: set[int] = set()
    pixel = pixels(viewer.picture)
    while time.perf_counter() < until:
        await viewer.request(incremental=True)
        update = await viewer.next_update()
        result.updates += 1
        pixel = pixels(viewer.picture)
        number = read_code(pixel)
        probe.look(pixel, update.done)
        if number is not None and number not in numbers:
            numbers.add(number)
            samples.add(viewer.picture, number, bench.big)
    result.wire_bytes = link.wire_rx - wire0
    result.cpu_seconds = cpu(env) - cpu0
    probing.cancel()
    await viewer.close()
    result.clip_frames, result.probes = len(numbers), len(probe.moves)
    result.latencies = probe.latencies
    result.ssim = samples.ssim()
    return result


async def video_run(bench: Bench, name: str, where: tuple[str, str, int], query: str) -> Result:
    viewer = await input_viewer(where)
    ws = await open_ws(where, "/video" + query)
    env, seconds = bench.env, bench.seconds
    result, probe = Result(name, seconds), Probe()
    stream, arrivals = bytearray(), list[float]()
    wire = 0
    start = cpu0 = 0.0
    until = None
    probing: asyncio.Task[None] | None = None
    while until is None or time.perf_counter() < until:
        message = await ws.recv()
        if isinstance(message, str):
            if '"levels"' in message:
                result.levels.append(re.sub(r'"type": "levels", ', "", message))
            continue
        await ws.send(message[2:6])
        if until is None:  # the first frame starts the clock, as RFB's first picture does
            start, cpu0 = time.perf_counter(), cpu(env)
            until = start + seconds
            probing = asyncio.create_task(probe.run(viewer, until))
        else:
            wire += len(message) + (4 if len(message) < 1 << 16 else 10)
            arrivals.append(time.perf_counter())
        stream += message[8:]
    result.cpu_seconds = cpu(env) - cpu0
    result.wire_bytes = wire
    if probing is not None:
        probing.cancel()
    await ws.close()
    await viewer.close()
    result.updates, result.probes = len(arrivals), len(probe.moves)
    decode(bytes(stream), arrivals, result, probe, bench)
    result.latencies = probe.latencies
    return result


def decode(stream: bytes, times: list[float], result: Result, probe: Probe, bench: Bench) -> None:
    """Decode the whole stream with ffmpeg, frame for frame; the first frame (before the clock
    started) is dropped, the rest are matched to their arrival times."""
    width, height = 1280, 800
    argv = ["ffmpeg", "-v", "error", "-f", "h264", "-i", "-", "-fps_mode", "passthrough"]
    argv += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(
        argv, input=bytes(stream), capture_output=True, timeout=900, check=False
    ).stdout
    samples = Samples(bench.tmp, result.name)
    size = width * height * 3
    count = len(out) // size
    numbers: set[int] = set()
    probe.pending = None
    replay = list(probe.moves)
    for k in range(1, count):
        at = times[k - 1] if k - 1 < len(times) else times[-1]
        image = Image.frombytes("RGB", (width, height), out[k * size : (k + 1) * size])
        pixel = pixels(image)
        while replay and replay[0][0] < at:
            probe.pending = replay.pop(0)
        probe.look(pixel, at)
        number = read_code(pixel)
        if number is not None and number not in numbers:
            numbers.add(number)
            samples.add(image, number, bench.big)
    result.clip_frames = len(numbers)
    result.ssim = samples.ssim()


def start_gateway(procs: Procs, tmp: Path, env: Env, where: tuple[str, str, int]) -> None:
    netns, host, port = where
    rfb = endpoint(env.driver, env.env_id, "vnc")
    video = endpoint(env.driver, env.env_id, "video")
    argv = ["ip", "netns", "exec", netns] if netns else []
    argv += [PYTHON, str(HERE / "_video_host.py"), host, str(port), str(rfb), str(video)]
    procs.start(argv, tmp / f"gateway-{netns or 'host'}.log")

    def listening() -> bool:
        try:
            connect_in(netns, host, port).close()
        except OSError:
            return False
        return True

    wait_for(listening, 30, "the bench gateway")


def x_socket(env: Env) -> str:
    pid = cgroups.tasks(env.env_id)[0]
    path = f"/proc/{pid}/root/tmp/.X11-unix/X0"
    wait_for(lambda: Path(path).exists(), 30, "the environment's X socket")
    return path


async def runs(bench: Bench, procs: Procs, *, quick: bool, only: str) -> list[Result]:
    loop_port, ns_port, delay_port = free_port(), free_port(), free_port()
    loopback = ("", "127.0.0.1", loop_port)
    start_gateway(procs, bench.tmp, bench.env, loopback)
    link_up("4mbit")
    start_gateway(procs, bench.tmp, bench.env, (NS_B, "127.0.0.1", ns_port))
    start_delay(procs, bench.tmp, delay_port, ns_port, 30)
    slow = ("genos-bench-a", ADDR_B, delay_port)
    results = []
    plan: list[tuple[str, str, tuple[str, str, int], str]] = [
        ("loopback rfb", "rfb", loopback, ""),
        ("loopback video", "video", loopback, ""),
        ("4mbit rfb", "rfb", slow, ""),
        ("4mbit video", "video", slow, ""),
    ]
    if not quick:
        fixed = (500, 650, 700, 800, 1200)
        plan += [(f"4mbit video {k}k", "video", slow, f"?fps=24&kbps={k}") for k in fixed]
    for name, kind, where, query in [p for p in plan if only in p[0]]:
        print(f"  {name} ...", flush=True)
        if kind == "rfb":
            results.append(await rfb_run(bench, name, where))
        else:
            results.append(await video_run(bench, name, where, query))
        await asyncio.sleep(1.0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--quick", action="store_true", help="the four main runs only")
    parser.add_argument("--only", default="", help="the runs whose name has this in it")
    parser.add_argument("--keep", action="store_true", help="keep the logs (printed at the end)")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="genos-bench-video-", dir="/var/tmp"))
    tmp = data / "work"
    tmp.mkdir()
    os.environ["GENOS_DATA_DIR"] = str(data)
    # Its own node name: its run root, cgroup parent and netns names are its own, so no
    # GenOS server on this host (a test's, say) takes its environment for an orphan.
    os.environ["GENOS_NODE"] = "bench-video"
    store = ImageStore(CACHE / "images")
    procs = Procs()
    spec = EnvironmentSpec.model_validate({"name": "video-bench", "display": {"headless": True}})
    try:
        with asyncio.Runner() as runner, running_env(runner, store, spec, data) as env:
            env.sh("pkill -x xterm")  # the root window is the clip's: nothing on top of it
            clip_seconds = 60 + (8 if not args.quick else 4) * (args.seconds + 15)
            argv = [
                PYTHON,
                str(HERE / "_video_clip.py"),
                x_socket(env),
                str(FPS),
                str(clip_seconds),
            ]
            procs.start(argv, tmp / "clip.log")
            time.sleep(2)
            bench = Bench(env, picture(), tmp, args.seconds)
            results = runner.run(runs(bench, procs, quick=args.quick, only=args.only))
    finally:
        procs.stop_all()
        link_down()
        remove_run_root()
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    report(results)


def remove_run_root() -> None:
    """The bench node's run root (``/run/genos-bench-video``) and cgroup parent, once no
    container is in them."""
    root = default_run_root()
    if not any((root / "runtime").glob("*/*")):
        shutil.rmtree(root, ignore_errors=True)
    cgroups.remove_parent()


def report(results: list[Result]) -> None:
    print()
    print(
        f"{'run':<22} {'clip/s':>6} {'upd/s':>6} {'kbit/s':>7} {'envCPU':>6} {'p50ms':>5} "
        f"{'p95ms':>5} {'seen':>7} {'SSIM':>6}"
    )
    for r in results:
        print(r.row())
        for levels in r.levels[:6]:
            print(f"{'':<24}levels {levels}")
    by = {r.name: r for r in results}
    for link in ("loopback", "4mbit"):
        rfb, video = by.get(f"{link} rfb"), by.get(f"{link} video")
        if rfb and video and rfb.kbps():
            print(
                f"{link}: video/rfb kbit/s {video.kbps() / rfb.kbps():.2f}, clip fps "
                f"{video.clip_frames / max(rfb.clip_frames, 1):.2f}x, env CPU "
                f"{video.cpu_seconds / max(rfb.cpu_seconds, 1e-9):.2f}x"
            )


if __name__ == "__main__":
    main()
