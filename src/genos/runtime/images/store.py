"""The content-addressed store: ensure a spec's layers exist, building only what is missing.

::

    <store>/layers/<digest>/    built layers (see :mod:`.layers`)
    <store>/tmp/<digest>.*/     builds in progress; never used as a layer
    <store>/locks/<digest>.lock one flock per digest
    <store>/apt-cache/          downloaded .debs and package lists, shared by builds

A layer appears by one ``rename`` of a finished build directory, so it is
either complete or absent. Readers of a layer hold its lock shared; a build
or a removal holds it exclusive, so two requests for the same missing layer
(threads or processes) build it once, and the second one waits and uses it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genos.composer.debindex import host_arch
from genos.errors import (
    CapabilityError,
    ExternalError,
    InputError,
    NotFoundError,
    StateError,
)
from genos.paths import data_dir
from genos.runtime.images.build import Builder, DebianBuilder
from genos.runtime.images.housekeeping import (
    created,
    descendants,
    is_digest,
    keep_set,
    leaves_first,
)
from genos.runtime.images.layers import META, ROOTFS, Layer, LayerMeta, disk_usage, read_layer
from genos.runtime.images.locks import Busy, file_lock
from genos.runtime.images.mounts import overlay_dirs_in_use, unmount_all
from genos.runtime.images.recipes import LayerRecipe, plan, short
from genos.spec import EnvironmentSpec

log = logging.getLogger("genos.runtime.images")


@dataclass(frozen=True)
class Progress:
    """One event of :meth:`ImageStore.ensure`.

    ``cached``: layer ``index`` of ``total`` exists; ``build``: it is being
    built; ``line``: a line of the build tools' output (``text``); ``built``:
    the build finished.
    """

    event: Literal["cached", "build", "line", "built"]
    index: int
    total: int
    kind: str
    digest: str
    text: str = ""


ProgressFn = Callable[[Progress], None]


class ImageStore:
    """Layers on disk under ``root`` (default ``data_dir() / "images"``)."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        builder: Builder | None = None,
        arch: str | None = None,
    ) -> None:
        """Open a store (its directories appear with the first build).

        Args:
            root: the store directory.
            builder: what builds a missing layer; default :class:`DebianBuilder`.
            arch: Debian architecture of the layers; default this host's.
        """
        self.root = (Path(root) if root is not None else data_dir() / "images").absolute()
        self.arch = arch or host_arch()
        self.builder: Builder = builder or DebianBuilder(self.root / "apt-cache")

    def plan(self, spec: EnvironmentSpec) -> list[LayerRecipe]:
        """The layers ``spec`` needs, base first (nothing is built).

        Raises:
            SpecError: the spec's release is not one GenOS builds.
        """
        return plan(spec, self.arch)

    def ensure(self, spec: EnvironmentSpec, progress: ProgressFn | None = None) -> list[Layer]:
        """Make sure every layer of ``spec`` exists, building the missing ones.

        Args:
            spec: the environment.
            progress: called with each :class:`Progress` event.

        Returns:
            The layers, base first; pass them to :func:`mount_root`.

        Raises:
            SpecError: the spec's release is not one GenOS builds.
            CapabilityError: this host cannot build images.
            ExternalError: mmdebstrap or apt failed; no trace of the layer remains.
            StateError: a stale layer that must be rebuilt is mounted.
        """
        recipes = self.plan(spec)
        chain: list[Layer] = []
        with _host_errors(f"image store {self.root}"):
            for sub in ("layers", "tmp", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            for index, recipe in enumerate(recipes, 1):
                report = _Reporter(progress, index, len(recipes), recipe)
                chain.append(self._ensure_layer(recipe, chain, report))
        return chain

    def layer_dir(self, digest: str) -> Path:
        """Where the layer ``digest`` is (or would be) stored."""
        return self.root / "layers" / digest

    def ls(self) -> list[Layer]:
        """Every layer in the store, oldest first.

        Raises:
            CapabilityError: the store cannot be read (not root).
        """
        layers_dir = self.root / "layers"
        with _host_errors(f"image store {self.root}"):
            paths = list(layers_dir.iterdir()) if layers_dir.is_dir() else []
        found = [read_layer(path) for path in paths]
        return sorted((layer for layer in found if layer is not None), key=created)

    def get(self, digest: str) -> Layer:
        """The layer whose digest is ``digest`` or starts with it.

        Raises:
            NotFoundError: no layer matches.
            InputError: the prefix matches more than one layer.
        """
        exact = read_layer(self.layer_dir(digest)) if is_digest(digest) else None
        if exact is not None:
            return exact
        hits = [layer for layer in self.ls() if digest and layer.digest.startswith(digest)]
        if not hits:
            raise NotFoundError("layer", digest)
        if len(hits) > 1:
            raise InputError(f"{digest!r} matches {len(hits)} layers; give more digits")
        return hits[0]

    def rm(self, digest: str, *, in_use: Iterable[str] = ()) -> list[str]:
        """Remove a layer and every layer built on it.

        Args:
            digest: the layer's digest or a unique prefix of it.
            in_use: digests environments use (the orchestrator knows them).

        Returns:
            The removed digests, children first.

        Raises:
            NotFoundError: no such layer.
            StateError: it or a layer built on it is in use, mounted or being built.
        """
        target = self.get(digest)
        with _host_errors(f"image store {self.root}"):
            return self._rm(target, set(in_use))

    def _rm(self, target: Layer, in_use: set[str]) -> list[str]:
        doomed = descendants(target, self.ls())
        busy = in_use & {layer.digest for layer in doomed}
        if busy:
            raise StateError("in use", ["unused"], f"remove layer {short(min(busy))}")
        removed = []
        for layer in doomed:
            try:
                with file_lock(self._lock(layer.digest), blocking=False):
                    self._remove_layer(layer.digest)
            except Busy:
                raise StateError("busy", ["idle"], f"remove layer {short(layer.digest)}") from None
            removed.append(layer.digest)
        return removed

    def gc(self, in_use: Iterable[str] = (), recent_seconds: float = 3600.0) -> list[str]:
        """Remove layers nothing needs, and what interrupted builds left.

        A layer stays when an environment uses it (``in_use``), an overlay on
        this host has it mounted, an ensure() used it in the last
        ``recent_seconds``, or a layer that stays is built on it.

        Args:
            in_use: digests environments use.
            recent_seconds: how long a used layer is kept without an environment.

        Returns:
            The removed digests, children first.

        Raises:
            CapabilityError: the store cannot be changed (not root).
        """
        with _host_errors(f"image store {self.root}"):
            return self._gc(set(in_use), recent_seconds)

    def _gc(self, in_use: set[str], recent_seconds: float) -> list[str]:
        layers = self.ls()
        keep = keep_set(layers, in_use, overlay_dirs_in_use(), recent_seconds)
        removed = []
        for layer in leaves_first(layers):
            if layer.digest in keep:
                continue
            try:
                with file_lock(self._lock(layer.digest), blocking=False):
                    if time.time() - layer.last_used < recent_seconds:
                        continue  # used since we looked
                    self._remove_layer(layer.digest)
            except (Busy, StateError):
                continue
            removed.append(layer.digest)
        self._clean_tmp()
        return removed

    def _clean_tmp(self) -> None:
        tmp = self.root / "tmp"
        for leftover in tmp.iterdir() if tmp.is_dir() else ():
            digest = leftover.name.split(".", 1)[0]
            try:
                with file_lock(self._lock(digest), blocking=False):
                    _remove_tree(leftover)
            except Busy:
                continue  # a build in progress

    def _ensure_layer(self, recipe: LayerRecipe, chain: list[Layer], report: _Reporter) -> Layer:
        digest = recipe.digest
        with file_lock(self._lock(digest), shared=True):
            layer = self._usable(digest, chain)
            if layer is not None:
                return self._use(layer, report)
        with file_lock(self._lock(digest)):
            layer = self._usable(digest, chain)
            if layer is not None:
                return self._use(layer, report)
            self._discard(digest)
            report("build")
            layer = self._build(recipe, chain, report)
            report("built")
            return self._use(layer, report=None)

    def _use(self, layer: Layer, report: _Reporter | None) -> Layer:
        layer.touch()
        if report is not None:
            report("cached")
        return layer

    def _usable(self, digest: str, chain: list[Layer]) -> Layer | None:
        layer = read_layer(self.layer_dir(digest))
        if layer is None:
            return None
        parent_instance = chain[-1].meta.instance if chain else None
        if layer.meta.parent_instance != parent_instance:
            log.warning("layer %s was built on another build of its parent", short(digest))
            return None
        return layer

    def _build(self, recipe: LayerRecipe, chain: list[Layer], report: _Reporter) -> Layer:
        digest = recipe.digest
        work = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=self.root / "tmp"))
        try:
            rootfs, scratch = work / ROOTFS, work / "scratch"
            rootfs.mkdir(mode=0o755)
            scratch.mkdir()
            started = time.monotonic()
            self.builder(recipe, [layer.path for layer in chain], rootfs, scratch, report.line)
            _remove_tree(scratch)
            meta = self._meta(recipe, chain, rootfs)
            (work / META).write_text(meta.to_json(), encoding="utf-8")
            work.chmod(0o755)
            os.sync()  # the files before the name: a layer that exists is complete
            work.rename(self.layer_dir(digest))
            _fsync_dir(self.root / "layers")
        except BaseException:
            _remove_tree(work)
            raise
        log.info(
            "built %s layer %s (%d MB) in %.1f s",
            recipe.kind, short(digest), meta.size // 2**20, time.monotonic() - started,
        )  # fmt: skip
        return Layer(digest, self.layer_dir(digest), meta)

    def _meta(self, recipe: LayerRecipe, chain: list[Layer], rootfs: Path) -> LayerMeta:
        return LayerMeta(
            digest=recipe.digest,
            kind=recipe.kind,
            parent=recipe.parent,
            packages=recipe.packages,
            release=recipe.release,
            arch=recipe.arch,
            size=disk_usage(rootfs),
            created=time.time(),
            recipe_version=recipe.version,
            steps=tuple(f"{step.name}@{step.version}" for step in recipe.steps),
            instance=uuid.uuid4().hex,
            parent_instance=chain[-1].meta.instance if chain else None,
            recipe=recipe.identity(),
        )

    def _discard(self, digest: str) -> None:
        """Remove what a killed build or a stale layer left for ``digest`` (lock held)."""
        for leftover in (self.root / "tmp").glob(f"{digest}.*"):
            log.info("removing %s, left by an interrupted build", leftover.name)
            _remove_tree(leftover)
        if self.layer_dir(digest).exists():
            self._remove_layer(digest)

    def _remove_layer(self, digest: str) -> None:
        """Take a layer out of the store (its lock held); refuse while it is mounted."""
        layer_dir = self.layer_dir(digest)
        if layer_dir / ROOTFS in overlay_dirs_in_use():
            raise StateError("mounted", ["unmounted"], f"remove layer {short(digest)}")
        trash = self.root / "tmp" / f"{digest}.trash-{uuid.uuid4().hex[:8]}"
        layer_dir.rename(trash)
        _remove_tree(trash)

    def _lock(self, digest: str) -> Path:
        return self.root / "locks" / f"{digest}.lock"


