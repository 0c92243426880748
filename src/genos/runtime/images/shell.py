"""The desktop shell around the apps: panel, menus, wallpaper (openbox sessions).

An openbox session gets a tint2 panel at the bottom (a GenOS menu button,
launchers for a terminal and the spec's apps, the task list, a clock), a
wallpaper that says GenOS (hsetroot), and openbox's own root menu (right or
left click on the desktop, Super+Space, or the panel's button) listing the
same apps. Closing the last window leaves all of that in place.

The layer holds only static files; ``genos-shell start``, run by the
session, writes the launchers for this environment's apps from the
variables :func:`shell_env` gives. A launcher runs ``genos-shell launch N``,
which runs the Nth line of ``GENOS_APPS``, so no app command is ever quoted
into a ``.desktop`` file or menu XML.
"""

from __future__ import annotations

import html

from genos.runtime.images.steps import FileSpec, Step
from genos.spec import EnvironmentSpec, WindowManager

SHELL_PATH = "/usr/local/bin/genos-shell"
SHELL_DIR = "/etc/genos"
WALLPAPER_PATH = f"{SHELL_DIR}/wallpaper.xpm"
WALLPAPER_COLOUR = "#1d2b3a"
LOGO_COLOUR = "#e8eef5"
# tint2 for the panel, hsetroot for the wallpaper, xdotool for the panel's
# menu button (it presses openbox's Super+Space); all small, no daemon.
SHELL_PACKAGES: dict[WindowManager, tuple[str, ...]] = {
    WindowManager.OPENBOX: ("tint2", "hsetroot", "xdotool"),
}

SHELL_SCRIPT = r"""#!/bin/sh
# genos-shell: the panel, wallpaper and menus of a GenOS openbox session.
#   genos-shell start     wallpaper, this environment's launchers, the panel
#   genos-shell menu      openbox's root menu (a pipe menu)
#   genos-shell launch N  run the Nth app command of GENOS_APPS
# Reads GENOS_APPS (one command per line) and GENOS_APP_NAMES (the matching
# names, XML-escaped, one per line).
set -u
rt=${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}/genos-shell

nth() { printf '%s\n' "$1" | sed -n "$2p"; }
unescape() { sed 's/&lt;/</g; s/&gt;/>/g; s/&quot;/"/g; s/&#x27;/'"'"'/g; s/&amp;/\&/g'; }
count() { [ -n "$1" ] && printf '%s\n' "$1" | wc -l || echo 0; }

desktop_file() {  # path name exec icon
    cat >"$1" <<EOF
[Desktop Entry]
Type=Application
Name=$2
Exec=$3
Icon=$4
EOF
}

write_launchers() {
    rm -rf "$rt/apps"
    mkdir -p "$rt/apps"
    desktop_file "$rt/apps/00-terminal.desktop" Terminal xterm utilities-terminal
    n=$(count "${GENOS_APPS:-}")
    i=1
    while [ "$i" -le "$n" ]; do
        name=$(nth "${GENOS_APP_NAMES:-}" "$i" | unescape)
        desktop_file "$rt/apps/$(printf %02d "$i")-app.desktop" "${name:-App $i}" \
            "genos-shell launch $i" application-x-executable
        i=$((i + 1))
    done
}

start() {
    hsetroot -solid '@WALLPAPER_COLOUR@' -center @WALLPAPER_PATH@ >/dev/null 2>&1
    write_launchers
    { cat /etc/genos/tint2rc; echo "launcher_apps_dir = $rt/apps"; } >"$rt/tint2rc"
    # The panel comes back if it dies; a crash loop backs off.
    while :; do
        tint2 -c "$rt/tint2rc" >/dev/null 2>&1
        sleep 2
    done
}

menu() {
    echo '<openbox_pipe_menu>'
    echo '<item label="Terminal"><action name="Execute"><command>xterm</command></action></item>'
    n=$(count "${GENOS_APPS:-}")
    [ "$n" -gt 0 ] && echo '<separator label="Apps"/>'
    i=1
    while [ "$i" -le "$n" ]; do
        name=$(nth "${GENOS_APP_NAMES:-}" "$i")
        echo "<item label=\"${name:-App $i}\"><action name=\"Execute\">"
        echo "<command>genos-shell launch $i</command></action></item>"
        i=$((i + 1))
    done
    echo '<separator/>'
    echo '<menu id="client-list-combined-menu"/>'
    echo '<item label="Reconfigure"><action name="Reconfigure"/></item>'
    echo '</openbox_pipe_menu>'
}

case ${1:-} in
    start) start ;;
    menu) menu ;;
    launch)
        cmd=$(nth "${GENOS_APPS:-}" "${2:-0}")
        [ -n "$cmd" ] && exec sh -c "$cmd"
        exit 1 ;;
    *) echo "usage: genos-shell start|menu|launch N" >&2; exit 2 ;;
esac
"""

OPENBOX_MENU = f"""\
<?xml version="1.0" encoding="UTF-8"?>
<openbox_menu xmlns="http://openbox.org/3.4/menu">
  <menu id="root-menu" label="GenOS" execute="{SHELL_PATH} menu"/>
</openbox_menu>
"""

