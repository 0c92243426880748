"""The web client end to end: a real ``genos serve``, Debian's chromium, real clicks and taps."""

from __future__ import annotations

import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.web.conftest import DESKTOP, PHONE, Server, User, shot, totp_now

pytestmark = [pytest.mark.browser, pytest.mark.server]
expect.set_options(timeout=20_000)

TOR = "I need a Linux environment with Tor browser for secure browsing"

# Read noVNC's canvas (page.evaluate runs over CDP, so the page's CSP allows it).
CANVAS_PIXELS = """() => {
  const c = document.querySelector('[data-testid=desktop] canvas');
  if (!c || !c.width) return {width: 0, height: 0, drawn: 0, colours: 0};
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  let drawn = 0;
  const step = Math.max(4, Math.floor(d.length / 4 / 20000) * 4);
  for (let i = 0; i < d.length; i += step) {
    if (d[i + 3] === 255 && (d[i] || d[i + 1] || d[i + 2])) drawn++;
    seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  }
  return {width: c.width, height: c.height, drawn, colours: seen.size};
}"""

RECORD_POINTER = """() => {
  window.genosPointer = [];
  document.querySelector('[data-testid=desktop]')
    .addEventListener('genos:pointer', (e) => window.genosPointer.push(e.detail));
}"""

# Synthetic multi-finger touches (Playwright's touchscreen has one finger).
TOUCH = """([type, points, remaining]) => {
  const el = document.querySelector('[data-testid=desktop] canvas');
  const mk = ([id, x, y]) => new Touch({identifier: id, target: el, clientX: x, clientY: y});
  const changed = points.map(mk);
  const touches = (remaining ?? points).map(mk);
  el.dispatchEvent(new TouchEvent(type, {
    touches: type === 'touchend' ? (remaining ?? []).map(mk) : touches,
    targetTouches: type === 'touchend' ? (remaining ?? []).map(mk) : touches,
    changedTouches: changed, bubbles: true, cancelable: true, composed: true,
  }));
}"""


def until(check: Any, timeout: float = 20, what: str = "condition") -> Any:
    """Poll `check()` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(0.1)


def sign_in(page: Any, server: Server, user: User, *, tap: bool = False) -> None:
    page.goto(server.url + "/")
    page.get_by_test_id("login-username").fill(user.name)
    page.get_by_test_id("login-password").fill(user.password)
    press(page.get_by_test_id("login-submit"), tap)
    expect(page.get_by_test_id("prompt-input")).to_be_visible()


def press(locator: Any, tap: bool) -> None:
    if tap:
        locator.tap()
    else:
        locator.click()


def launch_via_api(server: Server, user: User) -> str:
    with server.client(user.token) as api:
        answer = api.post("/v1/environments", json={"prompt": TOR})
        assert answer.status_code == 201, answer.text
        env_id: str = answer.json()["id"]
        return env_id


def wait_desktop(page: Any) -> dict[str, int]:
    """Wait until noVNC is connected and has drawn the remote framebuffer."""
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
    pixels: dict[str, int] = until(
        lambda: (p := page.evaluate(CANVAS_PIXELS))["drawn"] > 0 and p, what="drawn pixels"
    )
    return pixels


def open_desktop(
    server: Server, user: User, open_page: Any, env_id: str, *, phone: bool = False
) -> Any:
    """A signed-in page (desktop or phone viewport) showing ``env_id``'s drawn desktop."""
    page = open_page(**(PHONE if phone else DESKTOP))
    sign_in(page, server, user, tap=phone)
    page.goto(f"{server.url}/#/env/{env_id}")
    wait_desktop(page)
    return page


def no_horizontal_scroll(page: Any) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide"


