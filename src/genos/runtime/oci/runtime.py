"""Which OCI runtime can run here, and how to call it.

``runc`` and ``crun`` run tier ``container``, ``runsc`` (gVisor, ptrace
platform) runs tier ``gvisor``. Whether one really works on this host (cgroup
layout, kernel features) is decided by a trial: create and delete an empty
container once. A success is cached in memory and in
``<state root>/runtimes.json`` (on ``/run``, so it is forgotten at reboot,
when the kernel or cgroup layout may change). A failure is kept in memory
for :data:`FAILURE_TTL` seconds only and never written down: one bad trial
(a host busy building images, a runtime upgraded mid-way) must not disable
a runtime for every later process. Trials in one process run one at a time
per runtime, each under a container id of its own.

Failures of the runtime's command line are translated here into GenOS errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from genos.errors import CapabilityError, ExternalError, NotFoundError
from genos.sandbox import cgroups
from genos.sandbox.config import IdMap
from genos.spec import Tier

logger = logging.getLogger("genos.runtime.oci")


class RuntimeKind(StrEnum):
    """The OCI runtimes GenOS knows how to drive."""

    RUNC = "runc"
    CRUN = "crun"
    RUNSC = "runsc"


TIER_RUNTIMES: dict[Tier, tuple[RuntimeKind, ...]] = {
    Tier.CONTAINER: (RuntimeKind.RUNC, RuntimeKind.CRUN),
    Tier.GVISOR: (RuntimeKind.RUNSC,),
}

_NOT_FOUND_WORDS = ("does not exist", "not exist", "no such container", "container not found")


@dataclass(frozen=True)
class OCIRuntime:
    """One usable runtime binary and the state directory GenOS gives it."""

    kind: RuntimeKind
    path: str
    version: str
    state_root: Path
    network: str | None = None
    """runsc only, on every call: ``none`` (its own loopback) or ``sandbox``
    (take over the config's network namespace)."""

    def for_network(self, network: str) -> OCIRuntime:
        """The same runtime for an environment with this runsc network mode."""
        return replace(self, network=network)

    def argv(self, *args: str) -> list[str]:
        """The full command line for a runtime subcommand.

        Args:
            args: subcommand and its arguments.

        Returns:
            The argv list.
        """
        argv = [self.path, "--root", str(self.state_root)]
        if self.kind is RuntimeKind.RUNSC:
            # gVisor: ptrace platform (no KVM here). The guest creates rfb.sock
            # in a host directory; with host-uds=create alone it cannot stat
            # or chmod it (Xvnc does both), so "all" - "open" reaches only
            # sockets inside the env's own mounts, which hold no host socket.
            # No --oci-seccomp: guest syscalls never reach the host kernel (the
            # Sentry serves them, under gVisor's own host seccomp filter), and
            # this runsc mis-evaluates the allowlist (select, clone fail).
            argv += ["--platform=ptrace", "--host-uds=all"]
            if self.network:
                argv.append(f"--network={self.network}")
        return [*argv, *args]

    async def run(
        self,
        *args: str,
        env_id: str = "",
        timeout: float = 30.0,
        output: Path | None = None,
    ) -> str:
        """Run a subcommand and return its standard output.

        Args:
            args: subcommand and arguments.
            env_id: the environment concerned (for error messages).
            timeout: seconds before the command is killed.
            output: append stdout and stderr to this file instead (``create``
                and ``run``: the container keeps them as the session's output).

        Returns:
            Standard output, decoded ('' with ``output``).

        Raises:
            NotFoundError: the runtime does not know ``env_id``.
            ExternalError: the runtime failed; ``detail`` is its stderr.
        """
        argv = self.argv(*args)
        code, out, err = await call(argv, timeout, output)
        if code != 0:
            text = err.strip() or out.strip()
            if env_id and any(word in text.lower() for word in _NOT_FOUND_WORDS):
                raise NotFoundError("environment", env_id)
            raise ExternalError(f"{self.kind} {args[0]} failed (exit {code})", detail=text)
        return out

    async def state(self, env_id: str) -> dict[str, Any]:
        """The runtime's ``state`` of a container (``status``, ``pid``, ...).

        Raises:
            NotFoundError: no such container.
            ExternalError: the runtime failed or answered nonsense.
        """
        out = await self.run("state", env_id, env_id=env_id)
        try:
            data = json.loads(out)
        except ValueError as exc:
            raise ExternalError(f"{self.kind} state: not JSON", detail=out[:500]) from exc
        if not isinstance(data, dict):
            raise ExternalError(f"{self.kind} state: not an object", detail=out[:500])
        return data


async def call(argv: list[str], timeout: float, output: Path | None = None) -> tuple[int, str, str]:
    """Run ``argv``; ``(exit code, stdout, stderr)``.

    Args:
        argv: the command.
        timeout: seconds before it is killed.
        output: send stdout and stderr to this file (appending); the returned
            stderr is then what this command appended.

    Raises:
        ExternalError: it could not be started or timed out.
    """
    with contextlib.ExitStack() as stack:
        sink: Any = asyncio.subprocess.PIPE
        offset = 0
        if output is not None:
            sink = stack.enter_context(output.open("ab"))
            offset = sink.tell()
        code, out, err = await _communicate(argv, sink, timeout)
    if output is not None:
        with output.open("rb") as fh:
            fh.seek(offset)
            err = fh.read()[-4000:]
    return code, out.decode(errors="replace"), err.decode(errors="replace")


async def _communicate(argv: list[str], sink: Any, timeout: float) -> tuple[int, bytes, bytes]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink
        )
    except OSError as exc:
        raise ExternalError(f"cannot run {argv[0]}", detail=str(exc)) from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ExternalError(f"{Path(argv[0]).name} timed out after {timeout:g}s") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    return proc.returncode or 0, out or b"", err or b""


