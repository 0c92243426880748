"""What GenOS will not do, found in a request and answered with the words that asked.

- The host itself: privileged mode, capabilities, the host's network, its
  docker socket, switching the sandbox off, root on the host -> refused.
- A directory of the host or of the user's computer mounted or shared into
  the environment -> refused, saying how files do get in (the viewer's upload)
  and how they are kept (a volume). Merely working on "files from my laptop"
  is no mount: it composes, and the rationale says how the files get in.
- A device of the host (``/dev/...``, a GPU, "the host's USB") -> refused.
  A device of the user's own computer (a USB stick, a webcam) can reach a VM
  through a SPICE viewer's USB redirection, so it is a question unless the
  request already asks for SPICE.

A negated mention ("no privileged mode needed") asks for nothing and is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from genos.composer.language import Reading
from genos.composer.lexicon import ESCALATION

_PATH = (
    r"(?:~/[\w./-]*|\$home\b|"
    r"(?<![\w.~])/(?:home|srv|var|etc|mnt|media|opt|data|root|usr|tmp|run)\b[\w./-]*)"
)
_DIR_NOUN = (
    r"(?:folders?|director(?:y|ies)|dirs?|drives?|disks?|partitions?|shares?|nas|nfs|smb|"
    r"samba|file ?systems?|home)"
)
_OWNER = r"(?:my|our|the|a|local|host'?s?|server'?s?|laptop'?s?|computer'?s?|pc'?s?)"
_MOUNT_VERB = r"(?:mount\w*|bind\w*|shar\w*|map\w*|attach\w*|expos\w*|pass\w*|sync\w*|link\w*)"
_HOST_DIRS = (
    rf"\b{_MOUNT_VERB}\b[^.;!?]{{0,40}}?(?:{_PATH}|\b{_OWNER}\s+(?:[\w'-]+\s+){{0,2}}{_DIR_NOUN}\b)",
    rf"(?:{_PATH}|\b{_OWNER}\s+(?:[\w'-]+\s+){{0,2}}{_DIR_NOUN}\b)[^.;!?]{{0,30}}?"
    rf"\b(?:mounted|shared|bind[- ]?mounted|mapped|attached|exposed)\b",
    r"\bshared (?:folder|directory|drive)s?\b|\bbind[- ]mounts?\b",
    rf"\baccess\w*\s+(?:to\s+)?{_PATH}",
    rf"{_PATH}\s+(?:on|from|of)\s+(?:the\s+)?(?:host|server)\b",
)
_SOFT_FILES = (
    rf"\bfiles?\s+(?:from|on|in)\s+{_OWNER}\s+(?:[\w'-]+\s+){{0,2}}"
    r"(?:laptop|computer|pc|machine|desktop|folder|disk|drive|phone)\b",
)
_HOST_DEVICES = (
    r"/dev/[\w/.-]+",
    r"\b(?:gpu|graphics card|video card|nvidia|cuda|pci)\s*(?:-|\s)?pass[- ]?through\b",
    r"\bpass\w*\s+(?:my |the |a )?(?:gpu|graphics card|video card|pci device)s?\b",
    r"\b(?:host|server)'?s?\s+(?:usb|gpu|devices?|webcam|camera|sound card|serial ports?)\b",
    r"\b(?:with|needs?|using|on) (?:a |the |my )?(?:gpu|cuda|nvidia (?:gpu|card))\b",
    r"\b(?:my|the|a|host'?s?|server'?s?) (?:gpu|graphics card|video card|nvidia (?:gpu|card))s?\b",
)
_USER_DEVICES = (
    r"\b(?:my|our)\s+(?:own\s+)?(usb(?: stick| drive| key| flash drive| device)?|flash drive|"
    r"thumb drive|webcam|web cam|camera|microphone|mic|headset|smart ?card|yubikey|"
    r"security key|phone|printer|scanner|gamepad|joystick|arduino|serial (?:port|device))\b",
)


@dataclass
class Refusals:
    """What the request asked that GenOS will not do, and notes about what it will."""

    violations: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str, str]] = field(default_factory=list)
    device: str | None = None  # a device of the user's own computer
    spans: list[tuple[int, int]] = field(default_factory=list)


_ESCALATION_WHY = (
    "an environment can never get host mounts, privileged mode, extra capabilities or "
    "host networking"
)
_DIRECTORY_WHY = (
    "no directory of the host or of your computer is ever mounted into an environment; "
    "upload files through the viewer (file transfer into the environment) and ask to "
    "'keep my files' to keep them on a volume"
)
_DEVICE_WHY = (
    "devices of the host (disks, GPUs, USB, serial ports) are never passed into an environment"
)


def check(text: str, reading: Reading) -> Refusals:
    """Find host access, host directories and devices in a request.

    Args:
        text: the folded request.
        reading: its negations (a negated mention asks for nothing).

    Returns:
        The violations to refuse with, notes for the rationale, and a device of the
        user's own computer if one was named.
    """
    finder = _Finder(text, reading)
    said = finder.first(ESCALATION)
    if said:
        finder.out.violations.append(("security", f"'{said}': {_ESCALATION_WHY}"))
    directory = None if said else finder.first(_HOST_DIRS)
    if directory:
        finder.out.violations.append(("security", f"'{directory}': {_DIRECTORY_WHY}"))
    soft = None if said or directory else finder.first(_SOFT_FILES)
    if soft:
        note = (
            f"'{soft}': nothing of your computer is mounted; upload the files through the viewer."
        )
        finder.out.notes.append(("security.file_transfer", "to_env", note))
    device = finder.first(_HOST_DEVICES)
    if device:
        finder.out.violations.append(("security", f"'{device}': {_DEVICE_WHY}"))
    else:
        finder.out.device = finder.first(_USER_DEVICES)
    return finder.out


class _Finder:
    """First un-negated match of a table, its span recorded as used."""

    def __init__(self, text: str, reading: Reading) -> None:
        self.text = text
        self.reading = reading
        self.out = Refusals()

    def first(self, patterns: tuple[str, ...]) -> str | None:
        """The words of the first un-negated match, recorded as used."""
        found = _first(patterns, self.text, self.reading)
        if found is None:
            return None
        self.out.spans.append(found.span())
        return found.group(0).strip()


def _first(patterns: tuple[str, ...], text: str, reading: Reading) -> re.Match[str] | None:
    for pattern in patterns:
        for found in re.finditer(pattern, text):
            if reading.negated(found.start(), found.end()) is None:
                return found
    return None