def test_sign_in_compose_clarify_launch_and_desktop(
    server: Server, user: User, open_page: Any
) -> None:
    """A user signs in, answers a clarification, reads the spec, launches and sees the desktop."""
    page = open_page(**DESKTOP)
    page.goto(server.url + "/")
    page.get_by_test_id("login-username").fill(user.name)
    page.get_by_test_id("login-password").fill("wrong password")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("error")).to_be_visible()
    expect(page.get_by_test_id("login-totp")).to_be_hidden()
    page.get_by_test_id("login-password").fill(user.password)
    page.get_by_test_id("login-submit").click()

    page.get_by_test_id("prompt-input").fill("I want a browser")
    page.get_by_test_id("compose-submit").click()
    options = page.get_by_test_id("clarify-option")
    expect(options.first).to_be_visible()
    assert "firefox" in options.all_text_contents()
    shot(page, "desktop-clarify")
    options.filter(has_text=re.compile(r"^firefox$")).click()

    summary = page.get_by_test_id("spec-summary")
    expect(page.get_by_test_id("launch")).to_be_visible()
    expect(page.get_by_test_id("spec-apps")).to_contain_text("Firefox")
    for row in ("network", "tier", "resources", "lifetime", "clipboard"):
        expect(page.get_by_test_id(f"spec-{row}")).not_to_be_empty()
    expect(summary.locator("details.why").first).to_be_attached()
    shot(page, "desktop-spec")
    page.get_by_test_id("launch").click()

    expect(page).to_have_url(re.compile(r"#/env/[0-9a-f]+$"))
    expect(page.get_by_test_id("env-state")).to_have_text("running")
    pixels = wait_desktop(page)
    assert (pixels["width"], pixels["height"]) == (1280, 800)
    expect(page.get_by_test_id("overlay-stats")).to_contain_text("ms")
    shot(page, "desktop-running")


def test_rejection_shows_reasons(server: Server, user: User, open_page: Any) -> None:
    """A prompt the composer refuses shows each reason and no Launch button."""
    page = open_page(**DESKTOP)
    sign_in(page, server, user)
    page.get_by_test_id("prompt-input").fill("VM with 4096 GB memory and gimp")
    page.get_by_test_id("compose-submit").click()
    expect(page.get_by_test_id("rejection").first).to_contain_text("memory")
    expect(page.get_by_test_id("launch")).to_have_count(0)


def test_totp_field_appears_when_required(server: Server, user: User, open_page: Any) -> None:
    """An account with TOTP gets the one-time-code field after the password and signs in."""
    with server.client(user.token) as api:
        secret = api.post("/v1/me/totp").json()["secret"]
        assert api.post("/v1/me/totp/confirm", json={"code": totp_now(secret)}).status_code == 204
    page = open_page(**DESKTOP)
    page.goto(server.url + "/")
    page.get_by_test_id("login-username").fill(user.name)
    page.get_by_test_id("login-password").fill(user.password)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-totp")).to_be_visible()
    # The confirm step used this period's code and a code is good once: take the next period's.
    page.get_by_test_id("login-totp").fill(totp_now(secret, time.time() + 30))
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("prompt-input")).to_be_visible()


def test_share_link_is_view_only(server: Server, user: User, open_page: Any) -> None:
    """Share hands out a #/view link that shows the desktop, view-only, without signing in."""
    env_id = launch_via_api(server, user)
    page = open_desktop(server, user, open_page, env_id)
    page.get_by_test_id("action-share").click()
    link = page.get_by_test_id("share-url")
    expect(link).to_have_value(re.compile(rf"#/view/{env_id}/.+"))
    shot(page, "desktop-share")

    viewer = open_page(**DESKTOP)
    viewer.goto(link.input_value())
    wait_desktop(viewer)
    expect(viewer.get_by_test_id("env-state")).to_have_text("view only")
    expect(viewer.get_by_test_id("action-suspend")).to_have_count(0)
    expect(viewer.get_by_test_id("login-username")).to_have_count(0)
    shot(viewer, "desktop-viewer")


def test_suspend_resume_terminate(server: Server, user: User, open_page: Any) -> None:
    """Suspend drops the display, resume brings it back, terminate ends it and leaves the list."""
    env_id = launch_via_api(server, user)
    page = open_desktop(server, user, open_page, env_id)

    page.get_by_test_id("action-suspend").click()
    expect(page.get_by_test_id("env-state")).to_have_text("suspended")
    expect(page.get_by_test_id("veil")).to_be_visible()
    expect(page.get_by_test_id("action-resume")).to_be_enabled()
    shot(page, "desktop-suspended")

    page.get_by_test_id("action-resume").click()
    expect(page.get_by_test_id("env-state")).to_have_text("running")
    wait_desktop(page)

    page.get_by_test_id("action-terminate").click()
    page.get_by_test_id("action-terminate").click()  # the second click confirms
    expect(page).to_have_url(re.compile(r"#/envs$"))
    expect(page.locator(f"[data-testid=env-row][data-env-id='{env_id}']")).to_have_count(0)
    with server.client(user.token) as api:
        assert api.get(f"/v1/environments/{env_id}").json()["state"] == "terminated"


