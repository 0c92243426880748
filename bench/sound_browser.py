"""Sound latency end to end: a click played in the environment to the browser's audio output.

A real ``genos serve --driver oci`` (loopback, a throwaway data dir, the warm
test image store, node ``bench-sound-browser``) runs a plain desktop on runc;
Debian's chromium (headless, Playwright,
``--autoplay-policy=no-user-gesture-required``, Playwright's ``--mute-audio``
left out) opens the real web client on that desktop with sound on (the
overlay's default). Before the page loads, an init script wraps
``AudioNode.prototype.connect``: whatever the client connects to the
context's ``destination`` also feeds an AudioWorklet that posts the context
frame of the first sample above a threshold after silence. Its module is a
blob: URL, so the page's context bypasses CSP (``script-src 'self'`` forbids
blobs, and Playwright does not route worklet fetches). The page turns that
frame into wall-clock time with ``getOutputTimestamp()`` (context time <->
performance time) and ``performance.timeOrigin``; ``outputLatency`` is
reported beside it.

Each round, through the API's ``computer/exec``, a ``pacat`` in the
environment starts on an empty pipe, and a second later the shell writes its
``date +%s.%N`` (the host and the container share the clock), then 5 ms of a
1 kHz square wave at half scale and 100 ms of silence. Also listening, in the
same run: a client of the environment's ``audio.sock`` (``bench/sound.py``'s
measure, the baseline) and a WebSocket client of the gateway's
``/v1/environments/{id}/audio`` on loopback; for both, the click's arrival is
the first Opus packet carrying sound (each listener has its own encoder).

Needs root, runc, /usr/bin/chromium and the warm test image store.
Run: .venv/bin/python bench/sound_browser.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import httpx
import websockets
from playwright.sync_api import expect, sync_playwright
from tests.api.test_server import free_port, stop

from genos.errors import StreamClosedError
from genos.gateway.ogg import read_page
from genos.gateway.streams import AsyncioStream
from genos.runtime.oci.driver import default_run_root
from genos.sandbox import cgroups

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
CACHE = Path(os.environ.get("GENOS_TEST_CACHE", "/var/cache/genos-test"))
CHROMIUM = os.environ.get("GENOS_CHROMIUM", "/usr/bin/chromium")
SOUND_BYTES = 40  # a 20 ms Opus packet of silence is a few bytes; one with the click, ~100+
GAP = 0.3  # seconds of quiet before a loud packet or sample counts as an onset
THRESHOLD = 0.1  # the click is at 0.5 of full scale; decoded silence stays under 0.001
RATE = 48000  # the environment's null sink and the page's AudioContext


def click_samples() -> bytes:
    """5 ms of a 1 kHz square wave at half scale, s16le mono at 48 kHz."""
    return b"".join(struct.pack("<h", 16384 if (n // 24) % 2 == 0 else -16384) for n in range(240))


OCTAL = "".join("\\%03o" % b for b in click_samples())  # noqa: UP031 - printf(1)'s escapes
SETUP = f"printf '{OCTAL}' >/tmp/click.raw && head -c 9600 /dev/zero >/tmp/silence.raw"
# pacat connects and waits on an empty pipe (the sink renders silence, the encoders are
# warm); a second later the shell notes the time and writes the click, then silence.
CLICK = (
    "export XDG_RUNTIME_DIR=/tmp/runtime-1000; exec 3>&1;"
    " { sleep 1; date +%s.%N >&3; cat /tmp/click.raw /tmp/silence.raw; sleep 0.3; }"
    f" | pacat --raw --format=s16le --rate={RATE} --channels=1 --latency-msec=10 >/dev/null"
)

WORKLET_JS = f"""
class GenosBenchTap extends AudioWorkletProcessor {{
  constructor() {{ super(); this.loudAt = -1e12; }}
  process(inputs) {{
    const chans = inputs[0];
    if (!chans || !chans.length) return true;
    for (let i = 0; i < chans[0].length; i++) {{
      let v = 0;
      for (const ch of chans) v = Math.max(v, Math.abs(ch[i]));
      if (v <= {THRESHOLD}) continue;
      const frame = currentFrame + i;
      if (frame - this.loudAt > {GAP} * sampleRate) this.port.postMessage({{ frame, peak: v }});
      this.loudAt = frame;
    }}
    return true;
  }}
}}
registerProcessor('genos-bench-tap', GenosBenchTap);
"""

# Whatever the client connects to a destination also feeds the tap (connected with the
# original connect, so the tap's own connection is not tapped).
TAP_JS = f"""(() => {{
  if (!window.AudioContext) return;
  const connect = AudioNode.prototype.connect;
  const tap = (window.__genosTap = {{ onsets: [], ready: false, error: null }});
  const taps = new WeakMap();
  const source = new Blob([{json.dumps(WORKLET_JS)}], {{ type: 'text/javascript' }});
  const module = URL.createObjectURL(source);
  const record = (ctx, data) => {{
    const t = data.frame / ctx.sampleRate;
    const ts = ctx.getOutputTimestamp();
    const now = performance.now();
    const origin = performance.timeOrigin;
    tap.onsets.push({{
      peak: data.peak,
      out: origin + ts.performanceTime + (t - ts.contextTime) * 1000,
      seen: origin + now,
      stale: now - ts.performanceTime,
      outputLatency: ctx.outputLatency * 1000,
      baseLatency: ctx.baseLatency * 1000,
      skew: Date.now() - (origin + now),
    }});
  }};
  const tapOf = (ctx) => {{
    if (!taps.has(ctx)) {{
      const made = ctx.audioWorklet.addModule(module).then(() => {{
        const node = new AudioWorkletNode(ctx, 'genos-bench-tap', {{ outputChannelCount: [1] }});
        node.port.onmessage = (ev) => record(ctx, ev.data);
        connect.call(node, ctx.destination);  // pulled by the graph; it outputs silence
        tap.ready = true;
        return node;
      }});
      made.catch((e) => {{ tap.error = String(e); }});
      taps.set(ctx, made);
    }}
    return taps.get(ctx);
  }};
  AudioNode.prototype.connect = function (dest, ...rest) {{
    const out = connect.call(this, dest, ...rest);
    if (dest instanceof AudioDestinationNode) {{
      tapOf(this.context).then((n) => connect.call(this, n));
    }}
    return out;
  }};
}})();"""


class Onsets:
    """Wall-clock times at which a listener's sound starts after at least GAP of quiet."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.loud_at = 0.0

    def page(self, page: bytes, now: float) -> None:
        """Note one Ogg page that arrived at ``now``."""
        if not any(len(p) > SOUND_BYTES and p[:4] != b"Opus" for p in ogg_packets(page)):
            return
        if now - self.loud_at > GAP:
            self.times.append(now)
        self.loud_at = now


