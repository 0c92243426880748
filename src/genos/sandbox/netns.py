"""Host plumbing for network namespaces: names, addresses, ip(8) runs, sysctls, what exists.

Names: the env's namespace ``genos-<id>``, its Tor gateway's ``genos-<id>-tor``,
the host end of its veth ``gh-<id>``. Addresses: 10.213.0.0/16 in /30 slots
(host .1, env or gateway .2), allocated under the host-wide lock
``/run/genos/network.lock`` against every address the host already has.

Every host tool runs through :func:`spawn`, which turns a missing tool into
:class:`~genos.errors.CapabilityError` and a failed one into
:class:`~genos.errors.ExternalError` carrying the tool's stderr, so nothing above
this module sees ``CalledProcessError`` or ``OSError``.
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import socket
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from genos.errors import CapabilityError, ExternalError

NETNS_DIR = Path("/run/netns")
ENV_NET = ipaddress.IPv4Network("10.213.0.0/16")
LOCK_PATH = Path("/run/genos/network.lock")
_CLONE_NEWNET = 0x40000000
_TIMEOUT = 30.0
T = TypeVar("T")


class Job:
    """A host tool started by :func:`spawn`; :meth:`wait` collects it."""

    def __init__(self, proc: subprocess.Popen[str], what: str) -> None:
        self._proc = proc
        self._what = what

    def wait(self) -> str:
        """Wait for the tool and return its stdout.

        Raises:
            ExternalError: the tool exited non-zero or hung (stderr in ``detail``).
        """
        try:
            out, err = self._proc.communicate(timeout=_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            self._proc.kill()
            self._proc.communicate()
            raise ExternalError(f"{self._what} timed out", detail=str(exc)) from exc
        if self._proc.returncode != 0:
            raise ExternalError(
                f"{self._what} failed (exit {self._proc.returncode})", detail=err.strip()
            )
        return out


def spawn(argv: Sequence[str], *, stdin: str = "", what: str) -> Job:
    """Start a host tool with ``stdin`` as its input; it runs while the caller goes on.

    Raises:
        CapabilityError: the tool is not installed or may not be run.
    """
    with tempfile.TemporaryFile("w+", encoding="utf-8") as feed:
        feed.write(stdin)
        feed.seek(0)
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=feed,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except FileNotFoundError as exc:
            raise CapabilityError(
                f"{argv[0]} is not installed; the network sandbox needs it"
            ) from exc
        except PermissionError as exc:
            raise CapabilityError(f"not allowed to run {argv[0]}: {exc.strerror}") from exc
    return Job(proc, what)


def run(argv: Sequence[str], *, stdin: str = "", what: str) -> str:
    """Run a host tool to completion and return its stdout (errors as in :func:`spawn`)."""
    return spawn(argv, stdin=stdin, what=what).wait()


def ip_batch(lines: Iterable[str], *, netns: str | None = None, force: bool = False) -> Job:
    """Start one ``ip -batch -`` run for ``lines``, inside ``netns`` when given."""
    argv = ["ip"]
    if netns is not None:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    where = f" in {netns}" if netns else ""
    return spawn(argv, stdin="\n".join(lines) + "\n", what=f"ip{where}")


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` on a thread that has joined network namespace ``name``.

    The thread's sysctl files (``/proc/sys/net``) and the children it spawns
    belong to that namespace; the caller's thread never moves.

    Raises:
        ExternalError: the namespace cannot be joined.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            _setns(name)
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _setns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ExternalError(f"cannot open network namespace {name}", detail=str(exc)) from exc
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise ExternalError(f"cannot join network namespace {name}", detail=os.strerror(err))
    finally:
        os.close(fd)


def write_sysctl(key: str, value: str) -> None:
    """Write ``net/...`` sysctl ``key`` of the calling thread's network namespace.

    Raises:
        ExternalError: the kernel refused the value or the key does not exist.
    """
    path = Path("/proc/sys") / key
    try:
        path.write_text(value, encoding="ascii")
    except OSError as exc:
        raise ExternalError(f"cannot set sysctl {key}", detail=str(exc)) from exc


def read_sysctl(key: str) -> str:
    """Read ``net/...`` sysctl ``key`` ("" if it does not exist)."""
    try:
        return (Path("/proc/sys") / key).read_text(encoding="ascii").strip()
    except OSError:
        return ""


def netns_names() -> list[str]:
    """Names of the namespaces under ``/run/netns``."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def link_names() -> list[str]:
    """Names of the host namespace's network interfaces."""
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is ``/run/netns/<name>`` (like ``ip netns pids``)."""
    try:
        target = (NETNS_DIR / name).stat()
    except OSError:
        return []
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ns = (entry / "ns" / "net").stat()
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry.name))
    return sorted(pids)


def default_uplinks() -> tuple[str, ...]:
    """Interfaces that carry the host's IPv4 default routes (``/proc/net/route``)."""
    names: list[str] = []
    for fields in _route_table():
        if fields[1] == "00000000" and fields[7] == "00000000" and fields[0] not in names:
            names.append(fields[0])
    return tuple(names)


