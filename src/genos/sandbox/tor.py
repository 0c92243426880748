"""The Tor daemon of one environment, running in that environment's gateway namespace.

Like Whonix: the workstation (the environment, ``10.152.152.10``) sees only
the gateway (``10.152.152.1``), where Tor listens for SOCKS, transparent TCP
(the gateway redirects the env's TCP to public addresses there) and DNS. Each
pair is alone in its own namespaces, so the same addresses serve every env.

Tor runs as ``debian-tor`` (it binds its ports as root, then drops
privileges), keeps its data under the environment's state directory, and is
stopped by its pid only after checking that the pid still is our Tor.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from genos.errors import CapabilityError, ExternalError, InputError
from genos.sandbox import netns, nft

GATEWAY = "10.152.152.1"
WORKSTATION = "10.152.152.10"
PREFIX = 24
SOCKS_PORT = 9050
TRANS_PORT = 9040
DNS_PORT = 53
USER = "debian-tor"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 3.0

# Children we started, kept so they are reaped (and never warned about as leaked).
_children: dict[int, subprocess.Popen[bytes]] = {}


def torrc(data_dir: Path, extra: Sequence[tuple[str, str]] = ()) -> str:
    """The configuration of one gateway's Tor; ``extra`` lines come last."""
    lines = [
        f"DataDirectory {data_dir}",
        f"SocksPort {GATEWAY}:{SOCKS_PORT}",
        f"SocksPolicy accept {WORKSTATION}/32, reject *",
        f"TransPort {GATEWAY}:{TRANS_PORT}",
        f"DNSPort {GATEWAY}:{DNS_PORT}",
        f"User {USER}",
        "RunAsDaemon 0",
        "ClientOnly 1",
        "AvoidDiskWrites 1",
        "Log notice stdout",
    ]
    for key, value in extra:
        if not key.isalnum() or "\n" in value or "\r" in value:
            raise InputError(f"invalid tor option {key!r}")
        lines.append(f"{key} {value}")
    return "\n".join(lines) + "\n"


def plumb(env_id: str, host: str, uplink: str) -> list[netns.Job]:
    """Address the gateway (uplink ``uplink``/30 via ``host``; ``ws0``) and the workstation.

    Starts the ip and nft runs and returns them; the namespaces and veths
    exist already (:func:`genos.sandbox.netns.host_lines` with ``tor=True``).
    """
    gw = netns.gateway_ns(env_id)

    def inside() -> netns.Job:
        # A new namespace inherits the host's IPv4 "all"/"default" settings:
        # the gateway must never forward, whatever the host does.
        netns.write_sysctl("net/ipv4/conf/all/forwarding", "0")
        netns.write_sysctl("net/ipv4/conf/default/forwarding", "0")
        script = nft.render_gateway(
            env_id, "ws0", GATEWAY, socks=SOCKS_PORT, trans=TRANS_PORT, dns=DNS_PORT
        )
        return nft.apply(script, what=f"nft gateway table of {env_id}")

    gateway_lines = [
        *netns.inner_lines("up0", uplink, host, 30),
        "link set ws0 addrgenmode none",
        f"addr add {GATEWAY}/{PREFIX} dev ws0",
        "link set ws0 up",
    ]
    return [
        netns.in_netns(gw, inside),
        netns.ip_batch(gateway_lines, netns=gw),
        netns.ip_batch(
            netns.inner_lines("eth0", WORKSTATION, GATEWAY, PREFIX), netns=netns.env_ns(env_id)
        ),
    ]


def start(gateway_netns: str, state: Path, extra: Sequence[tuple[str, str]] = ()) -> int:
    """Start Tor in ``gateway_netns`` and wait until its SOCKS port listens (not for bootstrap).

    Args:
        gateway_netns: the gateway namespace (under ``/run/netns``).
        state: the environment's state directory; Tor's data goes in ``state/tor``.
        extra: further ``torrc`` options, e.g. bridges.

    Returns:
        Tor's pid.

    Raises:
        CapabilityError: tor or its user is missing, or the user cannot enter ``state``.
        ExternalError: tor exited or did not listen in time (its log in ``detail``).
    """
    binary = shutil.which("tor")
    if binary is None:
        raise CapabilityError("tor is not installed; network mode 'tor' needs it")
    try:
        user = pwd.getpwnam(USER)
    except KeyError as exc:
        raise CapabilityError(f"user {USER} does not exist; install the tor package") from exc
    _check_reachable(state, user)
    data = state / "tor"
    data.mkdir(mode=0o700, exist_ok=True)
    os.chown(data, user.pw_uid, user.pw_gid)
    config = state / "torrc"
    config.write_text(torrc(data, extra), encoding="utf-8")
    log = state / "tor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", gateway_netns, binary, "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    _wait_listening(proc, log)
    return proc.pid


def _check_reachable(state: Path, user: pwd.struct_passwd) -> None:
    for path in [state, *state.parents]:
        st = path.stat()
        ok = (
            st.st_mode & 0o001
            or (st.st_uid == user.pw_uid and st.st_mode & 0o100)
            or (st.st_gid == user.pw_gid and st.st_mode & 0o010)
        )
        if not ok:
            raise CapabilityError(f"tor runs as {USER} and cannot enter {path}; make it o+x")


def _wait_listening(proc: subprocess.Popen[bytes], log: Path) -> None:
    # /proc/<pid>/net/tcp shows the sockets of tor's own namespace: listening is
    # seen without sending a packet. Addresses are little-endian hex.
    a, b, c, d = (int(x) for x in GATEWAY.split("."))
    want = f"{d:02X}{c:02X}{b:02X}{a:02X}:{SOCKS_PORT:04X} 00000000:0000 0A"
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ExternalError(f"tor exited with {proc.returncode}", detail=_tail(log))
        try:
            if want in Path(f"/proc/{proc.pid}/net/tcp").read_text(encoding="ascii"):
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise ExternalError("tor did not open its SOCKS port in time", detail=_tail(log))


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(pid: int, gateway_netns: str, config: Path) -> bool:
    """Stop Tor ``pid``: SIGTERM, wait, SIGKILL.

    Only if ``pid`` still is ours: a process in ``gateway_netns``, or one started
    with ``config`` (should the namespace be gone already).

    Returns:
        True if a process was signalled.
    """
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        del _children[pid]
        return False
    if pid not in netns.netns_pids(gateway_netns) and not _started_with(pid, config):
        return False
    _signal(pid, signal.SIGTERM)
    if not _wait_gone(pid, proc, _STOP_TIMEOUT):
        _signal(pid, signal.SIGKILL)
        _wait_gone(pid, proc, _STOP_TIMEOUT)
    _children.pop(pid, None)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.01)
    return False


def _started_with(pid: int, config: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(config).encode() in argv and Path(argv[0].decode(errors="replace")).name == "tor"