def ogg_packets(page: bytes) -> list[bytes]:
    """The packets of one Ogg page (RFC 3533; genos-audio's never span pages)."""
    count = page[26]
    at, out, current = 27 + count, [], b""
    for length in page[27 : 27 + count]:
        current += page[at : at + length]
        at += length
        if length < 255:
            out.append(current)
            current = b""
    return out


async def listen_socket(path: Path, onsets: Onsets) -> None:
    """Read ``audio.sock`` as the gateway does until cancelled."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    stream = AsyncioStream(reader, writer)
    try:
        while True:
            onsets.page(await read_page(stream), time.time())
    except StreamClosedError:
        return
    finally:
        await stream.close()


async def listen_ws(url: str, onsets: Onsets) -> None:
    """Read the gateway's audio WebSocket, one page a message, until cancelled."""
    async with websockets.connect(url, subprotocols=["binary"], max_size=1 << 20) as ws:
        async for message in ws:
            if isinstance(message, bytes):
                onsets.page(message, time.time())


class Listeners:
    """The socket and WebSocket listeners, on an event loop in a thread of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: list[str] = []
        self.thread.start()

    def start(self, make: Callable[[], Any]) -> None:
        async def run() -> None:
            try:
                await make()
            except Exception as exc:  # noqa: BLE001 - reported with the figures
                self.errors.append(repr(exc))

        async def spawn() -> None:
            self.tasks.append(asyncio.create_task(run()))

        asyncio.run_coroutine_threadsafe(spawn(), self.loop).result(5)

    def close(self) -> None:
        async def cancel() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def start_server(data: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``genos serve --driver oci`` on a free loopback port, ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENOS_") or k == "GENOS_NODE"}
    env["GENOS_DATA_DIR"] = str(data)
    args = ["--driver", "oci", "--images-dir", str(CACHE / "images"), "--cpus", "2"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(BIN / "genos"), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=env, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: ready(process, url), 60, "the server to answer /readyz")
    except BaseException:
        stop(process)
        raise
    return process, url


def ready(process: subprocess.Popen[bytes], url: str) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"genos serve exited {process.returncode}")
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(0.05)
    return value


def state(api: httpx.Client, env_id: str) -> str:
    answer = api.get(f"/v1/environments/{env_id}")
    return "gone" if answer.status_code == 404 else str(answer.json()["state"])


def launch(api: httpx.Client) -> str:
    """Create a plain desktop (bench/sound.py's spec) through the API; its id."""
    answer = api.post("/v1/environments", json={"spec": {"name": "sound-browser-bench"}})
    answer.raise_for_status()
    env_id: str = answer.json()["id"]
    return env_id


def terminate(api: httpx.Client, env_id: str) -> None:
    """Delete the environment and wait until its containers are gone."""
    api.delete(f"/v1/environments/{env_id}")
    until(lambda: state(api, env_id) in ("terminated", "failed", "gone"), 60, "terminated")


def run_in(api: httpx.Client, env_id: str, script: str) -> str:
    """Run ``sh -c script`` in the environment as its user; its stdout."""
    body = {"argv": ["sh", "-c", script], "timeout": 20}
    answer = api.post(f"/v1/environments/{env_id}/computer/exec", json=body)
    answer.raise_for_status()
    found = answer.json()
    if found["exit_code"] != 0:
        raise RuntimeError(f"in the environment: {found}")
    return str(found["stdout"])


def open_page(browser: Any, api: httpx.Client, url: str, env_id: str) -> Any:
    """The web client on the desktop, signed in by a link, sound on and the tap ready."""
    # The tap's worklet module is a blob: URL, which the page's CSP (script-src 'self') forbids;
    # Playwright does not route worklet fetches, so CSP is bypassed for this page.
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    context.set_default_timeout(60_000)
    context.add_init_script(TAP_JS)
    page = context.new_page()
    code = api.post("/v1/login-links").json()["code"]
    page.goto(f"{url}/#/env/{env_id}?login={code}")
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id("action-sound")).to_have_text("Sound: on")
    until(lambda: poll(page, "window.genosSound?.ctx?.state") == "running", 30, "audio")
    until(lambda: poll(page, "window.__genosTap.ready || window.__genosTap.error"), 30, "tap")
    if error := page.evaluate("() => window.__genosTap.error"):
        raise RuntimeError(f"the tap did not load: {error}")
    until(lambda: poll(page, "window.genosSound.packets") > 25, 30, "sound packets")
    return page


