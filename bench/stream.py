"""Streaming figures (issue #5): the gateway against websockify, and on slow links.

One TigerVNC Xvnc (1280x800, unix socket only) serves every path in the same
run. A hand-written RFB viewer (``_stream_rfb.py``: 32-bit true colour, its
own parsers, ``perf_counter`` stamps) measures:

1. Added latency and bytes on loopback, per path: ``direct`` (the Xvnc socket,
   the baseline), ``websockify`` (Debian's, ``--unix-target``), ``gateway`` (a
   Starlette/uvicorn route doing what the API does: ``accept(subprotocol=
   "binary")`` then ``proxy(websocket_stream(ws), ...)``, in its own process
   like websockify) and ``gateway-fixed`` (the same, adaptation off: the
   controller never adjusts and stays on its start level 6). Quiet screen:

   * ``small``: a non-incremental request for a 64x64 Raw rectangle, to its last byte;
   * ``full``: a non-incremental request for the whole screen in Raw (4 MB);
   * ``input``: a PointerEvent with an incremental request outstanding, until
     the update covering the cursor (Xvnc draws it: no Cursor pseudo-encoding);

   then ``stream``: with a photo-like picture panning over 640x360 at 25 fps
   (``_stream_draw.py``), request, receive, request again (as noVNC does) in
   Tight at quality 6 / compression 4 (the fixed gateway's levels).
   Paths rotate order each repetition; figures are medians over repetitions.

2. Slow links: namespaces ``genos-bench-a`` (the viewer) and ``genos-bench-b``
   (websockify and both gateways) on a veth pair with a tbf rate limit on each
   end, plus 30 ms each way from a delay line in ``genos-bench-b``
   (``_stream_delay.py``; this kernel has no netem): 60 ms RTT. With the
   picture panning, a noVNC-like viewer (Tight, quality 6, compression 2)
   streams while a probe moves the pointer every 250-350 ms; input-to-frame
   latency p50/p99, updates/s and kbit/s, gateway adaptation on and off,
   websockify, and the levels the adaptive controller chose, second by second.

Needs root (namespaces, tc), Xvnc, xsetroot, websockify. Loopback and the two
namespaces only; every process, namespace and file is removed at the end.

Run: .venv/bin/python bench/stream.py [--quick] [--reps N] [--figure 1|2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stream_host import (
    ADDR_B,
    NS_A,
    NS_B,
    Display,
    Procs,
    connect_in,
    free_port,
    level_log,
    link_down,
    link_up,
    start_delay,
    start_gateway,
    start_websockify,
)
from _stream_rfb import (
    RAW,
    TIGHT,
    Link,
    SocketLink,
    Update,
    Viewer,
    WsLink,
    compress,
    quality,
)

Opener = Callable[[], Awaitable[Link]]
Results = dict[tuple[str, str], list["Sample"]]
CURSOR_BOX = (2, 2, 20, 24)  # left_ptr around the hotspot, with a margin
PROBE = ((1000, 600), (1060, 660))  # far from the picture at 0,0 640x360


@dataclass(frozen=True)
class Size:
    """How much to measure: ``--quick`` or the full run."""

    reps: int
    small: int
    full: int
    inputs: int
    stream_s: float
    link_s: float
    link_warmup_s: float
    rates: tuple[str, ...]


QUICK = Size(1, small=100, full=8, inputs=40, stream_s=2.0, link_s=6.0, link_warmup_s=2.0,
             rates=("4mbit",))  # fmt: skip
FULL = Size(3, small=300, full=15, inputs=100, stream_s=4.0, link_s=15.0, link_warmup_s=5.0,
            rates=("4mbit", "1mbit"))  # fmt: skip


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def box(x: int, y: int) -> tuple[int, int, int, int]:
    dx, dy, w, h = CURSOR_BOX
    return x - dx, y - dy, w, h


async def viewer(opener: Opener, encodings: list[int]) -> Viewer:
    v = Viewer(await opener())
    await v.handshake(encodings)
    return v


async def until_touched(v: Viewer, sent: float, target: tuple[int, int, int, int]) -> Update:
    """Read (and re-request) until an update started after ``sent`` covers ``target``."""
    while True:
        update = await v.next_update()
        await v.request(incremental=True)
        if update.first > sent and update.touches(*target):
            return update


# -- figure 1: loopback ------------------------------------------------------------------


async def one_shot(v: Viewer, n: int, rect: tuple[int, int, int, int] | None) -> list[Update]:
    """``n`` non-incremental requests, each to its update's last byte; update.first=send time."""
    out = []
    for i in range(n):
        if rect is not None:  # walk the rectangle so no two requests are identical
            rect = ((i * 64) % (v.width - 64), (i * 64 // v.width * 64) % (v.height - 64), 64, 64)
        sent = time.perf_counter()
        await v.request(incremental=False, rect=rect)
        update = await v.next_update()
        update.first = sent
        out.append(update)
    return out


async def inputs(v: Viewer, n: int) -> list[Update]:
    """``n`` pointer moves on a quiet screen, 60 ms apart, each to the update showing it."""
    await v.pointer(*PROBE[1])  # so that the first timed move is a change whatever came before
    await v.request(incremental=False)
    await v.next_update()
    await v.request(incremental=True)
    v.link.rx = v.link.wire_rx = 0
    out = []
    for i in range(n):
        await asyncio.sleep(0.06)  # beyond the gateway's pacing interval at any level >= 6
        x, y = PROBE[i % 2]
        sent = time.perf_counter()
        await v.pointer(x, y)
        update = await until_touched(v, sent, box(x, y))
        update.first = sent
        out.append(update)
    return out


async def stream(v: Viewer, seconds: float) -> list[Update]:
    """Request, receive, request again for ``seconds``; every update."""
    await v.request(incremental=False)
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        update = await v.next_update()
        await v.request(incremental=True)
        out.append(update)
    return out


@dataclass
class Sample:
    """One scenario on one path in one repetition."""

    p50_ms: float
    p99_ms: float
    bytes_per_frame: float
    wire_per_frame: float
    fps: float = 0.0
    kbps: float = 0.0


def latency_sample(updates: list[Update], link: Link) -> Sample:
    ms = [(u.done - u.first) * 1000 for u in updates]
    n = len(updates)
    return Sample(pct(ms, 0.5), pct(ms, 0.99), link.rx / n, link.wire_rx / n)


def note(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


async def measure(opener: Opener, scenario: str, size: Size) -> Sample:
    """One quiet-screen scenario on a fresh connection, after three untimed rounds."""
    v = await viewer(opener, [RAW])
    try:
        if scenario == "input":
            updates = await inputs(v, size.inputs)
        else:
            rect = (0, 0, 64, 64) if scenario == "small" else None
            await one_shot(v, 3, rect)
            v.link.rx = v.link.wire_rx = 0
            updates = await one_shot(v, size.small if rect else size.full, rect)
        return latency_sample(updates, v.link)
    finally:
        await v.close()


async def measure_stream(opener: Opener, seconds: float) -> Sample:
    """Frames and bytes of a noVNC-like loop in Tight while the picture pans."""
    v = await viewer(opener, [TIGHT, RAW, quality(6), compress(4)])
    try:
        await stream(v, 1.0)  # warm-up
        v.link.rx = v.link.wire_rx = 0
        updates = await stream(v, seconds)
    finally:
        await v.close()
    sample = latency_sample(updates, v.link)
    sample.fps = len(updates) / seconds
    sample.kbps = v.link.wire_rx * 8 / seconds / 1000
    return sample


async def loopback_rep(
    paths: dict[str, Opener], display: Display, size: Size, results: Results
) -> None:
    for scenario in ("small", "full", "input"):  # paths back to back: same load on each
        for name, opener in paths.items():
            note(f"{name} {scenario}")
            async with asyncio.timeout(120):
                results[name, scenario].append(await measure(opener, scenario, size))
    display.animate()
    try:
        for name, opener in paths.items():
            note(f"{name} stream")
            async with asyncio.timeout(60):
                results[name, "stream"].append(await measure_stream(opener, size.stream_s))
    finally:
        display.still()


async def figure_one(procs: Procs, display: Display, tmp: Path, size: Size) -> None:
    ws_port, gw_port, fx_port = free_port(), free_port(), free_port()
    start_websockify(procs, tmp, display.socket, "127.0.0.1", ws_port)
    start_gateway(procs, tmp, display.socket, "127.0.0.1", gw_port, mode="adaptive")
    start_gateway(procs, tmp, display.socket, "127.0.0.1", fx_port, mode="fixed")
    paths: dict[str, Opener] = {
        "direct": lambda: SocketLink.unix(str(display.socket)),
        "websockify": lambda: WsLink.connect(f"ws://127.0.0.1:{ws_port}/"),
        "gateway": lambda: WsLink.connect(f"ws://127.0.0.1:{gw_port}/ws"),
        "gateway-fixed": lambda: WsLink.connect(f"ws://127.0.0.1:{fx_port}/ws"),
    }
    names = list(paths)
    results: Results = {(p, s): [] for p in names for s in ("small", "full", "input", "stream")}
    for rep in range(size.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        await loopback_rep({n: paths[n] for n in order}, display, size, results)
    print_figure_one(names, results, size)


def med(samples: list[Sample], attr: str) -> float:
    return statistics.median(float(getattr(s, attr)) for s in samples)


def spread(samples: list[Sample], attr: str) -> str:
    values = [getattr(s, attr) for s in samples]
    return f"{min(values):.3f}-{max(values):.3f}" if len(values) > 1 else "-"


def print_figure_one(names: list[str], results: Results, size: Size) -> None:
    print(f"\n1. loopback, 1280x800, medians of {size.reps} repetition(s); spread = min-max p50")
    print("| scenario | path | p50 ms | p99 ms | p50 spread | +p50 vs direct | p50 ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for scenario in ("small", "full", "input"):
        base = med(results["direct", scenario], "p50_ms")
        for name in names:
            s = results[name, scenario]
            p50 = med(s, "p50_ms")
            print(
                f"| {scenario} | {name} | {p50:.3f} | {med(s, 'p99_ms'):.3f} | "
                f"{spread(s, 'p50_ms')} | {p50 - base:+.3f} | {p50 / base:.2f}x |"
            )
    print("\n| scenario | path | RFB bytes/frame | wire bytes/frame | updates/s | wire kbit/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for scenario in ("small", "full", "input", "stream"):
        for name in names:
            s = results[name, scenario]
            rate = f"{med(s, 'fps'):.1f} | {med(s, 'kbps'):,.0f}" if scenario == "stream" else "|"
            print(
                f"| {scenario} | {name} | {med(s, 'bytes_per_frame'):,.0f} | "
                f"{med(s, 'wire_per_frame'):,.0f} | {rate} |"
            )
    print("\nadded p50 latency, gateway minus websockify (target <= 1 ms):")
    for scenario in ("small", "full", "input"):
        for gw in ("gateway", "gateway-fixed"):
            ours = med(results[gw, scenario], "p50_ms")
            d = ours - med(results["websockify", scenario], "p50_ms")
            verdict = "HOLDS" if d <= 1.0 else "MISSED"
            print(f"  {scenario:6} {gw:14} {d:+.3f} ms  {verdict}")


# -- figure 2: the constrained link --------------------------------------------------------


@dataclass
class LinkRun:
    """One mode's run on the slow link."""

    latencies_ms: list[float]
    frames: int
    rx: int
    seconds: float
    lost: int = 0


async def probe_run(v: Viewer, warmup: float, seconds: float) -> LinkRun:
    """Stream like noVNC while a prober moves the pointer; time each move to its frame.

    One probe is out at a time; the next comes 250-350 ms after the previous
    one's frame (or after 5 s without it, counted as lost).
    """
    rng = random.Random(5)  # noqa: S311 - jitter, not a secret
    probe: list[tuple[float, tuple[int, int, int, int]]] = []
    run = LinkRun([], 0, 0, seconds)
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + seconds

    answered = asyncio.Event()

    async def prober() -> None:
        for i in range(10_000):
            await asyncio.sleep(rng.uniform(0.25, 0.35))
            x, y = PROBE[i % 2]
            answered.clear()
            probe[:] = [(time.perf_counter(), box(x, y))]
            await v.pointer(x, y)
            try:
                async with asyncio.timeout(5):
                    await answered.wait()
            except TimeoutError:
                run.lost += 1

    task = asyncio.create_task(prober())
    try:
        await v.request(incremental=False)
        while time.perf_counter() < end:
            update = await v.next_update()
            await v.request(incremental=True)
            if probe and update.first > probe[0][0] and update.touches(*probe[0][1]):
                sent = probe.pop()[0]
                answered.set()
                if sent >= measure_from:
                    run.latencies_ms.append((update.done - sent) * 1000)
            if update.first < measure_from:
                run.rx = -v.link.rx
            else:
                run.frames += 1
        run.rx += v.link.rx
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return run


LINK_MODES = ("gateway adaptive on", "gateway adaptive off", "websockify")


async def link_runs(procs: Procs, display: Display, tmp: Path, size: Size, rate: str) -> None:
    """Figure 2 on one link rate: set up, run each mode, tear down, print."""
    where = tmp / rate
    where.mkdir()
    ws_port, gw_port, fx_port = 5901, 8001, 8002  # inside genos-bench-b: no clash possible
    ports = dict(zip(LINK_MODES, (gw_port, fx_port, ws_port), strict=True))
    link_up(rate)
    pids = [
        start_websockify(procs, where, display.socket, "127.0.0.1", ws_port, netns=NS_B),
        start_gateway(
            procs, where, display.socket, "127.0.0.1", gw_port, mode="adaptive", netns=NS_B
        ),
        start_gateway(procs, where, display.socket, "127.0.0.1", fx_port, mode="fixed", netns=NS_B),
    ]
    pids += [start_delay(procs, where, 10_000 + p, p, 30) for p in ports.values()]
    novnc = [TIGHT, RAW, quality(6), compress(2)]  # noVNC's defaults; the gateway sets its own
    runs: dict[str, LinkRun] = {}
    display.animate()
    try:
        for name, port in ports.items():
            note(f"link {rate}: {name}")
            sock = connect_in(NS_A, ADDR_B, 10_000 + port)
            path = "/" if name == "websockify" else "/ws"
            url = f"ws://{ADDR_B}:{10_000 + port}{path}"
            v = Viewer(await WsLink.connect(url, sock=sock))
            await v.handshake(novnc)
            try:
                async with asyncio.timeout(size.link_warmup_s + size.link_s + 30):
                    runs[name] = await probe_run(v, size.link_warmup_s, size.link_s)
            finally:
                await v.close()
    finally:
        display.still()
        for pid in pids:
            procs.stop(pid)
        link_down()
    levels = {
        "gateway adaptive on": level_log(where / f"gateway-adaptive-{gw_port}.log"),
        "gateway adaptive off": level_log(where / f"gateway-fixed-{fx_port}.log"),
        "websockify": "",
    }
    print_link(rate, runs, levels, size)


def print_link(rate: str, runs: dict[str, LinkRun], levels: dict[str, str], size: Size) -> None:
    label = rate.replace("mbit", " Mbit/s")
    print(f"\n2. {label} each way, 60 ms RTT (tbf + delay line), panning picture;")
    print(f"   {size.link_s:g} s a mode after {size.link_warmup_s:g} s warm-up; pointer probes")
    print("| mode | input->frame p50 ms | p99 ms | probes (lost) | updates/s | kbit/s | levels |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in runs.items():
        lat = r.latencies_ms or [float("nan")]
        kbps = r.rx * 8 / r.seconds / 1000
        n = f"{len(r.latencies_ms)} ({r.lost})"
        print(
            f"| {name} | {pct(lat, 0.5):.0f} | {pct(lat, 0.99):.0f} | {n} | "
            f"{r.frames / r.seconds:.1f} | {kbps:.0f} | {levels[name]} |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one repetition, fewer samples")
    parser.add_argument("--reps", type=int, help="repetitions of figure 1")
    parser.add_argument("--figure", type=int, choices=(1, 2), help="only this figure")
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    if args.reps:
        size = dataclasses.replace(size, reps=args.reps)
    for tool in ("Xvnc", "xsetroot", "websockify"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench needs {tool}")
    tmp = Path(tempfile.mkdtemp(prefix="genos-bench-stream-"))
    procs = Procs()
    began = time.monotonic()
    try:
        display = Display(procs, tmp)
        display.start()
        if args.figure in (None, 1):
            await figure_one(procs, display, tmp, size)
        if args.figure in (None, 2):
            for rate in size.rates:
                await link_runs(procs, display, tmp, size, rate)
    finally:
        procs.stop_all()
        link_down()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n(total {time.monotonic() - began:.0f} s)")


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally blocks tear everything down


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    asyncio.run(main())