class _Reporter:
    """Sends one layer's progress events to the caller's callback."""

    def __init__(
        self, progress: ProgressFn | None, index: int, total: int, recipe: LayerRecipe
    ) -> None:
        self.progress = progress
        self.index, self.total = index, total
        self.kind, self.digest = recipe.kind, recipe.digest

    def __call__(self, event: Literal["cached", "build", "line", "built"], text: str = "") -> None:
        if event != "line":
            log.info("layer %d/%d %s %s: %s", self.index, self.total, self.kind,
                     short(self.digest), event)  # fmt: skip
        if self.progress is not None:
            self.progress(Progress(event, self.index, self.total, self.kind, self.digest, text))

    def line(self, text: str) -> None:
        log.debug("%s: %s", short(self.digest), text)
        self("line", text)


@contextmanager
def _host_errors(what: str) -> Iterator[None]:
    """Translate the file system's errors at the store's border."""
    try:
        yield
    except PermissionError as exc:
        raise CapabilityError(f"{what}: permission denied ({exc.filename}); needs root") from exc
    except OSError as exc:
        raise ExternalError(f"{what}: {exc.strerror or exc} ({exc.filename})") from exc


def _remove_tree(path: Path) -> None:
    """Delete ``path``; never through a mount (anything mounted below is detached first)."""
    if not path.exists():
        return
    unmount_all(path)
    shutil.rmtree(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
