"""``genos record``: an MP4 of an environment's screen and sound, written where asked.

The file is written beside its destination under a hidden temporary name and
renamed only once the whole recording has arrived, so a refused, broken or
interrupted recording leaves no file behind. The file is readable by its
owner only (a screen recording is private until shared on purpose).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from genos.client import Client
from genos.errors import InputError
from genos.ids import is_env_id

Writer = Callable[[BinaryIO], int]
EnvId = Annotated[str, typer.Argument(help="The environment's id (see genos ls).")]


def record(
    env_id: EnvId,
    seconds: Annotated[
        int, typer.Option("--seconds", "-s", help="How long to record (1-600).", min=1, max=600)
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The MP4 to write (default: ./genos-ID.mp4)."),
    ] = None,
) -> None:
    """Record the screen and sound of a running environment (its spec must allow recording)."""
    target = destination(env_id, output)
    with Client() as client:
        size = save(target, lambda sink: client.record(env_id, seconds, sink))
    print(f"{target}: {size} bytes, {seconds} s")


def destination(env_id: str, output: Path | None) -> Path:
    """Where the file goes: ``output`` (inside it if it is a directory), else ``./genos-ID.mp4``.

    Raises:
        InputError: not an environment id, or the directory does not exist.
    """
    if not is_env_id(env_id):
        raise InputError(f"not an environment id: {env_id[:40]!r}")
    name = f"genos-{env_id}.mp4"
    target = Path(name) if output is None else output / name if output.is_dir() else output
    if not target.parent.is_dir():
        raise InputError(f"{target.parent} is not a directory")
    return target


def save(target: Path, write: Writer) -> int:
    """Run ``write`` into a temporary file beside ``target``, then rename it to ``target``;
    the temporary file is removed if ``write`` raises (or is interrupted).

    Returns:
        What ``write`` returned (the bytes written).

    Raises:
        InputError: the directory cannot be written.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise InputError(f"cannot write in {target.parent}: {exc.strerror or exc}") from exc
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as sink:
            size = write(sink)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return size


def register(app: typer.Typer) -> None:
    """Add ``genos record`` to the ``genos`` app."""
    app.command("record")(record)