def onlink_networks(interfaces: Iterable[str]) -> tuple[str, ...]:
    """IPv4 networks directly attached to ``interfaces`` (the host's LANs)."""
    wanted = set(interfaces)
    nets: list[str] = []
    for fields in _route_table():
        if fields[0] in wanted and fields[2] == "00000000" and fields[7] != "00000000":
            dest = socket.inet_ntoa(struct.pack("<I", int(fields[1], 16)))
            mask = socket.inet_ntoa(struct.pack("<I", int(fields[7], 16)))
            net = str(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
            if net not in nets:
                nets.append(net)
    return tuple(nets)


def _route_table() -> list[list[str]]:
    try:
        lines = Path("/proc/net/route").read_text(encoding="ascii").splitlines()[1:]
    except OSError:
        return []
    return [line.split() for line in lines if len(line.split()) >= 8]


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, ...]:
    """IPv4 name servers of the host an environment could reach (loopback ones cannot)."""
    try:
        lines = resolv_conf.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ()
    found: list[str] = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if addr.version == 4 and not addr.is_loopback and str(addr) not in found:
                found.append(str(addr))
    return tuple(found)


def local_ipv4() -> set[str]:
    """Every IPv4 address assigned in the host namespace (``/proc/net/fib_trie``)."""
    try:
        lines = Path("/proc/net/fib_trie").read_text(encoding="ascii").splitlines()
    except OSError:
        return set()
    found: set[str] = set()
    last = ""
    for line in lines:
        text = line.strip()
        if text.startswith(("|--", "+--")):
            last = text.split()[1]
        elif text == "/32 host LOCAL":
            found.add(last)
    return found


# -- names, addresses, ip lines -------------------------------------------------


def env_ns(env_id: str) -> str:
    return f"genos-{env_id}"


def gateway_ns(env_id: str) -> str:
    return f"genos-{env_id}-tor"


def host_veth(env_id: str) -> str:
    return f"gh-{env_id}"


def slot_addresses(slot: int) -> tuple[str, str]:
    """Host side and env side of /30 number ``slot`` in 10.213.0.0/16."""
    base = ENV_NET.network_address + 4 * slot
    return str(base + 1), str(base + 2)


def free_slot(taken: set[str]) -> int:
    """The lowest /30 whose host address is neither on the host nor in ``taken``.

    Call it under :func:`host_lock`, and hold the lock until the address is assigned.

    Raises:
        ExternalError: 10.213.0.0/16 is full.
    """
    used = local_ipv4() | taken
    for slot in range(ENV_NET.num_addresses // 4):
        if slot_addresses(slot)[0] not in used:
            return slot
    raise ExternalError("no free address for another environment in 10.213.0.0/16")


@contextmanager
def host_lock() -> Iterator[None]:
    """Serialise address allocation across every GenOS process on the host."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def host_lines(env_id: str, host: str, *, tor: bool) -> list[str]:
    """ip lines creating the namespaces and the veth whose host end is ``host``/30."""
    inner, peer = (gateway_ns(env_id), "up0") if tor else (env_ns(env_id), "eth0")
    veth = host_veth(env_id)
    lines = [f"netns add {env_ns(env_id)}"]
    if tor:
        lines.append(f"netns add {inner}")
    lines += [
        f"link add {veth} type veth peer name {peer} netns {inner}",
        f"link set {veth} addrgenmode none",
        f"addr add {host}/30 dev {veth}",
        f"link set {veth} up",
    ]
    if tor:
        lines.append(f"link add ws0 netns {inner} type veth peer name eth0 netns {env_ns(env_id)}")
    return lines


def inner_lines(dev: str, address: str, gateway: str, prefix: int) -> list[str]:
    """ip lines run inside a namespace: loopback up, ``dev`` addressed, default route."""
    return [
        "link set lo up",
        f"link set {dev} addrgenmode none",  # no IPv6 link-local address either
        f"addr add {address}/{prefix} dev {dev}",
        f"link set {dev} up",
        f"route add default via {gateway} dev {dev}",
    ]


def enable_forwarding(veth: str, uplinks: Sequence[str]) -> None:
    """Let ``veth`` (outbound) and ``uplinks`` (replies) forward IPv4; IPv6 off on ``veth``.

    IPv4 forwarding is decided by the interface a packet comes in on, so
    nothing else on the host starts forwarding.
    """
    write_sysctl(f"net/ipv4/conf/{veth}/forwarding", "1")
    write_sysctl(f"net/ipv6/conf/{veth}/disable_ipv6", "1")
    for uplink in uplinks:
        if read_sysctl(f"net/ipv4/conf/{uplink}/forwarding") == "0":
            write_sysctl(f"net/ipv4/conf/{uplink}/forwarding", "1")


def wait_all(jobs: Sequence[Job]) -> None:
    """Wait for every job, then raise the first failure."""
    failures: list[ExternalError] = []
    for job in jobs:
        try:
            job.wait()
        except ExternalError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


def collect(job: Job) -> str:
    """Wait for ``job``; its failure as text ("" if it succeeded)."""
    try:
        job.wait()
    except ExternalError as exc:
        return f"{exc.message}: {exc.detail}"
    return ""
