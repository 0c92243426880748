"""Network sandbox: namespaces, nftables policy, the Tor gateway, links, teardown.

Every probe runs inside an environment's namespace and targets only test hosts
of our own (see ``conftest.py``); blocked paths are shown against those hosts
and by reading the rules back with ``nft -j``.
"""

from __future__ import annotations

import ipaddress
import json
import pwd
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genos.errors import CapabilityError, ExternalError, InputError, NotFoundError, StateError
from genos.ids import new_env_id
from genos.sandbox import audit, netns, nft
from genos.sandbox.network import NetworkSandbox
from genos.spec import AllowRule, Network, NetworkMode

from .conftest import (
    BRIDGE_PORT,
    CANARY_PORT,
    HOST_A,
    HOST_B,
    HOST_C,
    HOST_D,
    PRIVATE,
    PRIVATE_DNS,
    UPLINK_HOST,
    UPLINK_PEER,
    Factory,
    FakeResolver,
    PrivateNet,
    echo_server,
    make_sandbox,
    probe,
    sh,
    wait_for,
)

pytestmark = pytest.mark.root

TOR_GW = "10.152.152.1"
INTERNET = Network(mode=NetworkMode.INTERNET)
TOR = Network(mode=NetworkMode.TOR)
SOCKS5_HELLO = b"\x05\x01\x00"  # RFC 1928 3: version 5, one method, "no authentication"
SOCKS5_CHOICE = b"\x05\x00"  # version 5, method "no authentication" selected
GENOS_NAME = re.compile(r"^(genos-[a-z0-9]{10}(-tor)?|gh-[a-z0-9]{10})$")


def allowlist(*rules: AllowRule, domains: tuple[str, ...] = ()) -> Network:
    return Network(mode=NetworkMode.ALLOWLIST, allow=list(rules), domains=list(domains))


def links_in(netns_name: str) -> list[str]:
    """Interface names inside a namespace."""
    out = sh("ip", "-n", netns_name, "-o", "link")
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def rules(table: dict[str, Any], chain: str) -> list[list[dict[str, Any]]]:
    """The expressions of each rule of ``chain``, in order."""
    return [
        item["rule"]["expr"]
        for item in table["nftables"]
        if "rule" in item and item["rule"]["chain"] == chain
    ]