def poll(page: Any, expression: str) -> Any:
    """Evaluate ``expression`` in the page, letting Playwright serve its routes meanwhile."""
    page.wait_for_timeout(20)
    return page.evaluate(f"() => {expression}")


def first_after(times: list[float], t0: float, within: float = 3.0) -> float | None:
    return next((t for t in times if t0 <= t <= t0 + within), None)


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1), linear between the closest ranks."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


PATHS = {
    "sock": "click -> first sound packet on audio.sock (baseline, bench/sound.py's measure)",
    "ws": "click -> first sound packet at a WebSocket client of the gateway",
    "seen": "click -> onset rendered (the tap's message on the page's main thread)",
    "out": "click -> onset at the page's audio output (getOutputTimestamp)",
    "out+lat": "click -> onset at the audio output + outputLatency",
}
# The page's numbers (ms): its jitter buffer's lead before the click, how long after the
# main thread saw the onset it is output, the Web Audio latencies, Date.now() less
# timeOrigin + now(), how old getOutputTimestamp() was, and the audio clock less the
# performance clock before the click (its spread is how far the audio clock drifted).
EXTRA = ["lead", "out-seen", "outputLatency", "baseLatency", "skew", "stale", "clock"]
CLOCKS = """() => {
  const s = window.genosSound;
  return [s.next - s.ctx.currentTime, s.ctx.currentTime * 1000 - performance.now()];
}"""
Round = dict[str, float | None]


def one_round(api: httpx.Client, env_id: str, page: Any, sock: Onsets, ws: Onsets) -> Round:
    """One click; milliseconds from it to each path's onset, and the page's numbers."""
    lead, clock = page.evaluate(CLOCKS)
    t0 = float(run_in(api, env_id, CLICK).strip())
    page.wait_for_timeout(400)  # the click has long reached the page's output by now
    onsets = page.evaluate("() => window.__genosTap.onsets.splice(0)")
    heard = next((o for o in onsets if o["seen"] / 1000 >= t0), None)
    found: Round = dict.fromkeys([*PATHS, *EXTRA])
    for key, listener in (("sock", sock), ("ws", ws)):
        at = first_after(listener.times, t0)
        found[key] = None if at is None else (at - t0) * 1000
    if heard is not None:
        found |= {k: heard[k] for k in EXTRA if k in heard}
        found["seen"] = heard["seen"] - t0 * 1000
        found["out"] = heard["out"] - t0 * 1000
        found["out+lat"] = found["out"] + heard["outputLatency"]
        found["out-seen"] = heard["out"] - heard["seen"]
        found["lead"] = lead * 1000
    found["clock"] = clock
    return found


