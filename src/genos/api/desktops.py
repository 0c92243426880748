"""The agent connections of this process: one :class:`~genos.gateway.desktop.Desktop` per
environment, opened on first use and reopened when it ended; and PNG screenshots.
"""

from __future__ import annotations

import asyncio
import io
import logging
import weakref
from dataclasses import dataclass

from PIL import Image

from genos.errors import ExternalError, InputError, ProtocolError, StreamClosedError
from genos.gateway.desktop import Desktop
from genos.runtime.driver import DisplayTarget

log = logging.getLogger("genos.api.desktops")


class Desktops:
    """Open agent connections, by environment id."""

    def __init__(self) -> None:
        self._open: dict[str, Desktop] = {}
        # Held while a call opens or reopens the environment's connection (weak: none
        # is kept for an environment no call is at).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __contains__(self, env_id: str) -> bool:
        return env_id in self._open

    async def get(self, env_id: str, target: DisplayTarget) -> Desktop:
        """The environment's connection, opened (again) if it has none that lives.

        Before one is opened, every connection whose display has gone is closed
        (see :meth:`sweep`): a call on a live one does no more than look it up.

        Raises:
            ExternalError: the display does not answer or does not speak RFB.
        """
        async with self._locks.setdefault(env_id, asyncio.Lock()):
            desktop = self._open.get(env_id)
            if desktop is not None and desktop.alive:
                return desktop
            await self.sweep()  # this one too, if it is there
            try:
                desktop = await Desktop.open(target)
            except (StreamClosedError, ProtocolError, TimeoutError) as exc:
                message = "the environment's display does not answer"
                raise ExternalError(message, detail=str(exc)) from exc
            self._open[env_id] = desktop
            return desktop

    async def drop(self, env_id: str) -> None:
        """Close an environment's connection, if any."""
        desktop = self._open.pop(env_id, None)
        if desktop is not None:
            await desktop.aclose()

    async def sweep(self) -> list[str]:
        """Close and forget every connection whose display has gone (its environment
        ended, or its session restarted); their environments' ids.

        Each holds its screen's pixels (4 MB at 1280x800): an agent that drives
        environments to their end and never calls on them again would otherwise
        leave them all here. A call on one that restarted reopens it (:meth:`get`).
        """
        gone = [(env_id, d) for env_id, d in list(self._open.items()) if not d.alive]
        for env_id, desktop in gone:
            if self._open.get(env_id) is desktop:  # not reopened meanwhile
                del self._open[env_id]
            await desktop.aclose()
        return [env_id for env_id, _ in gone]

    async def aclose(self) -> None:
        """Close every connection."""
        for env_id in list(self._open):
            await self.drop(env_id)


@dataclass(frozen=True)
class Shot:
    """A PNG screenshot and how its pixels map to the screen's."""

    png: bytes
    width: int
    height: int
    screen_width: int
    screen_height: int

    @property
    def scale(self) -> float:
        """Screen pixels per image pixel (multiply image coordinates by it)."""
        return self.screen_width / self.width


def png(width: int, height: int, pixels: bytes, target_w: int | None, target_h: int | None) -> Shot:
    """Encode BGRX pixels as PNG, scaled to fit ``target_w`` x ``target_h`` (aspect kept).

    Raises:
        InputError: a target larger than the screen.
    """
    image = Image.frombuffer("RGB", (width, height), pixels, "raw", "BGRX", 0, 1)
    out_w, out_h = _fit(width, height, target_w, target_h)
    if (out_w, out_h) != (width, height):
        image = image.resize((out_w, out_h), Image.Resampling.BOX)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return Shot(buffer.getvalue(), out_w, out_h, width, height)


def _fit(width: int, height: int, target_w: int | None, target_h: int | None) -> tuple[int, int]:
    if (target_w or 0) > width or (target_h or 0) > height:
        raise InputError(f"a screenshot is at most the screen's size, {width}x{height}")
    scale = min(
        (target_w or width) / width,
        (target_h or height) / height,
    )
    return max(1, round(width * scale)), max(1, round(height * scale))
