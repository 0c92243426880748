"""``genos images``: the layer store from the command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console

from genos.errors import InputError

if TYPE_CHECKING:
    from genos.runtime.images import ImageStore, Progress
    from genos.spec import EnvironmentSpec

images_app = typer.Typer(
    help="Root filesystem layers (base -> desktop -> apps).", no_args_is_help=True
)
out = Console(highlight=False, soft_wrap=True)


def _spec(prompt: str | None, file: Path | None) -> EnvironmentSpec:
    from genos.composer import Composed, Rejection, compose  # noqa: PLC0415
    from genos.spec import parse_spec  # noqa: PLC0415

    if file is not None:
        try:
            return parse_spec(yaml.safe_load(file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read {file}: {str(exc).splitlines()[0]}") from exc
    if prompt is None:
        raise InputError("give a request or -f SPEC_FILE")
    result = compose(prompt)
    if isinstance(result, Rejection):
        raise InputError(
            f"cannot build this: {result.violations[0].field}: {result.violations[0].reason}"
        )
    return result.spec if isinstance(result, Composed) else result.draft


def _store() -> ImageStore:
    from genos.runtime.images import ImageStore  # noqa: PLC0415

    return ImageStore()


def _show(p: Progress) -> None:
    if p.event == "line":
        out.print(f"    [dim]{p.text[:120]}[/]")
    else:
        out.print(f"layer {p.index}/{p.total} {p.kind} {p.digest[:12]}: {p.event}")


@images_app.command("build")
def build(
    prompt: Annotated[str | None, typer.Argument(help="A request to compose first.")] = None,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="A spec file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No build output.")] = False,
) -> None:
    """Build (or find cached) the layers a request or spec needs."""
    spec = _spec(prompt, file)
    layers = _store().ensure(spec, None if quiet else _show)
    for layer in layers:
        out.print(f"{layer.kind:8} {layer.digest[:12]}  {len(layer.meta.packages)} packages")


@images_app.command("ls")
def ls() -> None:
    """List the cached layers."""
    for layer in _store().ls():
        meta = layer.meta
        age = (time.time() - layer.last_used) / 3600
        out.print(
            f"{meta.digest[:12]}  {meta.kind:8} {meta.release:9} {meta.size / 2**20:8.0f} MiB"
            f"  used {age:.1f} h ago  {' '.join(meta.packages)[:60]}"
        )


@images_app.command("rm")
def rm(digest: Annotated[str, typer.Argument(help="A layer digest or unique prefix.")]) -> None:
    """Remove a layer and the layers built on it."""
    store = _store()
    for gone in store.rm(store.get(digest).digest):
        out.print(f"removed {gone[:12]}")


@images_app.command("gc")
def gc(
    keep_hours: Annotated[float, typer.Option(help="Keep layers used this recently.")] = 1.0,
) -> None:
    """Remove layers no environment uses and nobody asked for recently."""
    removed = _store().gc(recent_seconds=keep_hours * 3600)
    out.print(f"removed {len(removed)} layers")