def test_environments_list_acts_on_rows(server: Server, user: User, open_page: Any) -> None:
    """The list shows each environment with its state; Suspend and Resume there change it."""
    env_id = launch_via_api(server, user)
    with server.client(user.token) as api:
        until(
            lambda: api.get(f"/v1/environments/{env_id}").json()["state"] == "running",
            what="running",
        )
    page = open_page(**DESKTOP)
    sign_in(page, server, user)
    page.get_by_test_id("nav-envs").click()
    row = page.locator(f"[data-testid=env-row][data-env-id='{env_id}']")
    expect(row.get_by_test_id("env-state")).to_have_text("running")
    row.get_by_test_id("env-action-suspend").click()
    expect(row.get_by_test_id("env-state")).to_have_text("suspended")
    row.get_by_test_id("env-action-resume").click()
    expect(row.get_by_test_id("env-state")).to_have_text("running")
    shot(page, "desktop-envs")
    row.get_by_test_id("env-action-open").click()
    expect(page).to_have_url(re.compile(rf"#/env/{env_id}$"))
    wait_desktop(page)


def test_phone_flow_with_taps(server: Server, user: User, open_page: Any) -> None:
    """On a 390x844 touch phone every page fits the width and the whole flow works with taps."""
    page = open_page(**PHONE)
    page.goto(server.url + "/")
    no_horizontal_scroll(page)
    page.get_by_test_id("login-username").fill(user.name)
    page.get_by_test_id("login-password").fill(user.password)
    shot(page, "phone-login")
    page.get_by_test_id("login-submit").tap()
    page.get_by_test_id("prompt-input").fill(TOR)
    page.get_by_test_id("compose-submit").tap()
    expect(page.get_by_test_id("launch")).to_be_visible()
    no_horizontal_scroll(page)
    shot(page, "phone-spec")
    page.get_by_test_id("launch").tap()
    wait_desktop(page)
    no_horizontal_scroll(page)
    expect(page.get_by_test_id("action-keyboard")).to_be_visible()
    shot(page, "phone-desktop")

    page.get_by_test_id("action-share").tap()
    expect(page.get_by_test_id("share-url")).to_have_value(re.compile(r"#/view/"))
    page.get_by_test_id("action-share").tap()  # closes the panel
    page.get_by_test_id("action-suspend").tap()
    expect(page.get_by_test_id("env-state")).to_have_text("suspended")
    page.get_by_test_id("action-resume").tap()
    wait_desktop(page)

    page.get_by_test_id("action-close").tap()
    expect(page.get_by_test_id("env-row").first).to_be_visible()
    no_horizontal_scroll(page)
    shot(page, "phone-envs")


