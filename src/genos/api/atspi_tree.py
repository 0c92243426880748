"""Prints the accessibility tree (AT-SPI) of the desktop's focused window as JSON; run
*inside* an environment by ``python3 -c`` where the image has ``python3-gi``,
``gir1.2-atspi-2.0`` and ``at-spi2-core``.

The session's D-Bus address is taken from a process of the same user (the
command runs beside the session, not under it). Each node: ``role``,
``name``, ``x``, ``y``, ``width``, ``height`` (screen pixels), ``focused``,
``children``; at most :data:`MAX_NODES` nodes. Prints
``{"app": ..., "window": node or null}``; exit 3 when AT-SPI is not there.
"""

import json
import os
import sys
from pathlib import Path

MAX_NODES = 2000
MAX_DEPTH = 40


def find_bus() -> None:
    if os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return
    me = os.getuid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != me:
                continue
            pairs = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for pair in pairs:
            if pair.startswith(b"DBUS_SESSION_BUS_ADDRESS="):
                os.environ["DBUS_SESSION_BUS_ADDRESS"] = pair.split(b"=", 1)[1].decode()
                return


def main() -> None:
    find_bus()
    os.environ.setdefault("DISPLAY", ":0")
    try:
        import gi  # type: ignore[import-not-found]  # noqa: PLC0415 - inside the environment

        gi.require_version("Atspi", "2.0")
        from gi.repository import Atspi  # type: ignore[import-not-found]  # noqa: PLC0415
    except (ImportError, ValueError):
        sys.exit(3)
    budget = [MAX_NODES]

    def node(acc: object, depth: int) -> dict[str, object]:
        budget[0] -= 1
        ext = acc.get_extents(Atspi.CoordType.SCREEN)  # type: ignore[attr-defined]
        states = acc.get_state_set()  # type: ignore[attr-defined]
        children: list[dict[str, object]] = []
        if depth < MAX_DEPTH:
            for i in range(acc.get_child_count()):  # type: ignore[attr-defined]
                child = acc.get_child_at_index(i)  # type: ignore[attr-defined]
                if budget[0] <= 0:
                    break
                if child is not None:
                    children.append(node(child, depth + 1))
        return {
            "role": acc.get_role_name(),  # type: ignore[attr-defined]
            "name": acc.get_name() or "",  # type: ignore[attr-defined]
            "x": ext.x, "y": ext.y, "width": ext.width, "height": ext.height,
            "focused": bool(states.contains(Atspi.StateType.FOCUSED)),
            "children": children,
        }  # fmt: skip

    desktop = Atspi.get_desktop(0)
    found: list[tuple[bool, str, object]] = []
    for i in range(desktop.get_child_count()):
        app = desktop.get_child_at_index(i)
        if app is None:
            continue
        for j in range(app.get_child_count()):
            window = app.get_child_at_index(j)
            if window is not None:
                active = window.get_state_set().contains(Atspi.StateType.ACTIVE)
                found.append((bool(active), app.get_name() or "", window))
    if not found:
        json.dump({"app": None, "window": None}, sys.stdout)
        return
    # The active window; without a window manager none is: the newest then.
    active, app_name, window = next((f for f in found if f[0]), found[-1])
    json.dump({"app": app_name, "window": node(window, 0)}, sys.stdout)


if __name__ == "__main__":  # also under ``python3 -c``
    main()