async def call_capped(
    argv: list[str], timeout: float, limit: int
) -> tuple[int, bytes, bytes, bool]:
    """Run ``argv`` keeping at most ``limit`` bytes of each of stdout and stderr.

    The rest is read and dropped, so a chatty command costs time, not memory.

    Returns:
        Exit code, stdout, stderr, and whether either was cut.

    Raises:
        ExternalError: it could not be started or timed out.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:
        raise ExternalError(f"cannot run {argv[0]}", detail=str(exc)) from exc
    if proc.stdout is None or proc.stderr is None:  # pragma: no cover - PIPE above
        raise ExternalError(f"{argv[0]}: no pipes")
    try:
        async with asyncio.timeout(timeout):
            (out, cut_out), (err, cut_err) = await asyncio.gather(
                _read_capped(proc.stdout, limit), _read_capped(proc.stderr, limit)
            )
            await proc.wait()
    except TimeoutError:
        raise ExternalError(f"{Path(argv[0]).name} timed out after {timeout:g}s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode or 0, out, err, cut_out or cut_err


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    kept = bytearray()
    cut = False
    while chunk := await stream.read(1 << 16):
        room = limit - len(kept)
        kept += chunk[:room]
        cut = cut or len(chunk) > room
    return bytes(kept), cut


def _cache_key(path: str) -> str:
    st = Path(path).stat()
    layout = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"
    return f"{path}:{st.st_mtime_ns}:{st.st_size}:{layout}"


def container_ids(state_dir: Path) -> set[str]:
    """Ids of the containers a runtime keeps state for under ``state_dir``.

    runc and crun keep ``<id>/``; runsc keeps ``<id>_sandbox:<id>.state``.
    """
    try:
        names = [entry.name for entry in state_dir.iterdir()]
    except OSError:
        return set()
    return {name.split("_sandbox:", 1)[0] for name in names if not name.startswith(".")}


_MEMO: dict[str, OCIRuntime | str] = {}
_FAILED_AT: dict[str, float] = {}
_PROBING: dict[str, asyncio.Lock] = {}
FAILURE_TTL = 30.0  # seconds a failed trial is believed before the next one


def _remembered(key: str, state_root: Path) -> OCIRuntime | str | None:
    found = _MEMO.get(key)
    if isinstance(found, str) and found != "ok":
        if time.monotonic() - _FAILED_AT.get(key, 0.0) < FAILURE_TTL:
            return found
        found = None
    return found or _load_cached(state_root, key)


async def _probe_once(
    key: str, state_root: Path, trial: Callable[[], Awaitable[OCIRuntime | str]]
) -> OCIRuntime | str:
    """The cached answer for ``key``, or run ``trial`` (one at a time per key) and keep it."""
    found = _remembered(key, state_root)
    if found is not None:
        return found
    async with _PROBING.setdefault(key, asyncio.Lock()):
        found = _remembered(key, state_root)  # another task may have probed meanwhile
        if found is None:
            found = await trial()
            if isinstance(found, str) and found != "ok":
                _FAILED_AT[key] = time.monotonic()
            else:
                _store_cached(state_root, key, found)
        _MEMO[key] = found
    return found


async def detect(kind: RuntimeKind, state_root: Path) -> OCIRuntime:
    """The runtime ``kind`` if it works on this host (trial once, then cached).

    Args:
        kind: which runtime.
        state_root: GenOS's state directory for runtimes (``/run/genos/runtime``).

    Returns:
        The usable runtime.

    Raises:
        CapabilityError: not installed, or it cannot run containers here (with why).
    """
    path = shutil.which(kind.value)
    if path is None:
        raise CapabilityError(f"{kind} is not installed")
    key = _cache_key(path)
    found = await _probe_once(key, state_root, lambda: _probe(kind, path, state_root / kind.value))
    if isinstance(found, str):
        raise CapabilityError(f"{kind} cannot run containers on this host: {found}")
    # Whether the binary works is the host's; where its state lives is the caller's
    # (two nodes in one process keep their containers apart).
    return replace(found, state_root=state_root / kind.value)


async def for_tier(tier: Tier, state_root: Path, prefer: RuntimeKind | None = None) -> OCIRuntime:
    """The first runtime that works for a tier (``prefer`` first when given).

    Raises:
        CapabilityError: the tier is not an OCI tier, or no runtime for it works here.
    """
    kinds = TIER_RUNTIMES.get(tier)
    if not kinds:
        raise CapabilityError(f"tier {tier} is not run by the OCI driver")
    if prefer is not None:
        if prefer not in kinds:
            raise CapabilityError(f"runtime {prefer} does not provide tier {tier}")
        kinds = (prefer,)
    reasons = []
    for kind in kinds:
        try:
            return await detect(kind, state_root)
        except CapabilityError as exc:
            reasons.append(str(exc))
    raise CapabilityError(f"no runtime for tier {tier}: " + "; ".join(reasons))


def _load_cached(state_root: Path, key: str) -> OCIRuntime | str | None:
    try:
        entry = json.loads((state_root / "runtimes.json").read_text()).get(key)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict):
        return None
    if entry.get("ok"):
        return "ok"
    if "kind" not in entry:  # a failure an older GenOS wrote down: try again
        return None
    return OCIRuntime(
        RuntimeKind(entry["kind"]), entry["path"], entry["version"], Path(entry["state_root"])
    )


def _store_cached(state_root: Path, key: str, found: OCIRuntime | str) -> None:
    """Write a success down (``found`` is a runtime, or the string ``ok``)."""
    path = state_root / "runtimes.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if isinstance(found, str):
        data[key] = {"ok": True}
    else:
        data[key] = {
            "kind": found.kind.value,
            "path": found.path,
            "version": found.version,
            "state_root": str(found.state_root),
        }
    state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _trial_config(trial_id: str, id_map: IdMap | None) -> dict[str, Any]:
    namespaces = ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    linux: dict[str, Any] = {
        "namespaces": [{"type": t} for t in [*namespaces, *(["user"] if id_map else [])]],
        "cgroupsPath": f"/{cgroups.parent()}/{trial_id}",
        "resources": {"pids": {"limit": 512}, "memory": {"limit": 256 << 20}},
    }
    if id_map is not None:
        linux["uidMappings"] = linux["gidMappings"] = id_map.oci()
    return {
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/trial"], "cwd": "/", "env": []},
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": linux,
    }


def _trial_bundle(
    bundle: Path, state_dir: Path, config: dict[str, Any], id_map: IdMap | None
) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    bundle.chmod(0o711)  # a mapped root must be able to walk to its rootfs
    rootfs = bundle / "rootfs"
    for sub in ("proc", "dev"):
        (rootfs / sub).mkdir(parents=True)
    (rootfs / "trial").touch(mode=0o755)
    if id_map is not None:  # like an env's upper dir: owned by its root
        for path in (rootfs, rootfs / "proc", rootfs / "dev", rootfs / "trial"):
            os.chown(path, id_map.host_id, id_map.host_id)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


async def _trial(runtime: OCIRuntime, id_map: IdMap | None = None) -> str | None:
    """Create and delete an empty container; the runtime's complaint, or None if it worked."""
    trial_id = f"trial-{runtime.kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    config = _trial_config(trial_id, id_map)
    with tempfile.TemporaryDirectory(prefix="genos-trial-") as tmp:
        bundle = _trial_bundle(Path(tmp), runtime.state_root, config, id_map)
        argv = runtime.for_network("none").argv("create", "--bundle", str(bundle), trial_id)
        code, _, err = await call(argv, 30.0, bundle / "output")
        await call(runtime.argv("delete", "--force", trial_id), 30.0)
    _remove_trial_cgroups(trial_id)
    if code == 0:
        return None
    return err.strip().splitlines()[-1] if err.strip() else f"exit {code}"