def test_touch_gestures_send_pointer_events(server: Server, user: User, open_page: Any) -> None:
    """Tap, two-finger tap, long press, two-finger drag, pinch and trackpad become RFB input."""
    env_id = launch_via_api(server, user)
    page = open_desktop(server, user, open_page, env_id, phone=True)
    page.evaluate(RECORD_POINTER)
    box = page.get_by_test_id("desktop").locator("canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def taken() -> list[dict[str, int]]:
        events: list[dict[str, int]] = page.evaluate("() => window.genosPointer.splice(0)")
        return events

    # Tap = left click where the finger is (direct mode).
    page.touchscreen.tap(cx, cy)
    events = until(lambda: [e for e in taken() if e], what="tap events")
    assert [e["mask"] for e in events][-2:] == [1, 0]
    assert abs(events[-1]["x"] - 640) <= 4
    assert abs(events[-1]["y"] - 400) <= 4

    # Two-finger tap = right click.
    fingers = [[1, cx - 30, cy], [2, cx + 30, cy]]
    page.evaluate(TOUCH, ["touchstart", fingers, None])
    page.evaluate(TOUCH, ["touchend", fingers, []])
    assert [e["mask"] for e in taken()][-2:] == [4, 0]

    # Long press = right click.
    page.evaluate(TOUCH, ["touchstart", [[1, cx, cy]], None])
    time.sleep(0.8)
    page.evaluate(TOUCH, ["touchend", [[1, cx, cy]], []])
    assert 4 in [e["mask"] for e in taken()]

    # Two fingers moving down = wheel up (button 4, mask 8), as noVNC does.
    page.evaluate(TOUCH, ["touchstart", fingers, None])
    for dy in range(10, 110, 10):
        page.evaluate(TOUCH, ["touchmove", [[1, cx - 30, cy + dy], [2, cx + 30, cy + dy]], None])
    page.evaluate(TOUCH, ["touchend", fingers, []])
    assert [e["mask"] for e in taken()].count(8) >= 3

    # Pinch out = zoom the canvas, no pointer input.
    page.evaluate(TOUCH, ["touchstart", fingers, None])
    for spread in range(40, 160, 20):
        page.evaluate(TOUCH, ["touchmove", [[1, cx - spread, cy], [2, cx + spread, cy]], None])
    page.evaluate(TOUCH, ["touchend", fingers, []])
    transform = (
        page.get_by_test_id("desktop").locator("canvas").evaluate("(c) => c.style.transform")
    )
    assert "scale(" in transform
    assert [e["mask"] for e in taken() if e["mask"]] == []
    shot(page, "phone-zoomed")

    # Trackpad mode: a drag moves the remote pointer relative to where it was; a tap clicks there.
    page.get_by_test_id("action-mode").tap()
    expect(page.get_by_test_id("action-mode")).to_have_text("Touch: trackpad")
    page.evaluate(TOUCH, ["touchstart", [[1, cx, cy + 200]], None])
    for dx in range(10, 60, 10):
        page.evaluate(TOUCH, ["touchmove", [[1, cx + dx, cy + 200]], None])
    page.evaluate(TOUCH, ["touchend", [[1, cx + 50, cy + 200]], []])
    moves = taken()
    assert moves
    assert [e["mask"] for e in moves] == [0] * len(moves)
    assert moves[-1]["x"] > 640
    assert abs(moves[-1]["y"] - 400) <= 4
    page.touchscreen.tap(box["x"] + 10, box["y"] + 10)
    clicks = until(taken, what="trackpad click")
    assert [(e["x"], e["mask"]) for e in clicks][-2:] == [(moves[-1]["x"], 1), (moves[-1]["x"], 0)]
    page.get_by_test_id("action-mode").tap()  # back to direct for the next test


def test_on_screen_keyboard_sends_keysyms(server: Server, user: User, open_page: Any) -> None:
    """The keyboard's input turns typing, Backspace, Enter and a latched Ctrl into keysyms."""
    env_id = launch_via_api(server, user)
    page = open_desktop(server, user, open_page, env_id, phone=True)
    page.evaluate("""() => {
      window.genosKeys = [];
      document.addEventListener('genos:key', (e) => window.genosKeys.push(e.detail));
    }""")
    page.get_by_test_id("action-keyboard").tap()
    expect(page.get_by_test_id("kbd-input")).to_be_focused()
    expect(page.get_by_test_id("kbd-keys")).to_be_visible()
    page.keyboard.type("hé")
    page.keyboard.press("Backspace")
    page.keyboard.press("Enter")
    page.get_by_test_id("kbd-control").tap()
    page.keyboard.type("c")
    keys = until(
        lambda: (k := page.evaluate("() => window.genosKeys")) and len(k) >= 5 and k, what="5 keys"
    )
    assert [k["keysym"] for k in keys] == [0x68, 0xE9, 0xFF08, 0xFF0D, 0x63]
    assert keys[-1]["held"] == [0xFFE3]
    shot(page, "phone-keyboard")


@pytest.mark.root
@pytest.mark.runc
def test_real_desktop_types_into_xterm(oci_server: Server, user_oci: User, open_page: Any) -> None:
    """In a real environment, a click into the xterm and typed text run a command inside it."""
    page = open_page(**DESKTOP)
    sign_in(page, oci_server, user_oci)
    page.get_by_test_id("prompt-input").fill("Debian with xterm and no network")
    page.get_by_test_id("compose-submit").click()
    page.get_by_test_id("launch").click()
    expect(page.get_by_test_id("env-state")).to_have_text("running", timeout=300_000)
    expect(page.get_by_test_id("conn-state")).to_have_attribute("data-state", "connected")
    # The session starts openbox and xterm after Xvnc answers: wait for the window to show.
    until(
        lambda: page.evaluate(CANVAS_PIXELS)["drawn"] > 1000, timeout=120, what="the xterm window"
    )
    env_id = page.url.rsplit("/", 1)[-1]
    shot(page, "real-desktop")
    marker = f"genos-web-{secrets.token_hex(4)}"
    canvas = page.get_by_test_id("desktop").locator("canvas")
    box = canvas.bounding_box()
    # openbox centres the first window on the screen; click inside it.
    canvas.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    # /tmp is the guest's own tmpfs; the home directory is in the overlay's upper dir.
    page.keyboard.type(f"echo {marker} > ~/{marker}")
    page.keyboard.press("Enter")
    pattern = f"envs/{env_id}/*/home/user/{marker}"
    found = until(
        lambda: next(oci_server.data_dir.glob(pattern), None), timeout=30, what=f"~/{marker}"
    )
    assert found.read_text().strip() == marker
    shot(page, "real-desktop-typed")


def test_a_recorded_session_replays_in_the_browser(
    server: Server, user: User, open_page: Any
) -> None:
    """A session of a recorded environment appears under Recordings and plays back on the canvas."""
    spec = {"name": "recorded", "security": {"recording": True}}
    with server.client(user.token) as api:
        env_id = api.post("/v1/environments", json={"spec": spec, "wait": True}).json()["id"]
    page = open_desktop(server, user, open_page, env_id)
    page.goto(f"{server.url}/#/envs")  # leaving the desktop ends (and closes) the recording
    page.get_by_test_id("env-action-recordings").first.click()
    recording = page.get_by_test_id("recording")
    expect(recording).to_have_count(1)
    recording.click()
    pixels = wait_desktop(page)
    assert (pixels["width"], pixels["height"]) == (1280, 800)
    expect(page.get_by_test_id("env-state")).to_have_text("replay")
    shot(page, "replay")


def test_the_overlay_shows_who_is_in_control_gives_back_and_approves(
    server: Server, user: User, open_page: Any
) -> None:
    """The bar names the agent in control; a click takes it over (the agent gets 409), Give
    back returns it, and an agent's approval is answered with the Approve button."""
    env_id = launch_via_api(server, user)
    page = open_desktop(server, user, open_page, env_id)
    computer = f"/v1/environments/{env_id}/computer"
    control = page.get_by_test_id("control-state")
    with server.client(user.token) as api:
        assert api.post(f"{computer}/click", json={"x": 5, "y": 5}).status_code == 200
        expect(control).to_have_text(f"agent {user.name} in control")
        expect(page.get_by_test_id("action-give-back")).to_be_hidden()
        page.get_by_test_id("desktop").locator("canvas").click(position={"x": 40, "y": 40})
        expect(control).to_have_attribute("data-kind", "person")
        refused = api.post(f"{computer}/click", json={"x": 6, "y": 6})
        assert refused.status_code == 409
        assert refused.json()["error"]["holder"]["name"] == user.name
        page.get_by_test_id("action-give-back").click()
        expect(control).to_be_hidden()
        assert api.post(f"{computer}/click", json={"x": 6, "y": 6}).status_code == 200
        with ThreadPoolExecutor(1) as pool:
            asking = pool.submit(
                api.post, f"{computer}/approvals", json={"description": "rm -rf ~/tmp?"},
                timeout=60,
            )  # fmt: skip
            expect(page.get_by_test_id("approval")).to_contain_text("asks: rm -rf ~/tmp?")
            shot(page, "desktop-approval")
            page.get_by_test_id("approve").click()
            answer = asking.result(timeout=30).json()
        assert (answer["status"], answer["decided_by"]) == ("approved", user.name)
        expect(page.get_by_test_id("approval")).to_have_count(0)
