"""Fixtures for the network sandbox tests: a private "internet" of our own test hosts.

Network safety: every address used here lives in a namespace these fixtures
create. ``198.18.213.0/24`` (benchmarking range) and ``10.214.213.0/24`` (a
"private" network) are routed by the host only into the test-net namespace,
through its own veth, which is also the sandbox's only uplink; so NAT'd
traffic can leave only towards our test hosts and nothing reaches the real
uplink.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from genos.ids import new_env_id
from genos.runtime.images import ImageStore, Layer
from genos.sandbox.network import NetHandle, NetworkSandbox
from genos.spec import EnvironmentSpec, Network
from tests.sandbox.probes import Env, probed_env

UPLINK_HOST = "198.18.255.1"  # host side of the test uplink (the NAT source)
UPLINK_PEER = "198.18.255.2"  # test-net side: on the uplink's own LAN
HOST_A = "198.18.213.2"  # "internet" test hosts
HOST_B = "198.18.213.3"
HOST_C = "198.18.213.4"
HOST_D = "198.18.213.5"
PRIVATE = "10.214.213.2"  # a "private" test host
PRIVATE_DNS = "10.214.213.53"  # the resolver internet-mode envs are given
TEST_HOSTS = (HOST_A, HOST_B, HOST_C, HOST_D, PRIVATE, PRIVATE_DNS)
TCP_PORTS = (53, 7001, 7004, 7777, 9001)
UDP_PORTS = (53, 7002)
BRIDGE_PORT = 9001  # Tor's bridge in the tests: a test host, so Tor talks only to us
CANARY_PORT = 7777  # only Tor-mode envs aim here: nothing may ever arrive

ECHO_SERVER = r"""
import json, selectors, socket, sys
tcp, udp, log = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
addresses = json.loads(sys.argv[4])
sel = selectors.DefaultSelector()
def note(kind, port, peer):
    with open(log, "a") as fh:
        fh.write(f"{kind} {port} {peer[0]}\n")
for port in tcp:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, ("accept", port))
for port in udp:
    for address in addresses:  # one per address, so replies leave from the address asked
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((address, port))
        sel.register(u, selectors.EVENT_READ, ("udp", port))
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        kind, port = key.data
        if kind == "accept":
            conn, peer = key.fileobj.accept()
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ, ("conn", port))
            note("tcp", port, peer)
        elif kind == "conn":
            try:
                data = key.fileobj.recv(4096)
                if data:
                    key.fileobj.sendall(data)
                    continue
            except OSError:
                pass
            sel.unregister(key.fileobj); key.fileobj.close()
        else:
            data, peer = key.fileobj.recvfrom(4096)
            key.fileobj.sendto(data, peer)
            note("udp", port, peer)
"""

PROBE = r"""
import errno, json, socket, sys, threading
targets, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
results = [""] * len(targets)
def one(i, proto, host, port, send, expect):
    send, expect = bytes.fromhex(send), bytes.fromhex(expect)
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.sendall(send)
                got = b""
                while len(got) < len(expect):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(send, (host, port))
                got = s.recv(4096)
        results[i] = "ok" if got[: len(expect)] == expect else "wrong"
    except socket.timeout:
        results[i] = "timeout"
    except ConnectionRefusedError:
        results[i] = "refused"
    except OSError as exc:
        results[i] = errno.errorcode.get(exc.errno or 0, str(exc))
