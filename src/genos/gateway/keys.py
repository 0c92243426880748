"""Key names and text as X keysyms, the values RFB KeyEvents carry (RFC 6143 7.5.4).

An agent names keys the way people write them (``ctrl+l``, ``Return``,
``shift+Tab``, ``F5``, ``a``); :func:`parse_combo` turns one combination into
the keysyms to press in order (modifiers first) and release in reverse.
:func:`text_keysyms` turns text into one keysym per character: Latin-1 as is,
other characters as Unicode keysyms (``0x01000000 + code point``, which
TigerVNC's Xvnc maps onto a spare keycode). Anything that is neither is an
:class:`~genos.errors.InputError` before a byte reaches the environment.
"""

from __future__ import annotations

from genos.errors import InputError

MAX_COMBO_KEYS = 8
MAX_KEY_NAME = 32

# X11 keysymdef.h values for the keys that have names.
_NAMED: dict[str, int] = {
    "backspace": 0xFF08,
    "tab": 0xFF09,
    "return": 0xFF0D,
    "enter": 0xFF0D,
    "pause": 0xFF13,
    "scroll_lock": 0xFF14,
    "escape": 0xFF1B,
    "esc": 0xFF1B,
    "delete": 0xFFFF,
    "del": 0xFFFF,
    "home": 0xFF50,
    "left": 0xFF51,
    "up": 0xFF52,
    "right": 0xFF53,
    "down": 0xFF54,
    "page_up": 0xFF55,
    "pageup": 0xFF55,
    "page_down": 0xFF56,
    "pagedown": 0xFF56,
    "end": 0xFF57,
    "print": 0xFF61,
    "insert": 0xFF63,
    "menu": 0xFF67,
    "num_lock": 0xFF7F,
    "caps_lock": 0xFFE5,
    "space": 0x0020,
    "minus": 0x002D,
    "plus": 0x002B,
}
MODIFIERS: dict[str, int] = {
    "shift": 0xFFE1,
    "ctrl": 0xFFE3,
    "control": 0xFFE3,
    "alt": 0xFFE9,
    "meta": 0xFFE7,
    "super": 0xFFEB,
    "win": 0xFFEB,
    "cmd": 0xFFEB,
}
_F1 = 0xFFBE
# Characters typed as their own key rather than as a character keysym.
_TEXT_KEYS = {"\n": 0xFF0D, "\r": 0xFF0D, "\t": 0xFF09, "\b": 0xFF08}


def key_keysym(name: str) -> int:
    """The keysym of one key name (``Return``, ``F5``, ``a``, ``é``, ``ctrl``).

    Raises:
        InputError: an unknown name.
    """
    if len(name) == 1:
        return char_keysym(name)
    lower = name.lower()
    if lower in _NAMED:
        return _NAMED[lower]
    if lower in MODIFIERS:
        return MODIFIERS[lower]
    if lower[:1] == "f" and lower[1:].isdigit() and 1 <= int(lower[1:]) <= 24:
        return _F1 + int(lower[1:]) - 1
    raise InputError(f"unknown key {name[:MAX_KEY_NAME]!r}")


def parse_combo(combo: str) -> list[int]:
    """The keysyms of a combination such as ``ctrl+shift+t`` (``+`` alone is the plus key).

    Returns:
        Keysyms in press order: modifiers as written, then the key.

    Raises:
        InputError: empty, too many keys, or an unknown name.
    """
    if not combo or len(combo) > MAX_COMBO_KEYS * MAX_KEY_NAME:
        raise InputError("a key combination is 1 to 256 characters")
    if combo == "+":
        return [_NAMED["plus"]]
    parts = [*combo[:-2].split("+"), "+"] if combo.endswith("++") else combo.split("+")
    if len(parts) > MAX_COMBO_KEYS or any(p == "" for p in parts):
        raise InputError(f"not a key combination: {combo[:64]!r}")
    return [key_keysym(p) for p in parts]


def char_keysym(char: str) -> int:
    """The keysym that types ``char``.

    Raises:
        InputError: a control character with no key of its own, or a surrogate.
    """
    if char in _TEXT_KEYS:
        return _TEXT_KEYS[char]
    code = ord(char)
    if code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF:
        raise InputError(f"character U+{code:04X} cannot be typed")
    if code <= 0xFF:
        return code
    return 0x01000000 + code


def text_keysyms(text: str) -> list[int]:
    """One keysym per character of ``text`` (see :func:`char_keysym`).

    Raises:
        InputError: a character that cannot be typed (nothing is sent then).
    """
    return [char_keysym(c) for c in text]