def chain_info(table: dict[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    """Chain name -> (hook, policy)."""
    return {
        item["chain"]["name"]: (item["chain"].get("hook"), item["chain"].get("policy"))
        for item in table["nftables"]
        if "chain" in item
    }


def meta(key: str, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}}


def field(proto: str, name: str, right: Any, op: str = "==") -> dict[str, Any]:
    return {
        "match": {"op": op, "left": {"payload": {"protocol": proto, "field": name}}, "right": right}
    }


def prefix(cidr: str) -> dict[str, Any]:
    net = ipaddress.ip_network(cidr)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


DROP: dict[str, Any] = {"drop": None}
ACCEPT: dict[str, Any] = {"accept": None}


def host_objects() -> dict[str, set[str]]:
    """Every GenOS-named object on the host, read with the system tools themselves."""
    spaces = {line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line}
    links = {
        line.split(":")[1].strip().split("@")[0] for line in sh("ip", "-o", "link").splitlines()
    }
    tables = {line.split()[-1] for line in sh("nft", "list", "tables").splitlines() if line}
    tor = subprocess.run(["pgrep", "-x", "tor"], capture_output=True, text=True, check=False)
    return {
        "netns": {n for n in spaces if GENOS_NAME.match(n)},
        "links": {n for n in links if GENOS_NAME.match(n)},
        "tables": {n for n in tables if GENOS_NAME.match(n)},
        "tor": set(tor.stdout.split()),
    }


def mentions(objects: dict[str, set[str]], env_id: str) -> list[str]:
    return sorted(name for names in objects.values() for name in names if env_id in name)


@pytest.fixture(autouse=True)
def _audit_in_tmp(monkeypatch: pytest.MonkeyPatch, net_state: Path) -> None:
    """Audit records of these tests go to a data dir of their own."""
    monkeypatch.setenv("GENOS_DATA_DIR", str(net_state / "data"))


@pytest.fixture
def tor_installed() -> None:
    try:
        pwd.getpwnam("debian-tor")
    except KeyError:
        pytest.skip("tor is not installed (scripts/setup.sh installs it)")


@pytest.fixture
def host_listener(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """A TCP listener in the host namespace, bound later by the test."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        yield sock
    finally:
        sock.close()


# -- none ------------------------------------------------------------------


def test_none_has_loopback_only(net_envs: Factory) -> None:
    """Mode none gives a namespace whose only interface is a working loopback."""
    handle = net_envs(Network())
    assert handle.netns_path == Path(f"/run/netns/genos-{handle.env_id}")
    assert handle.netns_path.exists()
    assert (handle.address, handle.gateway, handle.dns) == (None, None, ())
    assert links_in(handle.netns) == ["lo"]
    with echo_server(handle.netns, tcp=[7001], udp=[]):
        assert probe(handle.netns, [("tcp", "127.0.0.1", 7001), ("tcp", HOST_A, 7001)]) == [
            "ok",
            "ENETUNREACH",
        ]


def test_none_has_no_table(net_envs: Factory) -> None:
    """Mode none needs no nftables table: there is no interface to filter."""
    handle = net_envs(Network())
    assert f"genos-{handle.env_id}" not in nft.table_names()


# -- internet --------------------------------------------------------------


def test_internet_reaches_test_host_through_nat(net_envs: Factory, testnet: PrivateNet) -> None:
    """An internet env reaches a public test host by tcp and udp, seen from the NAT address."""
    handle = net_envs(INTERNET)
    assert handle.dns == (PRIVATE_DNS,)
    env_net = ipaddress.IPv4Interface(f"{handle.address}/30").network
    assert env_net == ipaddress.IPv4Interface(f"{handle.gateway}/30").network
    assert env_net.subnet_of(ipaddress.IPv4Network("10.213.0.0/16"))
    assert probe(
        handle.netns, [("tcp", HOST_A, 7001), ("udp", HOST_A, 7002), ("tcp", HOST_B, 7004)]
    ) == ["ok", "ok", "ok"]
    assert f"tcp 7001 {UPLINK_HOST}" in testnet.log.read_text().splitlines()


def test_internet_blocks_private_lan_and_host(
    net_envs: Factory, host_listener: socket.socket
) -> None:
    """Private ranges, the uplink's LAN and the host are dropped; DNS to the resolver passes."""
    handle = net_envs(INTERNET)
    assert handle.gateway is not None
    host_listener.bind((handle.gateway, 7005))
    host_listener.listen()
    results = probe(
        handle.netns,
        [
            ("tcp", PRIVATE, 7001),
            ("udp", PRIVATE, 7002),
            ("tcp", UPLINK_PEER, 7001),
            ("tcp", handle.gateway, 7005),
            ("udp", PRIVATE_DNS, 53),
            ("tcp", PRIVATE_DNS, 53),
            ("tcp", PRIVATE_DNS, 7001),
        ],
    )
    assert results == ["timeout", "timeout", "timeout", "timeout", "ok", "ok", "timeout"]


def test_internet_envs_cannot_reach_each_other(net_envs: Factory) -> None:
    """Two internet envs without links cannot open connections to each other."""
    first, second = net_envs(INTERNET), net_envs(INTERNET)
    assert second.address is not None
    with echo_server(second.netns, tcp=[7001], udp=[7002]):
        assert probe(second.netns, [("tcp", second.address, 7001)]) == ["ok"]
        assert probe(
            first.netns, [("tcp", second.address, 7001), ("udp", second.address, 7002)]
        ) == [
            "timeout",
            "timeout",
        ]


def test_internet_has_no_ipv6(net_envs: Factory) -> None:
    """No IPv6 address but loopback's exists in the env, and the host veth has IPv6 off."""
    handle = net_envs(INTERNET)
    addrs = sh("ip", "-n", handle.netns, "-6", "-o", "addr").splitlines()
    assert [line.split()[1] + " " + line.split()[3] for line in addrs] == ["lo ::1/128"]
    assert sh("ip", "-n", handle.netns, "-6", "route", "show", "default") == ""
    assert netns.read_sysctl(f"net/ipv6/conf/gh-{handle.env_id}/disable_ipv6") == "1"


def test_internet_rules_read_back(net_envs: Factory, testnet: PrivateNet) -> None:
    """The internet table drops host, IPv6, spoofing, other uplinks and never-ranges, and NATs."""
    handle = net_envs(INTERNET)
    veth = f"gh-{handle.env_id}"
    table = nft.read_table(handle.env_id)
    assert chain_info(table) == {
        "input": ("input", "accept"),
        "output": ("output", "accept"),
        "forward": ("forward", "accept"),
        "egress": (None, None),
        "ingress": (None, None),
        "postrouting": ("postrouting", "accept"),
    }
    assert rules(table, "input") == [[meta("iifname", veth), DROP]]
    assert rules(table, "forward") == [
        [meta("iifname", veth), {"jump": {"target": "egress"}}],
        [meta("oifname", veth), {"jump": {"target": "ingress"}}],
    ]
    egress = rules(table, "egress")
    assert egress[0] == [meta("nfproto", "ipv6"), DROP]
    assert egress[1] == [field("ip", "saddr", handle.address, "!="), DROP]
    assert egress[3] == [meta("oifname", testnet.uplink, "!="), DROP]
    assert egress[4] == [
        field("ip", "daddr", PRIVATE_DNS),
        meta("l4proto", {"set": ["tcp", "udp"]}),
        field("th", "dport", 53),
        ACCEPT,
    ]
    never = egress[5][0]["match"]["right"]["set"]
    for cidr in (
        "10.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
    ):
        assert prefix(cidr) in never
    assert prefix("198.18.255.0/30") in never  # the uplink's own LAN
    assert egress[5][1] == DROP
    assert egress[6:] == [[ACCEPT]]
    assert rules(table, "ingress")[-1] == [DROP]
    assert rules(table, "postrouting") == [
        [
            field("ip", "saddr", handle.address),
            meta("oifname", testnet.uplink),
            {"masquerade": None},
        ]
    ]


# -- allowlist -------------------------------------------------------------


ALLOW = allowlist(
    AllowRule(cidr=f"{HOST_A}/32", ports=[7001]),
    AllowRule(cidr=f"{HOST_A}/32", ports=[7002], protocol="udp"),
    AllowRule(cidr="10.214.213.0/24"),
    AllowRule(cidr="2001:db8::/32"),
    domains=("echo.example", "*.dual.example"),
)


def test_allowlist_allows_only_listed(net_envs: Factory, fake_resolver: FakeResolver) -> None:
    """Listed cidr:port pairs and resolved domains are reachable; nothing else, no DNS."""
    handle = net_envs(ALLOW)
    assert handle.dns == ()
    assert handle.hosts == (("dual.example", HOST_C), ("echo.example", HOST_B))
    assert "dual.example" in fake_resolver.asked
    results = probe(
        handle.netns,
        [
            ("tcp", HOST_A, 7001),
            ("tcp", HOST_A, 7004),
            ("udp", HOST_A, 7002),
            ("udp", HOST_A, 53),
            ("tcp", HOST_B, 7001),
            ("tcp", HOST_B, 7004),
            ("udp", HOST_B, 7002),
            ("tcp", HOST_C, 7001),
            ("tcp", HOST_D, 7001),
            ("tcp", PRIVATE, 7001),
            ("udp", PRIVATE_DNS, 53),
        ],
    )
    assert results == [
        "ok",  # listed tcp port
        "timeout",  # same host, other port
        "ok",  # listed udp port
        "timeout",  # same host, unlisted udp port
        "ok",  # domain: all tcp ports
        "ok",
        "timeout",  # domain: tcp only
        "ok",  # wildcard domain, IPv6 answer ignored
        "timeout",  # another host
        "timeout",  # listed, but private ranges are never allowed
        "timeout",  # no DNS in allowlist mode
    ]


def test_allowlist_rules_read_back(net_envs: Factory) -> None:
    """The allowlist table ends with exactly the allow rules and a drop; IPv6 rules are left out."""
    handle = net_envs(ALLOW)
    egress = rules(nft.read_table(handle.env_id), "egress")
    assert egress[-6:] == [
        [field("ip", "daddr", HOST_A), field("tcp", "dport", 7001), ACCEPT],
        [field("ip", "daddr", HOST_A), field("udp", "dport", 7002), ACCEPT],
        [field("ip", "daddr", prefix("10.214.213.0/24")), meta("l4proto", "tcp"), ACCEPT],
        [field("ip", "daddr", HOST_B), meta("l4proto", "tcp"), ACCEPT],
        [field("ip", "daddr", HOST_C), meta("l4proto", "tcp"), ACCEPT],
        [DROP],
    ]
    assert "ip6" not in json.dumps(egress)


def test_allowlist_unresolvable_domain_creates_nothing(
    net_sandbox: NetworkSandbox,
) -> None:
    """A domain that does not resolve fails setup with ExternalError before anything exists."""
    env_id = new_env_id()
    before = host_objects()
    with pytest.raises(ExternalError, match=r"cannot resolve nowhere\.example"):
        net_sandbox.setup(env_id, allowlist(domains=("nowhere.example",)))
    assert host_objects() == before
    assert not (net_sandbox.state_dir / env_id).exists()


# -- tor -------------------------------------------------------------------


@pytest.mark.usefixtures("tor_installed")
def test_tor_env_reaches_only_tor(net_envs: Factory, testnet: PrivateNet) -> None:
    """The env reaches Tor's SOCKS port; no host directly, and DNS goes nowhere else."""
    handle = net_envs(TOR)
    assert (handle.address, handle.gateway, handle.dns) == ("10.152.152.10", TOR_GW, (TOR_GW,))
    assert handle.proxy == "socks5://10.152.152.1:9050"
    assert links_in(handle.netns) == ["lo", "eth0"]
    results = probe(
        handle.netns,
        [
            ("tcp", TOR_GW, 9050, SOCKS5_HELLO, SOCKS5_CHOICE),
            ("tcp", TOR_GW, 9040, b"", b""),  # TransPort only behind the redirect
            ("tcp", TOR_GW, 22),
            ("udp", TOR_GW, 5353),
            ("tcp", HOST_A, CANARY_PORT),  # redirected into Tor, which has no circuit
            ("udp", HOST_A, 53),
            ("udp", PRIVATE_DNS, 53),
            ("tcp", PRIVATE_DNS, 53),
        ],
    )
    assert results == [
        "ok",
        "timeout",
        "timeout",
        "timeout",
        "timeout",
        "timeout",
        "timeout",
        "timeout",
    ]
    assert f"tcp {CANARY_PORT}" not in testnet.log.read_text()
    assert handle.tor_pid is not None
    assert Path(f"/proc/{handle.tor_pid}").exists()


@pytest.mark.usefixtures("tor_installed")
def test_tor_runs_as_its_user_in_the_gateway(net_envs: Factory, testnet: PrivateNet) -> None:
    """Tor runs as debian-tor inside the gateway namespace, serves DNS there, and goes out NAT'd."""
    handle = net_envs(TOR)
    pid = handle.tor_pid
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    uid = int(uid_line.split()[1])  # real uid
    assert uid == pwd.getpwnam("debian-tor").pw_uid
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "tor"
    assert netns.netns_pids(f"genos-{handle.env_id}-tor") == [pid]
    assert " 0198980A:0035 " in Path(f"/proc/{pid}/net/udp").read_text()  # DNSPort 10.152.152.1:53
    # Tor's only configured relay is a bridge on our test host: its connection
    # arrives there from the host's NAT address, through the gateway's uplink.
    expected = f"tcp {BRIDGE_PORT} {UPLINK_HOST}"
    assert wait_for(lambda: expected in testnet.log.read_text().splitlines(), timeout=20)


@pytest.mark.usefixtures("tor_installed")
def test_tor_rules_read_back(net_envs: Factory) -> None:
    """The gateway admits only Tor's ports and forwards nothing; the host lets it out by tcp."""
    handle = net_envs(TOR)
    gateway = netns.in_netns(f"genos-{handle.env_id}-tor", lambda: nft.read_table(handle.env_id))
    assert chain_info(gateway) == {
        "prerouting": ("prerouting", "accept"),
        "input": ("input", "accept"),
        "forward": ("forward", "drop"),
        "output": ("output", "accept"),
    }
    ws0 = meta("iifname", "ws0")
    # nft merges the adjacent 224.0.0.0/4 and 240.0.0.0/4 into one /3.
    assert nft.NEVER_IPV4[-2:] == ("224.0.0.0/4", "240.0.0.0/4")
    never = {"set": [prefix(c) for c in (*nft.NEVER_IPV4[:-2], "224.0.0.0/3")]}
    assert rules(gateway, "prerouting") == [
        [
            ws0,
            field("ip", "daddr", never, "!="),
            meta("l4proto", "tcp"),
            {"redirect": {"port": 9040}},
        ]
    ]
    assert rules(gateway, "input") == [
        [ws0, field("ip", "daddr", TOR_GW), field("tcp", "dport", 9050), ACCEPT],
        [
            ws0,
            field("ip", "daddr", TOR_GW),
            {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
            field("tcp", "dport", 9040),
            ACCEPT,
        ],
        [ws0, field("ip", "daddr", TOR_GW), field("udp", "dport", 53), ACCEPT],
        [ws0, DROP],
    ]
    assert rules(gateway, "forward") == []
    assert (
        netns.in_netns(
            f"genos-{handle.env_id}-tor", lambda: netns.read_sysctl("net/ipv4/ip_forward")
        )
        == "0"
    )
    egress = rules(nft.read_table(handle.env_id), "egress")
    assert egress[-2:] == [[meta("l4proto", "tcp"), ACCEPT], [DROP]]


# -- links -----------------------------------------------------------------


def test_links_need_both_sides(net_envs: Factory, net_sandbox: NetworkSandbox) -> None:
    """Envs that name each other talk; one that names another unanswered reaches no one."""
    alpha = net_envs(Network(mode=NetworkMode.INTERNET, links=["lnk-beta"]), name="lnk-alpha")
    beta = net_envs(Network(mode=NetworkMode.INTERNET, links=["lnk-alpha"]), name="lnk-beta")
    gamma = net_envs(Network(mode=NetworkMode.INTERNET, links=["lnk-alpha"]), name="lnk-gamma")
    assert alpha.address is not None
    assert beta.address is not None
    assert gamma.address is not None
    assert net_sandbox.link(gamma.env_id, alpha.env_id) is False
    with (
        echo_server(alpha.netns, tcp=[7001], udp=[]),
        echo_server(beta.netns, tcp=[7001], udp=[]),
        echo_server(gamma.netns, tcp=[7001], udp=[]),
    ):
        assert probe(alpha.netns, [("tcp", beta.address, 7001), ("tcp", gamma.address, 7001)]) == [
            "ok",
            "timeout",
        ]
        assert probe(beta.netns, [("tcp", alpha.address, 7001)]) == ["ok"]
        assert probe(gamma.netns, [("tcp", alpha.address, 7001)]) == ["timeout"]


def test_link_rules_removed_with_peer(net_envs: Factory, net_sandbox: NetworkSandbox) -> None:
    """A link is one element in each table's peers set, and goes when either env goes."""
    one = net_envs(Network(mode=NetworkMode.INTERNET, links=["set-two"]), name="set-one")
    two = net_envs(
        Network(
            mode=NetworkMode.ALLOWLIST,
            allow=[AllowRule(cidr=f"{HOST_A}/32")],
            links=[one.env_id],
        ),
        name="set-two",
    )

    def peers(env_id: str) -> list[Any]:
        out = sh("nft", "-j", "list", "set", "inet", f"genos-{env_id}", "peers")
        found = [i["set"] for i in json.loads(out)["nftables"] if "set" in i]
        return list(found[0].get("elem", []))

    assert peers(one.env_id) == [{"concat": [f"gh-{two.env_id}", two.address]}]
    assert peers(two.env_id) == [{"concat": [f"gh-{one.env_id}", one.address]}]
    assert net_sandbox.teardown(two.env_id) is True
    assert peers(one.env_id) == []


# -- teardown, rollback, reconcile -------------------------------------------


@pytest.mark.usefixtures("tor_installed")
def test_teardown_leaves_nothing(net_sandbox: NetworkSandbox) -> None:
    """After teardown of one env per mode, the host has exactly the GenOS objects it had before."""
    before = host_objects()
    ids = [new_env_id() for _ in range(4)]
    nets = [Network(), INTERNET, allowlist(AllowRule(cidr=f"{HOST_A}/32")), TOR]
    try:
        for env_id, network in zip(ids, nets, strict=True):
            net_sandbox.setup(env_id, network)
        during = host_objects()
        assert all(mentions(during, env_id) for env_id in ids)
        assert len(during["tor"]) == len(before["tor"]) + 1
    finally:
        removed = [net_sandbox.teardown(env_id) for env_id in ids]
    assert removed == [True, True, True, True]
    assert host_objects() == before
    assert [net_sandbox.teardown(env_id) for env_id in ids] == [False, False, False, False]
    assert not any((net_sandbox.state_dir / env_id).exists() for env_id in ids)


ROLLBACK_CASES = {
    "tor-fails-to-start": (NetworkMode.TOR, {"tor_options": [("NoSuchOption", "1")]}, "tor exited"),
    "nft-rejects-ruleset": (NetworkMode.INTERNET, {"uplinks": ["x" * 20]}, "nft table of"),
}


@pytest.mark.usefixtures("tor_installed")
@pytest.mark.parametrize("case", ROLLBACK_CASES.values(), ids=ROLLBACK_CASES.keys())
def test_failed_setup_rolls_back(
    net_state: Path,
    testnet: PrivateNet,
    fake_resolver: FakeResolver,
    case: tuple[NetworkMode, dict[str, Any], str],
) -> None:
    """A tool failing mid-setup raises ExternalError with its words and leaves nothing behind."""
    mode, overrides, message = case
    sandbox = make_sandbox(net_state, testnet, fake_resolver, **overrides)
    env_id = new_env_id()
    before = host_objects()
    with pytest.raises(ExternalError, match=message) as caught:
        sandbox.setup(env_id, Network(mode=mode))
    assert caught.value.detail != ""
    assert host_objects() == before
    assert not (sandbox.state_dir / env_id).exists()


def test_teardown_after_crash_removes_partial_objects(net_sandbox: NetworkSandbox) -> None:
    """Objects left by a setup that died midway (no state file) are found and removed."""
    env_id = new_env_id()
    before = host_objects()
    try:
        sh("ip", "netns", "add", f"genos-{env_id}")
        sh("ip", "netns", "add", f"genos-{env_id}-tor")
        sh(
            "ip",
            "link",
            "add",
            f"gh-{env_id}",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            f"genos-{env_id}",
        )
        sh("nft", "add", "table", "inet", f"genos-{env_id}")
        owned = net_sandbox.owned()
        assert env_id in owned.env_ids
        assert {f"genos-{env_id}", f"genos-{env_id}-tor"} <= owned.netns
        assert f"gh-{env_id}" in owned.veths
        assert f"genos-{env_id}" in owned.tables
    finally:
        assert net_sandbox.teardown(env_id) is True
    assert host_objects() == before


def test_teardown_all_orphans_spares_kept(net_sandbox: NetworkSandbox, net_envs: Factory) -> None:
    """Orphans are torn down; environments in ``keep`` are left as they are."""
    kept = net_envs(INTERNET)
    orphan = new_env_id()
    sh("ip", "netns", "add", f"genos-{orphan}")
    keep = set(net_sandbox.owned().env_ids) - {orphan}
    assert net_sandbox.teardown_all_orphans(keep) == [orphan]
    assert not Path(f"/run/netns/genos-{orphan}").exists()
    assert kept.netns_path.exists()
    assert probe(kept.netns, [("tcp", HOST_A, 7001)]) == ["ok"]


@pytest.mark.usefixtures("tor_installed")
def test_owned_lists_every_object(net_sandbox: NetworkSandbox, net_envs: Factory) -> None:
    """owned() names each env's namespaces, host veth, table and Tor pid."""
    internet, tor = net_envs(INTERNET), net_envs(TOR)
    owned = net_sandbox.owned()
    for handle in (internet, tor):
        assert handle.netns in owned.netns
        assert f"gh-{handle.env_id}" in owned.veths
        assert f"genos-{handle.env_id}" in owned.tables
        assert handle.env_id in owned.env_ids
    assert f"genos-{tor.env_id}-tor" in owned.netns
    assert tor.tor_pid in owned.tor_pids


# -- errors, handles, audit --------------------------------------------------


def test_bad_env_id_is_input_error(net_sandbox: NetworkSandbox) -> None:
    """An id that is not 10 lower-case alphanumerics is refused before anything happens."""
    with pytest.raises(InputError, match="not an environment id"):
        net_sandbox.setup("../../etc", Network())
    with pytest.raises(InputError, match="not an environment id"):
        net_sandbox.teardown("UPPERCASE1")


def test_setup_twice_is_state_error(net_sandbox: NetworkSandbox, net_envs: Factory) -> None:
    """Setting up an env that already has a network raises StateError and leaves it working."""
    handle = net_envs(INTERNET)
    with pytest.raises(StateError) as caught:
        net_sandbox.setup(handle.env_id, INTERNET)
    assert (caught.value.current, caught.value.required) == ("present", ("absent",))
    assert net_sandbox.handle(handle.env_id) == handle
    assert probe(handle.netns, [("tcp", HOST_A, 7001)]) == ["ok"]


def test_unknown_env_is_not_found(net_sandbox: NetworkSandbox, net_envs: Factory) -> None:
    """handle() and link() of an env without a network raise NotFoundError."""
    known = net_envs(INTERNET)
    missing = new_env_id()
    with pytest.raises(NotFoundError) as caught:
        net_sandbox.handle(missing)
    assert (caught.value.kind, caught.value.name) == ("network", missing)
    with pytest.raises(NotFoundError):
        net_sandbox.link(known.env_id, missing)


@pytest.mark.usefixtures("tor_installed")
def test_bad_tor_option_is_input_error(
    net_state: Path, testnet: PrivateNet, fake_resolver: FakeResolver
) -> None:
    """A tor option that could smuggle in a second torrc line is refused and nothing is left."""
    sandbox = make_sandbox(net_state, testnet, fake_resolver, tor_options=[("Log", "x\nUser root")])
    env_id = new_env_id()
    before = host_objects()
    with pytest.raises(InputError, match="invalid tor option 'Log'"):
        sandbox.setup(env_id, TOR)
    assert host_objects() == before


def test_missing_tool_is_capability_error() -> None:
    """A host tool that is not installed becomes CapabilityError naming it."""
    with pytest.raises(CapabilityError, match="genos-no-such-tool is not installed"):
        netns.run(["genos-no-such-tool"], what="test")


def test_audit_records_lifecycle(net_sandbox: NetworkSandbox) -> None:
    """Setup records created and policy_applied (mode and rules); teardown records destroyed."""
    env_id = new_env_id()
    net_sandbox.setup(env_id, INTERNET)
    net_sandbox.teardown(env_id)
    records = list(audit.read(env_id))
    assert [r["event"] for r in records] == ["created", "policy_applied", "destroyed"]
    assert records[0]["netns"] == f"genos-{env_id}"
    assert records[1]["mode"] == "internet"
    assert "everything else: accept" in records[1]["rules"]
    assert f"gh-{env_id}" in records[2]["removed"]