TINT2RC = """\
# GenOS panel (tint2): menu button, launchers, tasks, clock. genos-shell
# appends launcher_apps_dir for this environment's apps. Backgrounds come
# first: tint2 resolves a background id when it reads it.
rounded = 0
border_width = 0
background_color = #101820 100
border_color = #101820 0

rounded = 4
border_width = 0
background_color = #3a5068 100
border_color = #3a5068 0

panel_items = PLTSC
panel_position = bottom center horizontal
panel_size = 100% 34
panel_layer = top
panel_dock = 0
strut_policy = follow_size
panel_background_id = 1
wm_menu = 1
font_shadow = 0

button = new
button_text = GenOS
button_tooltip = Apps and windows (or right-click the desktop)
button_font = DejaVu Sans Bold 10
button_font_color = #e8eef5 100
button_padding = 10 4
button_background_id = 2
button_lclick_command = xdotool key super+space

taskbar_mode = single_desktop
taskbar_padding = 4 2 4
task_text = 1
task_maximum_size = 200 30
task_padding = 6 2 6
task_font = DejaVu Sans 9
task_font_color = #e8eef5 90
task_active_background_id = 2
task_background_id = 0

systray_padding = 4 2 4
systray_icon_size = 20

time1_format = %H:%M
time2_format = %a %d %b
time1_font = DejaVu Sans Bold 10
time2_font = DejaVu Sans 7
clock_font_color = #e8eef5 100
clock_padding = 8 0
clock_tooltip = %A %d %B %Y

tooltip_font = DejaVu Sans 9
tooltip_font_color = #e8eef5 100
tooltip_background_id = 1

launcher_padding = 4 2 4
launcher_icon_size = 24
launcher_tooltip = 1
"""

# Debian's rc.xml with GenOS's menu file, one desktop, and the root menu on
# Super+Space and on a left click (phones have no right button); the build
# fails if Debian's file stops matching.
OPENBOX_RC = f"{SHELL_DIR}/openbox/rc.xml"
OPENBOX_RC_EDIT = (
    "sed -e 's|<file>/var/lib/openbox/debian-menu.xml</file>||'"
    f" -e 's|<file>menu.xml</file>|<file>{SHELL_DIR}/openbox/menu.xml</file>|'"
    " -e 's|<number>4</number>|<number>1</number>|'"
    ' -e \'s|^<keyboard>$|<keyboard><keybind key="W-space"><action name="ShowMenu">'
    "<menu>root-menu</menu></action></keybind>|'"
    ' -e \'s|<context name="Root">|<context name="Root"><mousebind button="Left"'
    ' action="Press"><action name="ShowMenu"><menu>root-menu</menu></action></mousebind>|\''
    f" /etc/xdg/openbox/rc.xml > {OPENBOX_RC}"
)
OPENBOX_RC_CHECK = (
    f"grep -q '{SHELL_DIR}/openbox/menu.xml' {OPENBOX_RC}"
    f' && grep -q \'W-space\' {OPENBOX_RC} && grep -q \'button="Left" action="Press"><action'
    f' name="ShowMenu"><menu>root-menu\' {OPENBOX_RC}'
)

# 5x7 glyphs of the wallpaper's word, '#' lit.
GLYPHS = {
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".###."),
    "e": (".....", ".....", ".###.", "#...#", "#####", "#....", ".###."),
    "n": (".....", ".....", "####.", "#...#", "#...#", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
}


def wallpaper_xpm(word: str = "GenOS", scale: int = 12, margin: int = 2) -> str:
    """An XPM of ``word`` in :data:`GLYPHS`, light on the wallpaper's colour.

    Args:
        word: letters of :data:`GLYPHS`.
        scale: screen pixels per glyph pixel.
        margin: glyph pixels of background around the word.

    Returns:
        The XPM file's text.
    """
    rows = []
    for y in range(7):
        cells = ".".join(GLYPHS[ch][y] for ch in word)
        rows.append("." * margin + cells + "." * margin)
    rows = ["." * len(rows[0])] * margin + rows + ["." * len(rows[0])] * margin
    scaled = ["".join(c * scale for c in row) for row in rows for _ in range(scale)]
    width, height = len(scaled[0]), len(scaled)
    body = ",\n".join(f'"{row}"' for row in scaled)
    return (
        "/* XPM */\nstatic char *genos[] = {\n"
        f'"{width} {height} 2 1",\n". c {WALLPAPER_COLOUR}",\n"# c {LOGO_COLOUR}",\n'
        f"{body}\n}};\n"
    )


def shell_step() -> Step:
    """The named, versioned step that installs the shell's files (openbox sessions)."""
    script = SHELL_SCRIPT.replace("@WALLPAPER_COLOUR@", WALLPAPER_COLOUR)
    script = script.replace("@WALLPAPER_PATH@", WALLPAPER_PATH)
    return Step(
        "genos-shell",
        1,
        files=(
            FileSpec(SHELL_PATH, script, 0o755),
            FileSpec(f"{SHELL_DIR}/openbox/menu.xml", OPENBOX_MENU),
            FileSpec(f"{SHELL_DIR}/tint2rc", TINT2RC),
            FileSpec(WALLPAPER_PATH, wallpaper_xpm()),
        ),
        run=(OPENBOX_RC_EDIT, OPENBOX_RC_CHECK),
    )


def shell_env(spec: EnvironmentSpec) -> dict[str, str]:
    """``GENOS_APP_NAMES``: the names of the apps ``GENOS_APPS`` starts, XML-escaped.

    Args:
        spec: the environment.

    Returns:
        Variable name -> value, added to the session's environment.
    """
    names = [" ".join(app.name.split()) for app in spec.apps if app.command]
    return {"GENOS_APP_NAMES": "\n".join(html.escape(name) for name in names)}