threads = [threading.Thread(target=one, args=(i, *t)) for i, t in enumerate(targets)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results))
"""

PAYLOAD = b"genos-probe"


def sh(*argv: str, stdin: str = "") -> str:
    """Run a command for the test harness; fail loudly with its stderr."""
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc.stdout


def probe(
    netns: str,
    targets: Sequence[tuple[str, str, int] | tuple[str, str, int, bytes, bytes]],
    timeout: float = 0.8,
) -> list[str]:
    """From inside ``netns``, try each ``(proto, host, port[, send, expect])``; all at once.

    Each result is ``ok`` (the expected answer came), ``timeout`` (dropped),
    ``refused``, ``wrong`` or an errno name such as ``ENETUNREACH``.
    """
    full = [(*t, PAYLOAD, PAYLOAD) if len(t) == 3 else t for t in targets]
    wire = [[p, h, port, send.hex(), expect.hex()] for p, h, port, send, expect in full]
    out = sh(
        "ip", "netns", "exec", netns, sys.executable, "-c", PROBE, json.dumps(wire), str(timeout)
    )
    results: list[str] = json.loads(out)
    return results


@contextmanager
def echo_server(
    netns: str,
    tcp: Sequence[int] = TCP_PORTS,
    udp: Sequence[int] = UDP_PORTS,
    addresses: Sequence[str] = ("0.0.0.0",),  # noqa: S104 - inside a namespace of ours
) -> Iterator[Path]:
    """An echo server in ``netns`` (a process we own); yields the file it logs peers to."""
    fd, name = tempfile.mkstemp(prefix="genos-echo-", suffix=".log")
    os.close(fd)
    log = Path(name)
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", ECHO_SERVER]
    proc = subprocess.Popen(
        [
            *argv,
            json.dumps(list(tcp)),
            json.dumps(list(udp)),
            str(log),
            json.dumps(list(addresses)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr and proc.stderr.read()
        yield log
    finally:
        proc.kill()
        proc.communicate()
        log.unlink(missing_ok=True)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@dataclass(frozen=True)
class PrivateNet:
    """Our private internet: one namespace holding every test host, behind one veth."""

    netns: str
    uplink: str
    log: Path


@pytest.fixture(scope="session")
def testnet() -> Iterator[PrivateNet]:
    """The test-net namespace with its hosts, routes and echo server; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    suffix = secrets.token_hex(3)
    ns, veth = f"gtest-{suffix}", f"gt-{suffix}"
    try:
        sh("ip", "netns", "add", ns)
        sh(
            "ip",
            "-batch",
            "-",
            stdin="\n".join(
                [
                    f"link add {veth} type veth peer name up0 netns {ns}",
                    f"addr add {UPLINK_HOST}/30 dev {veth}",
                    f"link set {veth} up",
                    f"route add 198.18.213.0/24 via {UPLINK_PEER} dev {veth}",
                    f"route add 10.214.213.0/24 via {UPLINK_PEER} dev {veth}",
                ]
            )
            + "\n",
        )
        inner = ["link set lo up", f"addr add {UPLINK_PEER}/30 dev up0", "link set up0 up"]
        inner += [f"addr add {a}/32 dev lo" for a in TEST_HOSTS]
        inner.append(f"route add default via {UPLINK_HOST}")
        sh("ip", "-n", ns, "-batch", "-", stdin="\n".join(inner) + "\n")
        with echo_server(ns, addresses=TEST_HOSTS) as log:
            yield PrivateNet(netns=ns, uplink=veth, log=log)
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


class FakeResolver:
    """Resolves allowlist domains from a table; unknown names fail like a real lookup."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, domain: str) -> list[str]:
        self.asked.append(domain)
        if domain not in self.table:
            raise OSError(f"no such domain: {domain}")
        return self.table[domain]


@pytest.fixture(scope="session")
def net_state() -> Iterator[Path]:
    """A state directory Tor's user can enter (pytest's tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="genos-net-test-"))
    root.chmod(0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def fake_resolver() -> FakeResolver:
    """Two known domains; one also has an IPv6 address, which is ignored."""
    return FakeResolver({"echo.example": [HOST_B], "dual.example": [HOST_C, "2001:db8::1"]})


def make_sandbox(
    net_state: Path,
    testnet: PrivateNet,
    resolver: FakeResolver,
    *,
    uplinks: Sequence[str] | None = None,
    tor_options: Sequence[tuple[str, str]] | None = None,
) -> NetworkSandbox:
    """A sandbox whose only uplink is the test net and whose Tor talks only to a test host."""
    return NetworkSandbox(
        net_state / "state",
        uplinks=[testnet.uplink] if uplinks is None else uplinks,
        dns_servers=[PRIVATE_DNS],
        resolver=resolver,
        tor_options=[("UseBridges", "1"), ("Bridge", f"{HOST_A}:{BRIDGE_PORT}")]
        if tor_options is None
        else tor_options,
    )


@pytest.fixture(scope="session")
def net_sandbox(
    net_state: Path, testnet: PrivateNet, fake_resolver: FakeResolver
) -> NetworkSandbox:
    """The sandbox under test (one per session; its envs come from ``net_envs``)."""
    return make_sandbox(net_state, testnet, fake_resolver)


Factory = Callable[..., NetHandle]


@pytest.fixture
def net_envs(net_sandbox: NetworkSandbox) -> Iterator[Factory]:
    """Set up environments with fresh ids; every one is torn down afterwards."""
    made: list[str] = []

    def make(network: Network | None = None, *, name: str | None = None) -> NetHandle:
        env_id = new_env_id()
        made.append(env_id)
        return net_sandbox.setup(env_id, network or Network(), name=name)

    try:
        yield make
    finally:
        for env_id in made:
            net_sandbox.teardown(env_id)


@pytest.fixture(scope="module")
def env(
    image_store: ImageStore,
    desktop_spec: EnvironmentSpec,
    desktop_layers: list[Layer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    """A running desktop environment with the probe in its home (one per test module)."""
    assert desktop_layers
    with probed_env(image_store, desktop_spec, tmp_path_factory) as running:
        yield running
