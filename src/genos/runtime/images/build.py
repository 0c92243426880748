"""Building one layer: mmdebstrap for the base, apt in an overlay chroot above it.

Every build runs in namespaces of its own (``unshare --mount --pid``) under
``setpriv --pdeathsig KILL``: the overlay, ``/proc``, ``/sys``, ``/dev`` and the
apt cache bind mounts exist only inside the build's mount namespace, and when
the build ends, fails or its caller is killed, the kernel kills every process
of the build and drops all of its mounts. (PID 1 of a build, ``sh`` or
mmdebstrap, stays root: a credential change would clear its parent-death
signal.) The host's mount table never sees
them, so no failure can leave a mount behind or let a clean-up delete through
one.

The upper layers are the upper dirs of those overlays: apt writes only what
changed, whiteouts included, and the upper dir *is* the layer. Downloaded
``.deb`` files and apt's package lists live in a cache beside the store and
are bind-mounted into each build, so a rebuild downloads nothing new. One
store-wide lock serializes apt's work on that shared cache.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from genos.errors import CapabilityError, ExternalError
from genos.runtime.images.archive import sources
from genos.runtime.images.locks import file_lock
from genos.runtime.images.mounts import overlay_options
from genos.runtime.images.recipes import LayerRecipe
from genos.runtime.images.steps import Step

log = logging.getLogger("genos.runtime.images")

LineSink = Callable[[str], None]

TOOLS = ("mmdebstrap", "setpriv", "unshare", "chroot", "mount", "umount", "install")
ISOLATE = (
    "setpriv", "--pdeathsig", "KILL", "--",
    "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--",
)  # fmt: skip
PASSED_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
TAIL_LINES = 25

# Files apt and dpkg leave that no environment needs (mmdebstrap drops the
# same from the base), plus the build's scratch space.
CLEANUP = """\
rm -f "$m"/var/cache/apt/*.bin "$m"/var/log/dpkg.log "$m"/var/log/alternatives.log
rm -f "$m"/var/log/apt/*.log "$m"/var/log/apt/eipp.log.xz "$m"/var/log/fontconfig.log
rm -f "$m"/var/cache/ldconfig/aux-cache "$m"/var/lib/dpkg/*-old "$m"/var/cache/debconf/*-old
rm -f "$m"/var/lib/dbus/machine-id
rm -rf "$m"/tmp/* "$m"/var/tmp/*
"""


class Builder(Protocol):
    """Turns a recipe into the contents of ``rootfs`` (an empty directory)."""

    def __call__(
        self,
        recipe: LayerRecipe,
        lowers: Sequence[Path],
        rootfs: Path,
        scratch: Path,
        emit: LineSink,
    ) -> None:
        """Build the layer.

        Args:
            recipe: what to build.
            lowers: the parent layers' directories, base first (empty for a base).
            rootfs: where the layer's files go; for an upper layer, the overlay's upper dir.
            scratch: an empty directory on the same file system, deleted afterwards.
            emit: receives each line of the tools' output.

        Raises:
            ExternalError: a tool failed; ``detail`` holds its last lines.
            CapabilityError: this host cannot build images.
        """
        ...


class DebianBuilder:
    """The real builder: Debian's archive, mmdebstrap, apt, overlayfs."""

    def __init__(self, cache_dir: Path, mirror: str | None = None) -> None:
        """Use ``cache_dir`` for downloaded packages and package lists.

        Args:
            cache_dir: shared apt cache (``archives/``, ``lists/<release>-<arch>/``).
            mirror: Debian mirror URI; default the host's (see :mod:`.archive`).
        """
        self.cache_dir = cache_dir
        self.mirror = mirror

    def __call__(
        self,
        recipe: LayerRecipe,
        lowers: Sequence[Path],
        rootfs: Path,
        scratch: Path,
        emit: LineSink,
    ) -> None:
        """Build ``recipe`` into ``rootfs`` (see :class:`Builder`)."""
        require_tools()
        job = _Job(
            recipe=recipe,
            lowers=tuple(lowers),
            rootfs=rootfs,
            scratch=scratch,
            archives=self.cache_dir / "archives",
            lists=self.cache_dir / "lists" / f"{recipe.release}-{recipe.arch}",
        )
        for path in (job.archives, job.lists):
            path.mkdir(parents=True, exist_ok=True)
        _write_script(job.files, _files_script(recipe.steps, scratch))
        _write_script(job.run, _run_script(recipe.steps))
        if recipe.kind == "base":
            argv, tool = _mmdebstrap_argv(job, self.mirror), "mmdebstrap"
        else:
            build = _write_script(scratch / "build.sh", _overlay_script(job))
            argv, tool = ["sh", "-eu", str(build)], "apt-get"
        with file_lock(self.cache_dir / "lock"):
            run_isolated(argv, emit, tool)


@dataclass(frozen=True)
class _Job:
    """One build's recipe and paths."""

    recipe: LayerRecipe
    lowers: tuple[Path, ...]
    rootfs: Path
    scratch: Path
    archives: Path
    lists: Path

    @property
    def files(self) -> Path:
        return self.scratch / "files.sh"

    @property
    def run(self) -> Path:
        return self.scratch / "run.sh"


def require_tools() -> None:
    """Check this host can build images.

    Raises:
        CapabilityError: not root, or a needed tool is missing.
    """
    if os.geteuid() != 0:
        raise CapabilityError("building images needs root (mounts, chroot, mmdebstrap)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise CapabilityError(
            f"building images needs {', '.join(missing)}: apt-get install mmdebstrap util-linux"
        )


def run_isolated(argv: Sequence[str], emit: LineSink, tool: str) -> None:
    """Run ``argv`` in a new mount and PID namespace that dies with the caller.

    Args:
        argv: the command.
        emit: receives each output line (stdout and stderr together).
        tool: the tool named in the error.

    Raises:
        ExternalError: the command failed; ``detail`` holds its last lines.
    """
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root"}
    env |= {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
    env |= {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    log.debug("running %s", shlex.join(argv))
    with subprocess.Popen(
        [*ISOLATE, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        errors="replace",
    ) as proc:
        try:
            for raw in proc.stdout or ():
                line = raw.rstrip("\n")
                tail.append(line)
                emit(line)
        except BaseException:
            proc.kill()  # SIGKILL to unshare takes the whole build with it
            raise
        code = proc.wait()
    if code != 0:
        raise ExternalError(f"{tool} failed (exit {code})", "\n".join(tail))


def _mmdebstrap_argv(job: _Job, mirror: str | None) -> list[str]:
    q, recipe = shlex.quote, job.recipe
    cache = f'"$1"{q("/var/cache/apt/archives")}'
    index = f'"$1"{q("/var/lib/apt/lists")}'
    variant = dict(opt.split("=", 1) for opt in recipe.options).get("variant", "minbase")
    return [
        "mmdebstrap",
        "--mode=root",
        f"--variant={variant}",
        f"--include={','.join(recipe.packages)}",
        "--skip=essential/unlink",  # the downloaded .debs stay in the shared cache
        f'--setup-hook=sh {q(str(job.files))} "$1"',
        f"--setup-hook=mkdir -p {cache} {index} && mount --bind {q(str(job.archives))} {cache}"
        f" && mount --bind {q(str(job.lists))} {index}",
        f"--customize-hook=umount {cache} {index}",
        f'--customize-hook=sh {q(str(job.run))} "$1"',
        recipe.release,
        str(job.rootfs),
        *sources(recipe.release, mirror),
    ]


def _overlay_script(job: _Job) -> str:
    q, recipe = shlex.quote, job.recipe
    merged, work = job.scratch / "merged", job.scratch / "work"
    merged.mkdir()
    work.mkdir()
    install = ""
    if recipe.packages:
        install = 'chroot "$m" apt-get -q -y install ' + " ".join(map(q, recipe.packages))
    return f"""m={q(str(merged))}
mount -t overlay overlay -o {q(overlay_options(job.lowers, job.rootfs, work))} "$m"
sh {q(str(job.files))} "$m"
mount -t proc proc "$m/proc"
mount --rbind /sys "$m/sys"
mount --rbind /dev "$m/dev"
mount --bind {q(str(job.archives))} "$m/var/cache/apt/archives"
mount --bind {q(str(job.lists))} "$m/var/lib/apt/lists"
mount --bind /etc/resolv.conf "$m/etc/resolv.conf"
printf '#!/bin/sh\\nexit 101\\n' > "$m/usr/sbin/policy-rc.d"
chmod 0755 "$m/usr/sbin/policy-rc.d"
chroot "$m" apt-get -q update
{install}
umount "$m/etc/resolv.conf" "$m/var/lib/apt/lists" "$m/var/cache/apt/archives"
rm -f "$m/usr/sbin/policy-rc.d"
{CLEANUP}
sh {q(str(job.run))} "$m"
umount -R "$m/dev" "$m/sys" "$m/proc" || umount -R --lazy "$m/dev" "$m/sys" "$m/proc"
umount "$m" || umount --lazy "$m"
"""


def _files_script(steps: Sequence[Step], scratch: Path) -> str:
    """Shell lines writing each step's files under the root given as ``$1``."""
    stage = scratch / "stage"
    stage.mkdir()
    lines = ['m="$1"']
    for n, spec in enumerate(f for step in steps for f in step.files):
        staged = stage / str(n)
        staged.write_text(spec.content, encoding="utf-8")
        mode = f"{spec.mode:04o}"
        target = f'"$m"{shlex.quote(spec.path)}'
        lines.append(f"install -D -o 0 -g 0 -m {mode} {shlex.quote(str(staged))} {target}")
    return "\n".join(lines) + "\n"


def _run_script(steps: Sequence[Step]) -> str:
    """Shell lines running each step's commands in a chroot of the root given as ``$1``."""
    lines = ['m="$1"']
    for step in steps:
        lines.append(f"echo {shlex.quote(f'genos: step {step.name} v{step.version}')}")
        lines += [f'chroot "$m" /bin/sh -euc {shlex.quote(cmd)}' for cmd in step.run]
    return "\n".join(lines) + "\n"


def _write_script(path: Path, text: str) -> Path:
    path.write_text("set -eu\n" + text, encoding="utf-8")
    return path
