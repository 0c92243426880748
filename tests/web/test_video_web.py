"""Video mode and recording in Debian's chromium against real runc desktops: the Picture
setting shows the screen as WebCodecs-decoded H.264 over noVNC's (paused) canvas while input
still goes by RFB, Auto switches to video while the screen moves and back when it stops, and
the Record button saves an MP4 of the screen and its sound."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from genos.runtime.images.shell import WALLPAPER_COLOUR
from tests.web.conftest import DESKTOP, Server, new_user, shot
from tests.web.test_browser import sign_in, until

pytestmark = [pytest.mark.browser, pytest.mark.server]

# A small xterm at the top left: the wallpaper shows around it.
SPEC = {
    "name": "video-web",
    "apps": [{"name": "Terminal", "packages": ["xterm"], "command": "xterm -geometry 80x24+30+30"}],
    "security": {"recording": True},
}
VIDEO = "[data-testid=video-screen]"
TILES = "[data-testid=desktop] .screen-host canvas"
PIXEL = """([selector, x, y]) => {
  const d = document.querySelector(selector).getContext('2d').getImageData(x, y, 1, 1).data;
  return [d[0], d[1], d[2]];
}"""
# The share of a canvas' pixels (sampled) that are not black.
NON_BLACK = """(selector) => {
  const c = document.querySelector(selector);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0, n = 0;
  for (let i = 0; i < d.length; i += 4 * 97) { n++; if (d[i] + d[i + 1] + d[i + 2] > 30) lit++; }
  return lit / n;
}"""
BOX = """(selector) => {
  const r = document.querySelector(selector).getBoundingClientRect();
  return [r.left, r.top, r.width, r.height].map(Math.round);
}"""
VIDEO_STATE = """() => ({mode: window.genosVideo.mode, setting: window.genosVideo.setting,
  framesDrawn: window.genosVideo.framesDrawn, levels: window.genosVideo.levels,
  rfbUpdates: window.genosVideo.rfbUpdates,
  switches: window.genosVideo.switches.map((s) => s.mode)})"""
# A maximized xterm filled with fresh random hex ten times a second until /tmp/stop exists.
ANIMATE = (
    "rm -f /tmp/stop; DISPLAY=:0 xterm -maximized -e sh -c"
    " 'until [ -e /tmp/stop ]; do od -An -x -w80 -N 4000 /dev/urandom; sleep 0.1; done'"
    " >/dev/null 2>&1 &"
)

# End the red xterm of the first test (the image may have no pkill).
KILL_RED = (
    "for p in /proc/[0-9]*; do"
    " tr '\\0' ' ' <$p/cmdline 2>/dev/null | grep -q '^xterm -bg red' && kill ${p#/proc/};"
    " done; true"
)


def rgb(colour: str) -> tuple[int, int, int]:
    value = int(colour.lstrip("#"), 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF


def near(seen: list[int], want: tuple[int, int, int], tolerance: int = 14) -> bool:
    """Within ``tolerance`` per channel (H.264 is lossy, and 4:2:0)."""
    return all(abs(a - b) <= tolerance for a, b in zip(seen, want, strict=True))


def state(page: Any) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate(VIDEO_STATE)
    return found


def run_in(server: Server, token: str, env_id: str, script: str) -> None:
    """Run ``sh -c script`` in the environment as its user (the API's exec route)."""
    with server.client(token) as api:
        answer = api.post(f"/v1/environments/{env_id}/computer/exec",
                          json={"argv": ["sh", "-c", script], "timeout": 20})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["exit_code"] == 0, answer.json()


@pytest.fixture(scope="module")
def owner(oci_server: Server) -> Any:
    return new_user(oci_server)


def launch(server: Server, token: str, spec: dict[str, Any]) -> str:
    with server.client(token) as api:
        answer = api.post("/v1/environments", json={"spec": spec})
        assert answer.status_code == 201, answer.text
        env_id: str = answer.json()["id"]
        return env_id


@pytest.fixture(scope="module")
def video_env(oci_server: Server, owner: Any) -> str:
    """One desktop of SPEC (xterm, recording allowed) for the module's tests."""
    return launch(oci_server, owner.token, SPEC)


def open_desktop(server: Server, user: Any, open_page: Any, env_id: str) -> Any:
    """A signed-in page on ``env_id``'s desktop, connected, the xterm and wallpaper drawn."""
    page = open_page(**DESKTOP)
    sign_in(page, server, user)
    page.goto(f"{server.url}/#/env/{env_id}")
    expect(page.get_by_test_id("env-state")).to_have_text("running", timeout=300_000)
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
    wallpaper = rgb(WALLPAPER_COLOUR)
    until(lambda: near(tiles_pixel(page, -40, 60), wallpaper, 8), timeout=120, what="wallpaper")
    return page


def tiles_pixel(page: Any, x: int, y: int) -> list[int]:
    """A pixel of noVNC's canvas (negative x: from the right)."""
    width = page.evaluate(f"() => document.querySelector('{TILES}').width")
    found: list[int] = page.evaluate(PIXEL, [TILES, x % width, y])
    return found


@pytest.mark.root
@pytest.mark.runc
def test_video_shows_the_screen_input_goes_by_rfb_and_tiles_come_back(
    oci_server: Server, owner: Any, video_env: str, open_page: Any
) -> None:
    """Picture: Video draws decoded frames of the screen over noVNC's canvas (same box), noVNC
    asks for no updates meanwhile, a command typed through RFB shows in the video only, and
    Picture: Tiles shows noVNC's canvas again with the whole screen up to date."""
    page = open_desktop(oci_server, owner, open_page, video_env)
    width = page.evaluate(f"() => document.querySelector('{TILES}').width")
    probe = (width - 40, 60)  # wallpaper, right of the xterm
    assert state(page)["mode"] == "rfb"
    expect(page.get_by_test_id("picture-stats")).to_have_text("Auto: tiles")

    page.get_by_test_id("picture-setting").select_option("video")
    until(lambda: state(page)["mode"] == "video", timeout=30, what="the video mode")
    first = state(page)["framesDrawn"]
    until(lambda: state(page)["framesDrawn"] >= first + 20, timeout=30, what="20 more frames")
    expect(page.locator(VIDEO)).to_be_visible()
    video_box, tiles_box = page.evaluate(BOX, VIDEO), page.evaluate(BOX, TILES)
    assert all(abs(a - b) <= 1 for a, b in zip(video_box, tiles_box, strict=True))
    assert opacity(page) == "0"
    assert page.evaluate(NON_BLACK, VIDEO) > 0.9  # the wallpaper is dark blue, not black
    assert near(page.evaluate(PIXEL, [VIDEO, *probe]), rgb(WALLPAPER_COLOUR))
    levels = until(lambda: state(page)["levels"], what="the levels message")
    stats = page.get_by_test_id("picture-stats")
    expect(stats).to_have_attribute("data-mode", "video")
    expect(stats).to_contain_text(f"{levels['fps']} fps")
    shot(page, "video-mode")

    # Type into the xterm (the click lands on noVNC's canvas under the video): a red window.
    updates = state(page)["rfbUpdates"]
    page.mouse.click(*centre_of_xterm(page))
    page.keyboard.type("xterm -bg red -geometry 40x10+600+300 &")
    page.keyboard.press("Enter")
    red = (600 + 100, 300 + 60)
    until(lambda: near(page.evaluate(PIXEL, [VIDEO, *red]), (255, 0, 0), 40), timeout=30,
          what="the red window in the video")  # fmt: skip
    shot(page, "video-mode-typed")
    assert not near(tiles_pixel(page, *red), (255, 0, 0), 40)  # noVNC asked for nothing
    assert state(page)["rfbUpdates"] - updates <= 2

    page.get_by_test_id("picture-setting").select_option("rfb")
    until(lambda: state(page)["mode"] == "rfb", what="the tiles mode")
    expect(page.locator(VIDEO)).to_be_hidden()
    until(lambda: near(tiles_pixel(page, *red), (255, 0, 0), 40), what="the red window in tiles")
    assert opacity(page) == "1"
    expect(stats).to_have_text("tiles")
    assert state(page)["switches"] == ["video", "rfb"]
    run_in(oci_server, owner.token, video_env, KILL_RED)


def opacity(page: Any) -> str:
    """noVNC's canvas' computed opacity."""
    found: str = page.evaluate(f"() => getComputedStyle(document.querySelector('{TILES}')).opacity")
    return found


def centre_of_xterm(page: Any) -> tuple[float, float]:
    """Page coordinates of a point inside the xterm at +30+30."""
    box = page.locator(TILES).bounding_box()
    scale = box["width"] / page.evaluate(f"() => document.querySelector('{TILES}').width")
    return box["x"] + 200 * scale, box["y"] + 120 * scale


@pytest.mark.root
@pytest.mark.runc
def test_auto_switches_to_video_while_the_screen_moves_and_back_when_still(
    oci_server: Server, owner: Any, video_env: str, open_page: Any
) -> None:
    """On Auto a still desktop stays on tiles; a full-screen animation switches it to video,
    once; when the animation ends it goes back to tiles, once."""
    page = open_desktop(oci_server, owner, open_page, video_env)
    assert page.get_by_test_id("picture-setting").input_value() == "auto"
    # Auto keeps 3 s of samples (4 a second): a full window of a still screen, longer than
    # its busy period, decides nothing.
    until(lambda: page.evaluate("() => window.genosVideo.samples.length") >= 12, what="samples")
    assert state(page)["switches"] == []
    assert state(page)["mode"] == "rfb"
    run_in(oci_server, owner.token, video_env, ANIMATE)
    try:
        until(lambda: state(page)["mode"] == "video", timeout=40, what="Auto to switch to video")
        drawn = state(page)["framesDrawn"]
        until(lambda: state(page)["framesDrawn"] > drawn + 20, timeout=30, what="video frames")
        shot(page, "auto-video")
        assert state(page)["switches"] == ["video"]
    finally:
        run_in(oci_server, owner.token, video_env, "touch /tmp/stop")
    until(lambda: state(page)["mode"] == "rfb", timeout=40, what="Auto to switch back to tiles")
    expect(page.locator(VIDEO)).to_be_hidden()
    assert state(page)["switches"] == ["video", "rfb"]
    expect(page.get_by_test_id("picture-stats")).to_have_text("Auto: tiles")


@pytest.mark.root
@pytest.mark.runc
def test_record_saves_an_mp4_only_where_the_spec_allows(
    oci_server: Server, owner: Any, video_env: str, open_page: Any, tmp_path: Path
) -> None:
    """With security.recording the Record button records 10 s and saves an MP4 named by the
    server with an H.264 video stream and an Opus audio stream; without it there is no
    button."""
    page = open_desktop(oci_server, owner, open_page, video_env)
    page.get_by_test_id("action-record").click()
    with page.expect_download(timeout=90_000) as info:
        page.get_by_test_id("record-10").click()
        expect(page.get_by_test_id("record-status")).to_contain_text("s of 10 s")
        expect(page.get_by_test_id("record-progress")).to_be_visible()
        expect(page.get_by_test_id("record-10")).to_be_disabled()
    saved = tmp_path / "out.mp4"
    info.value.save_as(saved)
    assert re.fullmatch(rf"genos-{video_env}-\d{{8}}T\d{{6}}\.mp4", info.value.suggested_filename)
    expect(page.get_by_test_id("record-status")).to_have_text(
        f"Saved {info.value.suggested_filename}"
    )
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name:format=duration",
         "-of", "json", str(saved)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = json.loads(probe.stdout)
    streams = sorted((s["codec_type"], s["codec_name"]) for s in found["streams"])
    assert streams == [("audio", "opus"), ("video", "h264")]
    assert 8.0 <= float(found["format"]["duration"]) <= 12.0

    plain = launch(oci_server, owner.token, {"name": "no-record-web"})
    other = open_desktop(oci_server, owner, open_page, plain)
    expect(other.get_by_test_id("picture-setting")).to_be_visible()
    expect(other.get_by_test_id("action-record")).to_have_count(0)


def test_without_webcodecs_the_setting_says_so_and_stays_on_tiles(
    server: Server, open_page: Any
) -> None:
    """A browser without VideoDecoder gets Tiles only: the other choices are disabled, a note
    says why, and the desktop stays on RFB."""
    user = new_user(server)
    with server.client(user.token) as api:
        answer = api.post("/v1/environments", json={"spec": {"name": "no-codecs"}})
        assert answer.status_code == 201, answer.text
        env_id = answer.json()["id"]
    page = open_page(**DESKTOP)
    page.add_init_script("delete window.VideoDecoder")
    sign_in(page, server, user)
    page.goto(f"{server.url}/#/env/{env_id}")
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
    note = page.get_by_test_id("picture-note")
    expect(note).to_have_text("Tiles only: this browser has no WebCodecs video decoder.")
    setting = page.get_by_test_id("picture-setting")
    assert setting.input_value() == "rfb"
    disabled = setting.locator("option").evaluate_all("(o) => o.map((x) => [x.value, x.disabled])")
    assert disabled == [["auto", True], ["rfb", False], ["video", True]]
    assert state(page)["mode"] == "rfb"
    expect(page.locator(VIDEO)).to_be_hidden()
