"""What goes into each layer, and the content address that names it.

A layer is named by the sha256 of everything that decides its content: the
parent's digest, the sorted package set, the recipe version, the release and
architecture, and every named, versioned step (with the sha256 of each file
the step writes and each command it runs). Change any of them and the digest
changes, so a cached layer never has to be checked for staleness.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from genos.errors import SpecError
from genos.runtime.images.firefox import firefox_steps
from genos.runtime.images.session import base_step, desktop_step
from genos.runtime.images.shell import SHELL_PACKAGES, shell_step
from genos.runtime.images.steps import Step
from genos.runtime.images.tor import tor_steps
from genos.spec import SUPPORTED_RELEASES, EnvironmentSpec, Protocol, WindowManager

LayerKind = Literal["base", "desktop", "apps"]

DIGEST_FORMAT = 1
# Bump when the way a kind of layer is built changes without a step changing.
RECIPE_VERSIONS: dict[str, int] = {"base": 1, "desktop": 1, "apps": 1}

BASE_PACKAGES = ("ca-certificates",)
# mmdebstrap's package set: Essential + Priority required + apt.
BASE_OPTIONS = ("variant=minbase",)
DESKTOP_PACKAGES = (
    "dbus",
    "dbus-x11",
    "fonts-dejavu-core",
    "tigervnc-standalone-server",
    "tini",
    "xterm",
)
WM_PACKAGES: dict[WindowManager, tuple[str, ...]] = {
    WindowManager.OPENBOX: ("openbox",),
    WindowManager.ICEWM: ("icewm",),
    WindowManager.FLUXBOX: ("fluxbox",),
    WindowManager.XFCE: ("xfce4",),
}
RDP_PACKAGES = ("xrdp",)
# Sound and video out: a sound server and its recorder; GStreamer with its Opus
# encoder and Ogg muxer (plugins-base), the screen grabber and MP4 muxer
# (plugins-good), the H.264 encoder (plugins-ugly, x264) and the sound server's
# source (pulseaudio); xwininfo for the screen's size; the sockets' listener.
SOUND_PACKAGES = (
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-ugly",
    "gstreamer1.0-pulseaudio",
    "gstreamer1.0-tools",
    "pulseaudio",
    "pulseaudio-utils",
    "socat",
    "x11-utils",
)


@dataclass(frozen=True)
class LayerRecipe:
    """How to build one layer on top of its parent (``None`` for the base)."""

    kind: LayerKind
    release: str
    arch: str
    parent: str | None
    packages: tuple[str, ...]
    steps: tuple[Step, ...] = ()
    options: tuple[str, ...] = ()
    version: int = field(default=0)  # 0: the kind's current RECIPE_VERSIONS entry

    def __post_init__(self) -> None:
        object.__setattr__(self, "packages", tuple(sorted(set(self.packages))))
        if self.version == 0:
            object.__setattr__(self, "version", RECIPE_VERSIONS[self.kind])

    def identity(self) -> dict[str, Any]:
        """Everything that decides the layer's content, as plain JSON data."""
        return {
            "format": DIGEST_FORMAT,
            "kind": self.kind,
            "parent": self.parent,
            "release": self.release,
            "arch": self.arch,
            "packages": list(self.packages),
            "recipe_version": self.version,
            "options": list(self.options),
            "steps": [step.identity() for step in self.steps],
        }

    @cached_property
    def digest(self) -> str:
        """sha256 (hex) of :meth:`identity` in canonical JSON."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def base_recipe(release: str, arch: str) -> LayerRecipe:
    """The minimal Debian every environment starts from.

    Args:
        release: Debian codename (``bookworm``, ``trixie``).
        arch: Debian architecture name.

    Returns:
        The base recipe (mmdebstrap minbase plus :data:`BASE_PACKAGES`).

    Raises:
        SpecError: ``release`` is not a release GenOS builds.
    """
    if release not in SUPPORTED_RELEASES["debian"]:
        known = ", ".join(SUPPORTED_RELEASES["debian"])
        raise SpecError(
            f"unknown Debian release {release!r} (known: {known})",
            [("base.release", f"not one of {known}")],
        )
    return LayerRecipe(
        "base", release, arch, None, BASE_PACKAGES, (base_step(),), options=BASE_OPTIONS
    )


def desktop_recipe(base: LayerRecipe, spec: EnvironmentSpec) -> LayerRecipe:
    """Display server, window manager, fonts, init and the session script.

    Args:
        base: the recipe of the layer below.
        spec: the environment (its display decides the window manager and RDP).

    Returns:
        The desktop recipe.
    """
    wm = spec.display.window_manager
    packages = DESKTOP_PACKAGES + WM_PACKAGES[wm] + SHELL_PACKAGES.get(wm, ()) + SOUND_PACKAGES
    if spec.display.protocol is Protocol.RDP:
        packages += RDP_PACKAGES
    steps = (desktop_step(),) + ((shell_step(),) if wm in SHELL_PACKAGES else ())
    return LayerRecipe("desktop", base.release, base.arch, base.digest, packages, steps)


def apps_recipe(desktop: LayerRecipe, spec: EnvironmentSpec) -> LayerRecipe | None:
    """The spec's packages and the app set-up steps they need.

    Args:
        desktop: the recipe of the layer below.
        spec: the environment.

    Returns:
        The apps recipe, or None when the spec has no packages and no steps.
    """
    steps = tuple(firefox_steps(spec) + tor_steps(spec))
    if not spec.packages and not steps:
        return None
    return LayerRecipe(
        "apps", desktop.release, desktop.arch, desktop.digest, tuple(spec.packages), steps
    )


def plan(spec: EnvironmentSpec, arch: str) -> list[LayerRecipe]:
    """The layers ``spec`` needs, base first.

    Args:
        spec: the environment.
        arch: Debian architecture name (``amd64``).

    Returns:
        Two recipes (base, desktop) or three (plus apps).

    Raises:
        SpecError: the spec's release is not one GenOS builds.
    """
    base = base_recipe(spec.base.release, arch)
    desktop = desktop_recipe(base, spec)
    apps = apps_recipe(desktop, spec)
    return [base, desktop] if apps is None else [base, desktop, apps]


def short(digest: str) -> str:
    """The first 12 hex digits, for people."""
    return digest[:12]
