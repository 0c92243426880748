"""A real desktop in Debian's chromium: the shell's panel is on screen and the remote screen
follows the browser window (noVNC resizeSession -> the gateway -> Xvnc's RandR)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from genos.runtime.images.shell import WALLPAPER_COLOUR
from tests.web.conftest import DESKTOP, Server, User, shot
from tests.web.test_browser import CANVAS_PIXELS, sign_in, until

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.root, pytest.mark.runc]

SPEC = {"name": "shell-web", "display": {"max_resolution": {"width": 1600, "height": 1000}}}
# The colours along one row of noVNC's canvas, y counted from the bottom.
ROW_COLOURS = """(fromBottom) => {
  const c = document.querySelector('[data-testid=desktop] canvas');
  const d = c.getContext('2d').getImageData(0, c.height - fromBottom, c.width, 1).data;
  const seen = new Set();
  for (let i = 0; i < d.length; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  return [...seen];
}"""
SCREEN_BOX = """() => {
  const el = document.querySelector('[data-testid=desktop] .screen-host');
  return [el.clientWidth, el.clientHeight];
}"""


def launch(server: Server, user: User) -> str:
    """Create the plain desktop of SPEC through the API."""
    with server.client(user.token) as api:
        answer = api.post("/v1/environments", json={"spec": SPEC})
        assert answer.status_code == 201, answer.text
        env_id: str = answer.json()["id"]
        return env_id


def canvas_size(page: Any) -> tuple[int, int]:
    pixels = page.evaluate(CANVAS_PIXELS)
    return pixels["width"], pixels["height"]


def test_panel_shows_and_the_screen_follows_the_window(
    oci_server: Server, user_oci: User, open_page: Any
) -> None:
    """The panel is drawn at the bottom; resizing the window resizes the remote screen to fit,
    and a window larger than display.max_resolution leaves the screen at its last size."""
    env_id = launch(oci_server, user_oci)
    page = open_page(**DESKTOP)
    sign_in(page, oci_server, user_oci)
    page.goto(f"{oci_server.url}/#/env/{env_id}")
    expect(page.get_by_test_id("env-state")).to_have_text("running", timeout=300_000)
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
    wallpaper = int(WALLPAPER_COLOUR.lstrip("#"), 16)
    until(lambda: wallpaper in page.evaluate(ROW_COLOURS, 200), timeout=60, what="the wallpaper")
    first = until(
        lambda: (s := canvas_size(page)) == tuple(page.evaluate(SCREEN_BOX)) and s,
        timeout=30,
        what="the screen to fit the page",
    )
    panel = until(
        lambda: wallpaper not in (row := page.evaluate(ROW_COLOURS, 3)) and row,
        timeout=60,
        what="the panel",
    )
    assert 0x101820 in panel
    shot(page, "shell-desktop")

    page.set_viewport_size({"width": 900, "height": 700})
    second = until(
        lambda: (s := canvas_size(page)) == tuple(page.evaluate(SCREEN_BOX)) and s,
        timeout=30,
        what="the screen to follow the smaller window",
    )
    assert second != first
    assert second[0] <= 900
    shot(page, "shell-desktop-resized")

    page.set_viewport_size({"width": 1900, "height": 1200})  # past max_resolution 1600x1000
    until(lambda: page.evaluate(SCREEN_BOX)[0] > 1600, what="the larger page")
    page.wait_for_timeout(1500)  # noVNC debounces resizes by 500 ms; give a refusal time to show
    assert canvas_size(page) == second


def open_env(server: Server, user: User, open_page: Any, spec: dict[str, Any]) -> tuple[Any, str]:
    """Create ``spec`` and open its desktop page, connected."""
    with server.client(user.token) as api:
        answer = api.post("/v1/environments", json={"spec": spec})
        assert answer.status_code == 201, answer.text
        env_id: str = answer.json()["id"]
    page = open_page(**DESKTOP)
    sign_in(page, server, user)
    page.goto(f"{server.url}/#/env/{env_id}")
    expect(page.get_by_test_id("env-state")).to_have_text("running", timeout=300_000)
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
    return page, env_id


def test_upload_and_download_within_the_policy(
    oci_server: Server, user_oci: User, open_page: Any, tmp_path: Path
) -> None:
    """With file_transfer both, a picked file lands in ~/Uploads and a file the user puts in
    ~/Downloads comes back through the picker, byte for byte."""
    spec = {
        "name": "files-web",
        "apps": [{"name": "Terminal", "packages": ["xterm"], "command": "xterm -maximized"}],
        "security": {"file_transfer": "both"},
    }
    page, env_id = open_env(oci_server, user_oci, open_page, spec)
    until(lambda: page.evaluate(CANVAS_PIXELS)["drawn"] > 1000, timeout=120, what="the xterm")
    source = tmp_path / "hello report.txt"
    source.write_bytes(b"GenOS file transfer\n")
    page.get_by_test_id("action-files").click()
    page.get_by_test_id("upload-input").set_input_files(str(source))
    row = page.locator('[data-testid=upload-list] li[data-name="hello report.txt"]')
    expect(row).to_have_attribute("data-state", "stored")
    pattern = f"envs/{env_id}/*/home/user/Uploads/hello report.txt"
    landed = until(lambda: next(oci_server.data_dir.glob(pattern), None), what="the upload")
    assert landed.read_bytes() == b"GenOS file transfer\n"

    canvas = page.get_by_test_id("desktop").locator("canvas")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.4})
    page.keyboard.type("mkdir -p ~/Downloads && cp ~/Uploads/hello* ~/Downloads/back.txt")
    page.keyboard.press("Enter")
    item = page.locator('[data-testid=download-item][data-name="back.txt"]')

    def listed() -> bool:
        page.get_by_test_id("downloads-refresh").click()
        return item.count() == 1

    until(listed, timeout=30, what="back.txt in the picker")
    with page.expect_download() as info:
        item.click()
    saved = tmp_path / "back.txt"
    info.value.save_as(saved)
    assert info.value.suggested_filename == "back.txt"
    assert saved.read_bytes() == b"GenOS file transfer\n"


def test_transfers_against_the_policy_are_refused(
    oci_server: Server, user_oci: User, open_page: Any, tmp_path: Path
) -> None:
    """With file_transfer none, the picker says downloads are refused and an upload fails."""
    page, env_id = open_env(
        oci_server, user_oci, open_page, {"name": "nofiles", "security": {"file_transfer": "none"}}
    )
    page.get_by_test_id("action-files").click()
    expect(page.get_by_test_id("downloads-refused")).to_contain_text("file_transfer is 'none'")
    source = tmp_path / "x.txt"
    source.write_bytes(b"x")
    page.get_by_test_id("upload-input").set_input_files(str(source))
    row = page.locator('[data-testid=upload-list] li[data-name="x.txt"]')
    expect(row).to_have_attribute("data-state", "refused")
    assert list(oci_server.data_dir.glob(f"envs/{env_id}/*/home/user/Uploads")) == []


# A square wave of about 900 Hz (u8 samples at 8 kHz) into the environment's sound server.
TONE = (
    "yes $(printf '\\100\\100\\100\\100\\300\\300\\300\\300')"
    " | pacat --raw --format=u8 --rate=8000 --channels=1 &"
)
LEVEL = "() => window.genosSound ? window.genosSound.level() : -1"


def test_a_tone_in_the_environment_plays_in_the_page_and_mutes(
    oci_server: Server, user_oci: User, open_page: Any
) -> None:
    """Silence until a tone plays in the environment; then the page's audio graph carries
    non-silent Opus-decoded sound; the Sound button mutes the output."""
    spec = {
        "name": "sound-web",
        "apps": [{"name": "Terminal", "packages": ["xterm"], "command": "xterm -maximized"}],
    }
    page, _env_id = open_env(oci_server, user_oci, open_page, spec)
    until(lambda: page.evaluate(CANVAS_PIXELS)["drawn"] > 1000, timeout=120, what="the xterm")
    canvas = page.get_by_test_id("desktop").locator("canvas")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.4})  # a gesture too
    until(lambda: page.evaluate("() => window.genosSound?.ctx?.state") == "running", what="audio")
    quiet = max(page.evaluate(LEVEL) for _ in range(5))
    assert 0 <= quiet < 0.001
    page.keyboard.type(TONE)
    page.keyboard.press("Enter")
    loud = until(lambda: (v := page.evaluate(LEVEL)) > 0.02 and v, timeout=30, what="the tone")
    until(lambda: page.evaluate("() => window.genosSound.packets") > 25, what="half a second")
    assert page.evaluate(LEVEL) > 0.02
    shot(page, "sound-playing")
    page.get_by_test_id("action-sound").click()
    expect(page.get_by_test_id("action-sound")).to_have_text("Sound: off")
    assert page.evaluate("() => window.genosSound.gain.gain.value") == 0
    assert loud > quiet


# Record the desktop's default source for two seconds once samples flow (a new recording
# stream takes a second or two to start): samples, RMS, sign changes.
HEAR = (
    "export XDG_RUNTIME_DIR=/tmp/runtime-1000; rm -f /tmp/heard.raw;"
    " parec --raw --format=s16le --rate=16000 --channels=1 --latency-msec=20 >>/tmp/heard.raw &"
    " n=0; until [ -s /tmp/heard.raw ] || [ $n -ge 200 ]; do n=$((n+1)); sleep 0.05; done;"
    " : >/tmp/heard.raw; sleep 2; kill $!; wait;"
    " od -An -v -td2 -w2 /tmp/heard.raw |"
    " awk '{n++; s+=$1*$1; if (($1>0 && p<0) || ($1<0 && p>0)) z++; if ($1) p=$1}"
    ' END {printf "%d %d %d\\n", n, (n ? sqrt(s/n) : 0), z}\''
)


def hear(server: Server, user: User, env_id: str) -> tuple[int, int, int]:
    """What an app recording the desktop's default source gets in two seconds."""
    with server.client(user.token) as api:
        answer = api.post(f"/v1/environments/{env_id}/computer/exec",
                          json={"argv": ["sh", "-c", HEAR], "timeout": 20})  # fmt: skip
        assert answer.status_code == 200, answer.text
        found = answer.json()
    assert found["exit_code"] == 0, found
    samples, rms, crossings = (int(v) for v in found["stdout"].split())
    return samples, rms, crossings


def test_the_microphone_reaches_the_desktop_only_when_turned_on(
    oci_server: Server, user_oci: User, open_page: Any
) -> None:
    """With security.microphone the overlay has a Mic button, off at first (the desktop hears
    silence); turned on, the browser's microphone (a 440 Hz tone) is what the desktop's
    default source records; turned off, silence again. Without it there is no button."""
    spec = {"name": "mic-web", "security": {"microphone": True}}
    page, env_id = open_env(oci_server, user_oci, open_page, spec)
    mic = page.get_by_test_id("action-mic")
    expect(mic).to_have_text("Mic: off")
    assert hear(oci_server, user_oci, env_id)[1] == 0
    mic.click()
    expect(mic).to_have_text("Mic: on")
    until(lambda: page.evaluate("() => window.genosMic.sent") > 16000, what="sound sent")
    samples, rms, crossings = hear(oci_server, user_oci, env_id)
    assert samples >= 16000
    assert rms > 2000  # the tone, through the browser's processing
    assert 1200 < crossings < 2400  # about 880 sign changes a second: 440 Hz, not noise
    mic.click()
    expect(mic).to_have_text("Mic: off")
    assert hear(oci_server, user_oci, env_id)[1] == 0
    plain, _ = open_env(oci_server, user_oci, open_page, {"name": "no-mic-web"})
    expect(plain.get_by_test_id("action-sound")).to_be_visible()
    expect(plain.get_by_test_id("action-mic")).to_have_count(0)
