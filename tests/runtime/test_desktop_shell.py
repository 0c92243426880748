"""The desktop shell in a real environment (runc, Xvnc): panel, wallpaper, menus, Firefox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genos.runtime.images import ImageStore
from genos.runtime.images.firefox import START_PAGE_TITLE
from genos.runtime.images.shell import LOGO_COLOUR, WALLPAPER_COLOUR
from genos.spec import App, EnvironmentSpec
from tests.runtime.screens import screenshot
from tests.sandbox.probes import Env, running_env

pytestmark = [pytest.mark.root, pytest.mark.runc]

APPS_DIR = "/tmp/runtime-1000/genos-shell/apps"
NOTES = 'Notes & <"Tools">'


def rgb(colour: str) -> tuple[int, int, int]:
    """'#rrggbb' as a tuple."""
    value = int(colour.lstrip("#"), 16)
    return (value >> 16, (value >> 8) & 255, value & 255)


@pytest.fixture(scope="module")
def env(runner: asyncio.Runner, image_store: ImageStore, data_root: Path) -> Iterator[Env]:
    """A desktop with Firefox ESR and an xterm-based app whose name needs escaping."""
    spec = EnvironmentSpec(
        name="shell-test",
        apps=[
            App(name="Firefox", packages=["firefox-esr"], command="firefox-esr"),
            App(name=NOTES, packages=["xterm"], command="xterm -T notes-window"),
        ],
    )
    image_store.ensure(spec)
    with running_env(runner, image_store, spec, data_root) as running:
        yield running


def x(env: Env, command: str) -> str:
    """Run an X client in the env (as the session user) and return its output."""
    return env.sh(f"DISPLAY=:0 {command}").stdout


def poll(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    """Wait until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_panel_is_mapped(env: Env) -> None:
    """tint2 runs and maps its panel window once the session is up."""
    poll(lambda: x(env, "xdotool search --onlyvisible --class tint2").strip() != "", "the panel")


def test_launchers_name_the_terminal_and_the_specs_apps(env: Env) -> None:
    """genos-shell writes one launcher per app, names unescaped, commands never quoted in."""
    poll(lambda: "02-app.desktop" in env.sh(f"ls {APPS_DIR}").stdout, "the launchers")
    names = env.sh(f"cat {APPS_DIR}/*.desktop | grep ^Name=").stdout.splitlines()
    execs = env.sh(f"cat {APPS_DIR}/*.desktop | grep ^Exec=").stdout.splitlines()
    assert names == ["Name=Terminal", "Name=Firefox", f"Name={NOTES}"]
    assert execs == ["Exec=xterm", "Exec=genos-shell launch 1", "Exec=genos-shell launch 2"]


def test_root_menu_lists_terminal_and_apps_escaped(env: Env) -> None:
    """The pipe menu has Terminal then each app, its label XML-escaped."""
    pid = env.exec("pgrep", "-x", "openbox").stdout.split()[0]
    environ = env.exec("cat", f"/proc/{pid}/environ").stdout.split("\0")
    session = dict(item.split("=", 1) for item in environ if "=" in item)
    names = ("GENOS_APPS", "GENOS_APP_NAMES")
    menu = env.exec("env", *(f"{n}={session[n]}" for n in names), "genos-shell", "menu").stdout
    assert '<item label="Terminal">' in menu
    assert menu.index('<item label="Terminal">') < menu.index('<item label="Firefox">')
    assert '<item label="Notes &amp; &lt;&quot;Tools&quot;&gt;">' in menu
    assert "<command>genos-shell launch 2</command>" in menu


def test_firefox_starts_on_the_genos_start_page(env: Env) -> None:
    """Firefox ESR's first window shows the GenOS start page, no welcome or first-run tab."""
    poll(
        lambda: (
            START_PAGE_TITLE
            in x(env, "xdotool search --onlyvisible --class firefox getwindowname %@")
        ),
        "Firefox's window",
        timeout=150,
    )
    titles = x(env, "xdotool search --onlyvisible --class firefox getwindowname %@").splitlines()
    assert [t for t in titles if t.startswith(START_PAGE_TITLE)] == titles
    assert not any("Welcome" in t or "Privacy" in t for t in titles)


def test_closing_the_last_window_leaves_a_usable_desktop(env: Env) -> None:
    """With every app window gone the wallpaper and panel remain, and a right click on the
    desktop opens the menu whose first item starts a terminal."""
    poll(lambda: x(env, "xdotool search --onlyvisible --class xterm").strip() != "", "Notes")
    for window in x(env, "xdotool search --onlyvisible --class 'firefox|xterm'").split():
        x(env, f"xdotool windowkill {window}")
    poll(
        lambda: x(env, "xdotool search --onlyvisible --class 'firefox|xterm'").strip() == "",
        "the app windows to close",
    )
    display = env.driver.display(env.env_id)
    before = screenshot(display)
    width, height = before.size
    assert before.getpixel((2, 2)) == rgb(WALLPAPER_COLOUR)
    middle = {before.getpixel((px, height // 2)) for px in range(width // 4, 3 * width // 4)}
    assert rgb(LOGO_COLOUR) in middle  # the wallpaper's lettering
    panel = {before.getpixel((px, height - 3)) for px in range(width // 2, width // 2 + 50)}
    assert rgb(WALLPAPER_COLOUR) not in panel
    screenshot(display, [(300, 300, 4)])  # right button: openbox's root menu
    area = before.crop((300, 300, 360, 320)).tobytes()
    # openbox runs the pipe menu's script first, so the menu shows a moment later.
    poll(lambda: screenshot(display).crop((300, 300, 360, 320)).tobytes() != area, "the menu")
    screenshot(display, [(330, 309, 1)])  # its first item: Terminal
    poll(lambda: x(env, "xdotool search --onlyvisible --class xterm").strip() != "", "a terminal")
    assert x(env, "xdotool search --class tint2").strip() != ""