async def _probe(kind: RuntimeKind, path: str, state_dir: Path) -> OCIRuntime | str:
    code, out, err = await call([path, "--version"], 10.0)
    if code != 0:
        return f"`{kind} --version` failed: {err.strip()}"
    version = out.splitlines()[0] if out else "unknown"
    runtime = OCIRuntime(kind, path, version, state_dir)
    problem = await _trial(runtime)
    logger.info("runtime %s: %s", kind, problem or f"usable ({version})")
    return problem or runtime


async def userns_problem(runtime: OCIRuntime, id_map: IdMap) -> str | None:
    """Why ``runtime`` cannot run containers in a user namespace here (None: it can).

    A trial container with ``id_map`` is created once; the answer is cached
    like :func:`detect`'s.
    """
    key = _cache_key(runtime.path) + ":userns"

    async def trial() -> str:
        return await _trial(runtime, id_map) or "ok"

    found = await _probe_once(key, runtime.state_root.parent, trial)
    return None if found == "ok" else str(found)


def _remove_trial_cgroups(trial_id: str) -> None:
    for path in Path("/sys/fs/cgroup").glob(f"*/{cgroups.parent()}/{trial_id}"):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        Path("/sys/fs/cgroup", cgroups.parent(), trial_id).rmdir()


_CRIU: list[str | None] = []


def _criu_reason(lines: list[str], code: int) -> str:
    """The first real complaint of ``criu check`` (not its helpers' exit notes)."""
    errors = [line for line in lines if line.startswith("Error") and "exited, status" not in line]
    if not errors:
        return lines[-1] if lines else f"exit {code}"
    return errors[0].split("): ", 1)[-1]


async def criu_problem() -> str | None:
    """Why CRIU cannot checkpoint here (``None`` if it can); probed once.

    Returns:
        A one-line reason, or ``None``.
    """
    if not _CRIU:
        path = shutil.which("criu")
        if path is None:
            _CRIU.append("criu is not installed")
        else:
            code, out, err = await call([path, "check"], 30.0)
            lines = (err.strip() or out.strip()).splitlines()
            _CRIU.append(None if code == 0 else _criu_reason(lines, code))
    return _CRIU[0]
