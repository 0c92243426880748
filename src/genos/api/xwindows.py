"""Lists the X display's windows as JSON; run *inside* an environment by ``python3 -c``.

Standard library only, speaking the X11 core protocol itself (no Xlib in the
image): the windows of ``_NET_CLIENT_LIST`` when a window manager keeps one,
else the root's viewable children that have a name; for each its title
(``_NET_WM_NAME`` or ``WM_NAME``), app (``WM_CLASS``), geometry on the
screen and whether it has the input focus. Prints ``{"windows": [...]}``.
The computer API reads this file's text and sends it as the command.
"""

import json
import os
import socket
import struct
import sys


class X:
    def __init__(self, display: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(f"/tmp/.X11-unix/X{display}")  # noqa: S108 - the X socket
        self.sock.sendall(b"l\0" + struct.pack("<HHHH2x", 11, 0, 0, 0))
        head = self.read(8)
        if head[0] != 1:
            raise SystemExit("the X server refused the connection")
        body = self.read(struct.unpack_from("<H", head, 6)[0] * 4)
        vendor_len, _maxreq, _screens, formats = struct.unpack_from("<HHBB", body, 16)
        at = 32 + (vendor_len + 3) // 4 * 4 + 8 * formats
        self.root = struct.unpack_from("<I", body, at)[0]

    def read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise SystemExit("the X server closed the connection")
            data += chunk
        return data

    def call(self, opcode: int, data: int, body: bytes) -> bytes | None:
        """One request and its reply; None for an X error (a window that went away)."""
        length = 1 + len(body) // 4
        self.sock.sendall(struct.pack("<BBH", opcode, data, length) + body)
        while True:
            head = self.read(32)
            if head[0] == 1:
                extra = struct.unpack_from("<I", head, 4)[0] * 4
                return head + self.read(extra)
            if head[0] == 0:
                return None
            # an event: not asked for, skip it

    def atom(self, name: str) -> int:
        raw = name.encode()
        body = struct.pack("<H2x", len(raw)) + raw + b"\0" * (-len(raw) % 4)
        reply = self.call(16, 1, body)
        return struct.unpack_from("<I", reply, 8)[0] if reply else 0

    def prop(self, window: int, atom: int) -> bytes:
        if not atom:
            return b""
        reply = self.call(20, 0, struct.pack("<IIIII", window, atom, 0, 0, 1 << 16))
        if reply is None:
            return b""
        fmt, count = reply[1], struct.unpack_from("<I", reply, 16)[0]
        return reply[32 : 32 + count * (fmt // 8)]

    def children(self, window: int) -> tuple[int, list[int]]:
        reply = self.call(15, 0, struct.pack("<I", window))
        if reply is None:
            return 0, []
        parent, count = (
            struct.unpack_from("<I", reply, 12)[0],
            struct.unpack_from("<H", reply, 16)[0],
        )
        return parent, list(struct.unpack_from(f"<{count}I", reply, 32))

    def viewable(self, window: int) -> bool:
        reply = self.call(3, 0, struct.pack("<I", window))
        return reply is not None and reply[26] == 2

    def geometry(self, window: int) -> dict[str, int] | None:
        geo = self.call(14, 0, struct.pack("<I", window))
        moved = self.call(40, 0, struct.pack("<IIhh", window, self.root, 0, 0))
        if geo is None or moved is None:
            return None
        width, height = struct.unpack_from("<HH", geo, 16)
        x, y = struct.unpack_from("<hh", moved, 12)
        return {"x": x, "y": y, "width": width, "height": height}

    def focus(self) -> int:
        reply = self.call(43, 0, b"")
        return struct.unpack_from("<I", reply, 8)[0] if reply else 0


def main() -> None:
    x = X(int(os.environ.get("DISPLAY", ":0").lstrip(":").split(".")[0] or 0))
    net_name, utf8 = x.atom("_NET_WM_NAME"), x.atom("UTF8_STRING")
    wm_name, wm_class = x.atom("WM_NAME"), x.atom("WM_CLASS")
    listed = x.prop(x.root, x.atom("_NET_CLIENT_LIST"))
    if listed:
        windows = list(struct.unpack(f"<{len(listed) // 4}I", listed))
    else:
        windows = [w for w in x.children(x.root)[1] if x.viewable(w) and x.prop(w, wm_name)]
    focused, chain = x.focus(), set()
    while focused and focused != x.root and focused not in chain:
        chain.add(focused)
        focused = x.children(focused)[0]
    active = x.prop(x.root, x.atom("_NET_ACTIVE_WINDOW"))
    if active:
        chain.add(struct.unpack("<I", active[:4])[0])
    out = []
    for w in windows:
        geometry = x.geometry(w)
        if geometry is None:
            continue
        title = x.prop(w, net_name) if utf8 else b""
        title = title or x.prop(w, wm_name)
        names = x.prop(w, wm_class).split(b"\0")
        out.append(
            {
                "id": w,
                "title": title.decode("utf-8", "replace"),
                "app": names[1].decode("utf-8", "replace") if len(names) > 1 else "",
                **geometry,
                "focused": w in chain,
            }
        )
    json.dump({"windows": out}, sys.stdout)


if __name__ == "__main__":  # also under ``python3 -c``
    main()
