"""The nftables policy of one environment, rendered as one ``nft -f`` transaction.

Every table is ``inet genos-<envid>``. Its base chains only ever *drop*
(policy accept), so tables of different environments, and whatever else the
host has, compose: a packet passes only if no table drops it.

Host table (internet, allowlist, and the Tor gateway's uplink)::

    input    from the env's veth: drop            the host's own addresses
    output   to the env's veth: replies only      no inbound, even from the host
    forward  from the veth -> egress, to it -> ingress
    egress   IPv6 drop; spoofed source drop; linked peers accept; not via an
             uplink drop; [internet: DNS to the host's resolvers accept];
             never-ranges drop; then per mode: accept | allow rules, drop | tcp, drop
    ingress  replies accept; linked peers accept; drop
    nat      masquerade the env's address out of the uplinks

Gateway table (inside the Tor gateway namespace): from the workstation veth only
Tor's SOCKS and DNS ports on the gateway address, and TCP to public addresses
redirected to Tor's TransPort; nothing is forwarded.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from genos.errors import ExternalError
from genos.sandbox import netns
from genos.spec import Network

# Never reachable from an environment, whatever its mode (RFC 6890 special
# purpose, RFC 1918 private, RFC 6598 shared, link-local, multicast, reserved).
NEVER_IPV4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)

Egress = Literal["internet", "allowlist", "tor"]


@dataclass(frozen=True)
class Allow:
    """One allowlist entry: a network, a protocol, and its ports (empty = all)."""

    network: str
    protocol: Literal["tcp", "udp"]
    ports: tuple[int, ...] = ()

    def __str__(self) -> str:
        ports = ",".join(map(str, self.ports)) or "all"
        return f"{self.protocol} {self.network} ports {ports}"


@dataclass(frozen=True)
class HostPolicy:
    """Everything the host table of one environment depends on."""

    env_id: str
    veth: str
    source: str
    egress: Egress
    uplinks: tuple[str, ...]
    blocked: tuple[str, ...] = NEVER_IPV4
    dns: tuple[str, ...] = ()
    allow: tuple[Allow, ...] = field(default_factory=tuple)

    def summary(self) -> list[str]:
        """The policy in short lines, for the audit record."""
        lines = [
            "ipv6: drop",
            f"egress only via: {', '.join(self.uplinks) or 'nothing'}",
            f"never: {', '.join(self.blocked)} and the host's own addresses",
        ]
        if self.dns:
            lines.append(f"dns: {', '.join(self.dns)} port 53")
        if self.egress == "internet":
            lines.append("everything else: accept")
        elif self.egress == "tor":
            lines.append("tcp only (Tor gateway uplink), everything else: drop")
        else:
            lines += [f"allow: {rule}" for rule in self.allow] + ["everything else: drop"]
        return lines


def compile_allow(
    network: Network, resolver: Callable[[str], Sequence[str]]
) -> tuple[tuple[Allow, ...], dict[str, list[str]]]:
    """Allow rules of an allowlist network, with its domains resolved once, now.

    IPv6 networks and answers are left out (environments have no IPv6). A
    domain allows tcp to all ports of its addresses; ``*.example.org`` resolves
    ``example.org``. Addresses in never-ranges stay unreachable (no DNS rebinding
    into the LAN).

    Returns:
        The rules, and each domain's addresses (for the env's ``/etc/hosts``).

    Raises:
        ExternalError: a domain did not resolve, or only to IPv6.
    """
    allow = [
        Allow(rule.cidr, rule.protocol, tuple(sorted(set(rule.ports))))
        for rule in network.allow
        if ipaddress.ip_network(rule.cidr).version == 4
    ]
    hosts: dict[str, list[str]] = {}
    for domain in network.domains:
        base = domain.removeprefix("*.")
        try:
            found = resolver(base)
        except OSError as exc:
            raise ExternalError(f"cannot resolve {base}", detail=str(exc)) from exc
        addresses = sorted({a for a in found if ipaddress.ip_address(a).version == 4})
        if not addresses:
            raise ExternalError(f"{base} has no IPv4 address")
        hosts[base] = addresses
        allow += [Allow(f"{a}/32", "tcp") for a in addresses]
    return tuple(allow), hosts


def table_name(env_id: str) -> str:
    return f"genos-{env_id}"


def _set(items: Sequence[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _quoted(names: Sequence[str]) -> str:
    return _set([f'"{name}"' for name in names])


def render_host(policy: HostPolicy) -> str:
    """The host table for ``policy``, replacing any table of the same name."""
    name = table_name(policy.env_id)
    veth, src = f'"{policy.veth}"', policy.source
    via = f"oifname != {_quoted(policy.uplinks)} drop" if policy.uplinks else "drop"
    egress = [
        "meta nfproto ipv6 drop",
        f"ip saddr != {src} drop",
        "oifname . ip daddr @peers accept",
        via,
    ]
    if policy.dns:
        egress.append(f"ip daddr {_set(policy.dns)} meta l4proto {{ tcp, udp }} th dport 53 accept")
    egress.append(f"ip daddr {_set(policy.blocked)} drop")
    egress += _egress_tail(policy)
    nat = [f"ip saddr {src} oifname {_quoted(policy.uplinks)} masquerade"] if policy.uplinks else []
    return "\n".join(
        [
            f"add table inet {name}",
            f"delete table inet {name}",
            f"table inet {name} {{",
            "set peers {\ntype ifname . ipv4_addr\n}",
            _chain("input", "filter hook input priority filter", [f"iifname {veth} drop"]),
            _chain(
                "output",
                "filter hook output priority filter",
                [f"oifname {veth} ct state established,related accept", f"oifname {veth} drop"],
            ),
            _chain(
                "forward",
                "filter hook forward priority filter",
                [f"iifname {veth} jump egress", f"oifname {veth} jump ingress"],
            ),
            _chain("egress", None, egress),
            _chain(
                "ingress",
                None,
                ["ct state established,related accept", "iifname . ip saddr @peers accept", "drop"],
            ),
            _chain("postrouting", "nat hook postrouting priority srcnat", nat),
            "}",
            "",
        ]
    )


def _egress_tail(policy: HostPolicy) -> list[str]:
    if policy.egress == "internet":
        return ["accept"]
    if policy.egress == "tor":
        return ["meta l4proto tcp accept", "drop"]
    lines = []
    for rule in policy.allow:
        if rule.ports:
            ports = _set([str(p) for p in rule.ports])
            lines.append(f"ip daddr {rule.network} {rule.protocol} dport {ports} accept")
        else:
            lines.append(f"ip daddr {rule.network} meta l4proto {rule.protocol} accept")
    return [*lines, "drop"]


def _chain(name: str, hook: str | None, rules: Sequence[str]) -> str:
    head = [f"type {hook}; policy accept;"] if hook else []
    return "\n".join([f"chain {name} {{", *head, *rules, "}"])


def render_gateway(
    env_id: str, veth: str, address: str, *, socks: int, trans: int, dns: int
) -> str:
    """The table inside the Tor gateway namespace: the workstation reaches only Tor.

    TCP to any public address is redirected to Tor's TransPort (as Whonix does);
    TransPort takes only such redirected connections: a direct one makes Tor
    see itself as the destination ("Possible loop"), a path on which tor
    0.4.9 has been seen to crash. Private destinations are not redirected and
    fall to the drop, as does every datagram except DNS to the gateway.
    """
    name = table_name(env_id)
    where = f'iifname "{veth}"'
    return "\n".join(
        [
            f"add table inet {name}",
            f"delete table inet {name}",
            f"table inet {name} {{",
            _chain(
                "prerouting",
                "nat hook prerouting priority dstnat",
                [f"{where} ip daddr != {_set(NEVER_IPV4)} meta l4proto tcp redirect to :{trans}"],
            ),
            _chain(
                "input",
                "filter hook input priority filter",
                [
                    f"{where} ip daddr {address} tcp dport {socks} accept",
                    f"{where} ip daddr {address} ct status dnat tcp dport {trans} accept",
                    f"{where} ip daddr {address} udp dport {dns} accept",
                    f"{where} drop",
                ],
            ),
            "chain forward {\ntype filter hook forward priority filter; policy drop;\n}",
            _chain(
                "output",
                "filter hook output priority filter",
                [f'oifname "{veth}" ct state established,related accept', f'oifname "{veth}" drop'],
            ),
            "}",
            "",
        ]
    )


def render_delete(env_id: str) -> str:
    """Remove the table if present (``add`` first so a missing table is no error)."""
    name = table_name(env_id)
    return f"add table inet {name}\ndelete table inet {name}\n"


def render_peer(env_id: str, peer_veth: str, peer_address: str, *, add: bool) -> str:
    """Add (or remove) one linked peer in the ``peers`` set of ``env_id``'s table."""
    element = f'add element inet {table_name(env_id)} peers {{ "{peer_veth}" . {peer_address} }}'
    if add:
        return element + "\n"
    return element + "\n" + element.replace("add element", "delete element", 1) + "\n"


def apply(script: str, *, what: str) -> netns.Job:
    """Start one ``nft -f -`` transaction (all of ``script`` or nothing)."""
    return netns.spawn(["nft", "-f", "-"], stdin=script, what=what)


def table_names() -> list[str]:
    """Names of the host namespace's ``inet`` tables."""
    data = json.loads(netns.run(["nft", "-j", "list", "tables"], what="nft list tables"))
    return sorted(
        item["table"]["name"]
        for item in data.get("nftables", [])
        if "table" in item and item["table"].get("family") == "inet"
    )


def read_table(env_id: str) -> dict[str, Any]:
    """The table of ``env_id`` in the calling thread's namespace, as ``nft -j`` JSON."""
    out = netns.run(
        ["nft", "-j", "list", "table", "inet", table_name(env_id)], what="nft list table"
    )
    data: dict[str, Any] = json.loads(out)
    return data