def report(rounds: list[Round], loads: list[str], errors: list[str]) -> None:
    print(f"\nrounds {len(rounds)}; load average at start / end: {loads[0]} / {loads[-1]}")
    print("| path | p50 ms | p95 ms | max ms | min ms | arrived |")
    print("| --- | --- | --- | --- | --- | --- |")
    got = {k: [v for r in rounds if (v := r[k]) is not None] for k in [*PATHS, *EXTRA]}
    for key, label in PATHS.items():
        if ms := got[key]:
            row = f"{pct(ms, 0.5):.0f} | {pct(ms, 0.95):.0f} | {max(ms):.0f} | {min(ms):.0f}"
            print(f"| {label} | {row} | {len(ms)}/{len(rounds)} |")
    for key in ("ws", "out", "out+lat"):
        if got["sock"] and got[key]:
            ratio = statistics.median(got[key]) / statistics.median(got["sock"])
            print(f"ratio {key} / audio.sock baseline (medians): {ratio:.2f}")
    if len(clock := got.pop("clock")) > 1:
        print(f"audio clock less performance clock, last round less first: "
              f"{clock[-1] - clock[0]:.1f} ms")  # fmt: skip
    for key in EXTRA:
        if values := got.get(key):
            print(f"{key} ms: median {pct(values, 0.5):.2f}, min {min(values):.2f}, "
                  f"max {max(values):.2f}")  # fmt: skip
    for error in errors:
        print(f"listener error: {error}")


@contextlib.contextmanager
def environment(url: str, token: str) -> Iterator[tuple[httpx.Client, str]]:
    """A running desktop on the server, deleted at the end."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as api:
        env_id = launch(api)
        try:
            until(lambda: state(api, env_id) in ("running", "failed"), 300, "the desktop")
            if state(api, env_id) != "running":
                raise RuntimeError(f"the environment {env_id} failed to start")
            yield api, env_id
        finally:
            terminate(api, env_id)


def measure(url: str, token: str, rounds: int, warmup: int) -> None:
    """Open the page and the listeners on a new desktop, click ``rounds`` times, report."""
    loads = [" ".join(f"{v:.2f}" for v in os.getloadavg())]
    listeners = Listeners()
    results: list[Round] = []
    with environment(url, token) as (api, env_id), sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
            ignore_default_args=["--mute-audio"],
        )  # fmt: skip
        try:
            run_in(api, env_id, SETUP)
            sock_path = default_run_root() / env_id / "display" / "audio.sock"
            sock, ws = Onsets(), Onsets()
            listeners.start(lambda: listen_socket(sock_path, sock))
            display = api.post(f"/v1/environments/{env_id}/display-token", json={}).json()
            ws_url = f"{url.replace('http', 'ws')}/v1/environments/{env_id}/audio"
            listeners.start(lambda: listen_ws(f"{ws_url}?token={display['token']}", ws))
            page = open_page(browser, api, url, env_id)
            for n in range(warmup + rounds):
                one = one_round(api, env_id, page, sock, ws)
                if n >= warmup:
                    results.append(one)
                shown = ", ".join(f"{k} {v:.0f}" for k, v in one.items() if v is not None)
                print(f"round {n + 1}{' (warm-up)' if n < warmup else ''}: {shown}")
                page.wait_for_timeout(300)
        finally:
            listeners.close()
            browser.close()
    loads.append(" ".join(f"{v:.2f}" for v in os.getloadavg()))
    report(results, loads, listeners.errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2, help="clicks not counted")
    args = parser.parse_args()
    # Its own node name: its run root and cgroup parent are its own, so no other GenOS
    # server on this host (a test's, say) takes its environment for an orphan and kills it.
    os.environ["GENOS_NODE"] = "bench-sound-browser"
    # SIGTERM unwinds like Ctrl-C, so every finally below tears down what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    top = Path(tempfile.mkdtemp(prefix="genos-bench-sound-browser-", dir="/var/tmp"))
    data = top / "data"
    process: subprocess.Popen[bytes] | None = None
    try:
        process, url = start_server(data, top / "serve.log")
        token = (data / "api" / "admin.token").read_text().strip()
        measure(url, token, args.rounds, args.warmup)
    except BaseException:
        log = top / "serve.log"
        if log.is_file():
            print("".join(log.read_text(errors="replace").splitlines(True)[-20:]), file=sys.stderr)
        raise
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(top, ignore_errors=True)
        run_root = default_run_root()  # the node's, once no container is left in it
        if not any((run_root / "runtime").glob("*/*")):
            shutil.rmtree(run_root, ignore_errors=True)
        cgroups.remove_parent()  # the node's cgroup parent, where empty


if __name__ == "__main__":
    main()
