"""``genos images``: the layer store and the user images from the command line.

Layers are built from Debian's archive (``build``, ``gc``); user images are
the owners' own qcow2 or ISO files for tier ``vm`` (``add``, see
:mod:`genos.runtime.userimages`). ``ls`` and ``rm`` cover both: ``rm`` takes
a user image's name, else a layer's digest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genos.cli_console import LazyConsole
from genos.errors import InputError, NotFoundError

if TYPE_CHECKING:
    from genos.runtime.images import ImageStore, Progress
    from genos.runtime.userimages import UserImage, UserImages
    from genos.spec import EnvironmentSpec

images_app = typer.Typer(
    help="Root filesystem layers (base -> desktop -> apps) and user disk images.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
out = LazyConsole()


def _spec(prompt: str | None, file: Path | None) -> EnvironmentSpec:
    import yaml  # noqa: PLC0415

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


def _user_images() -> UserImages:
    from genos.runtime.userimages import UserImages  # noqa: PLC0415

    return UserImages()


def _describe(image: UserImage) -> str:
    added = time.strftime("%Y-%m-%d %H:%M", time.localtime(image.added))
    return (
        f"{image.name:20} {image.format:5} {_size(image.size):>9}  disk {_size(image.virtual_size)}"
        f"  sha256 {image.digest[:12]}  added {added}"
    )


def _size(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


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


@images_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The name a spec's base.image will use.")],
    path: Annotated[Path, typer.Argument(help="A qcow2 or ISO file.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="qcow2 or iso (default: from the file).")
    ] = None,
) -> None:
    """Register your own disk image (qcow2 or ISO) for VMs to boot (tier vm)."""
    image = _user_images().add(name, path, fmt)
    out.print(f"added {_describe(image)}")


@images_app.command("ls")
def ls() -> None:
    """List the cached layers, then the user images."""
    for layer in _store().ls():
        meta = layer.meta
        age = (time.time() - layer.last_used) / 3600
        out.print(
            f"{meta.digest[:12]}  {meta.kind:8} {meta.release:9} {meta.size / 2**20:8.0f} MiB"
            f"  used {age:.1f} h ago  {' '.join(meta.packages)[:60]}"
        )
    user = _user_images().ls()
    if user:
        out.print("user images (base.image, tier vm):")
    for image in user:
        out.print(f"  {_describe(image)}")


@images_app.command("rm")
def rm(
    target: Annotated[str, typer.Argument(help="A user image's name, or a layer digest/prefix.")],
) -> None:
    """Remove a user image (refused while an environment uses it), or a layer and the
    layers built on it."""
    user = _user_images()
    if target in {image.name for image in user.ls()}:
        gone = user.rm(target)
        out.print(f"removed user image {gone.name} ({gone.digest[:12]})")
        return
    store = _store()
    try:
        layer = store.get(target)
    except NotFoundError:
        raise NotFoundError("layer or user image", target) from None
    for digest in store.rm(layer.digest):
        out.print(f"removed {digest[:12]}")


@images_app.command("gc")
def gc(
    keep_hours: Annotated[float, typer.Option(help="Keep layers used this recently.")] = 1.0,
) -> None:
    """Remove layers no environment uses and nobody asked for recently."""
    removed = _store().gc(recent_seconds=keep_hours * 3600)
    out.print(f"removed {len(removed)} layers")
