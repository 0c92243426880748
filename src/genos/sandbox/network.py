"""Per-environment network sandbox: a network namespace and an nftables table per env.

Address plan (IPv4 only; IPv6 is dropped, see below)::

    env namespace   genos-<id>        /run/netns/genos-<id>, joined by the runtime
    host veth       gh-<id>           10.213.0.0/16 cut into /30s: host .1, env .2
    Tor gateway     genos-<id>-tor    uplink on the /30 (host .1, gateway .2);
                                      ws0 10.152.152.1/24 <-> env eth0 10.152.152.10

There is no bridge: every environment sits on its own routed /30, so each of
its packets crosses the host's forward hook with ``iifname gh-<id>``, where its
table decides. Environments cannot reach each other at layer 2 at all.

- ``none``: the namespace with ``lo`` up and nothing else; no table needed.
- ``internet``: NAT out of the uplinks (the default-route interfaces unless
  given); never the host itself, other environments, private, shared,
  link-local, multicast or the uplinks' own LANs. DNS: udp/tcp 53 to the
  host's non-loopback resolvers only (even if private), and the handle says
  which ones to put in the env's ``resolv.conf``.
- ``allowlist``: only the listed networks/ports; domains are resolved once, at
  policy time, through an injectable resolver (IPv4, tcp, all ports) and
  handed back as ``hosts`` pins for ``/etc/hosts``: the env gets no DNS, so
  it cannot tunnel through a resolver. Allow rules never open a never-range.
- ``tor``: see :mod:`genos.sandbox.tor`; the env reaches only Tor (SOCKS and
  DNS on the gateway; TCP to public addresses is redirected into Tor's
  TransPort), the gateway only TCP out of its uplink.
- IPv6: no addresses in any namespace (``addrgenmode none``), disabled on the
  host veth, and dropped by nft.
- links: both environments' specs name each other (by name or id) and both
  are in internet or allowlist mode: each table lets the other's veth and
  address in and out. No one else.

Layout: this module is the API and the per-env state (``<state dir>/<id>/``:
``state.json``, and in tor mode ``torrc``, ``tor.log``, ``tor/``);
:mod:`~genos.sandbox.netns` names, addresses and runs host tools;
:mod:`~genos.sandbox.nft` renders the policies; :mod:`~genos.sandbox.tor`
runs the gateway.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genos.errors import (
    CapabilityError,
    ExternalError,
    InputError,
    NotFoundError,
    StateError,
)
from genos.ids import is_env_id
from genos.paths import data_dir
from genos.sandbox import audit, netns, nft, tor
from genos.sandbox.netns import env_ns, gateway_ns, host_veth, slot_addresses
from genos.spec import Network, NetworkMode

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^genos-([a-z0-9]{10})(-tor)?$")
_VETH_RE = re.compile(r"^gh-([a-z0-9]{10})$")
_ROUTED = (NetworkMode.INTERNET.value, NetworkMode.ALLOWLIST.value)
_EGRESS: dict[NetworkMode, nft.Egress] = {
    NetworkMode.INTERNET: "internet",
    NetworkMode.ALLOWLIST: "allowlist",
    NetworkMode.TOR: "tor",
}

Resolver = Callable[[str], Sequence[str]]


def resolve_ipv4(domain: str) -> list[str]:
    """The IPv4 addresses of ``domain`` from the host's resolver (raises ``OSError``)."""
    infos = socket.getaddrinfo(domain, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class NetHandle:
    """What the runtime needs to put an environment on its network.

    ``dns`` goes into the env's ``resolv.conf``, ``hosts`` into its
    ``/etc/hosts``; ``proxy`` is Tor's SOCKS address in tor mode.
    """

    env_id: str
    mode: NetworkMode
    netns: str
    netns_path: Path
    address: str | None = None
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    hosts: tuple[tuple[str, str], ...] = ()
    proxy: str | None = None
    tor_pid: int | None = None


@dataclass(frozen=True)
class HostNetState:
    """Every GenOS network object present on the host."""

    netns: frozenset[str] = field(default_factory=frozenset)
    veths: frozenset[str] = field(default_factory=frozenset)
    tables: frozenset[str] = field(default_factory=frozenset)
    tor_pids: frozenset[int] = field(default_factory=frozenset)

    @property
    def env_ids(self) -> frozenset[str]:
        """Ids of the environments that own any of these objects."""
        names = [*self.netns, *self.tables, *(v.replace("gh-", "genos-", 1) for v in self.veths)]
        return frozenset(m.group(1) for n in names if (m := _NAME_RE.match(n)))


class NetworkSandbox:
    """Creates, links and removes environments' network namespaces and policies.

    Args:
        state_dir: per-env state (default ``<data dir>/network``).
        uplinks: interfaces env traffic may leave by (default: the default-route ones).
        dns_servers: resolvers internet-mode envs may use (default: the host's).
        resolver: turns an allowlist domain into IPv4 addresses.
        tor_options: extra ``torrc`` lines for every gateway (bridges, ...).
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        uplinks: Sequence[str] | None = None,
        dns_servers: Sequence[str] | None = None,
        resolver: Resolver = resolve_ipv4,
        tor_options: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.state_dir = state_dir if state_dir is not None else data_dir() / "network"
        self._uplinks = tuple(uplinks) if uplinks is not None else None
        self._dns = tuple(dns_servers) if dns_servers is not None else None
        self._resolver = resolver
        self._tor_options = tuple(tor_options)

    # -- public verbs ---------------------------------------------------------

    def setup(self, env_id: str, network: Network, *, name: str | None = None) -> NetHandle:
        """Create the namespace and policy of ``env_id``; roll everything back on failure.

        Args:
            env_id: the environment id.
            network: the spec's network section.
            name: the environment's name, which other environments' links may use.

        Returns:
            The handle the runtime joins the namespace with.

        Raises:
            InputError: ``env_id`` is not an environment id.
            StateError: the environment already has a network.
            CapabilityError: not root, or a tool (ip, nft, tor) is missing.
            ExternalError: a tool failed or an allowlist domain did not resolve.
        """
        _check_id(env_id)
        if os.geteuid() != 0:
            raise CapabilityError("the network sandbox needs root (CAP_NET_ADMIN on the host)")
        if self._state_path(env_id).exists() or (netns.NETNS_DIR / env_ns(env_id)).exists():
            raise StateError("present", ["absent"], action=f"set up network of {env_id}")
        started = time.perf_counter()
        allow, hosts = (
            nft.compile_allow(network, self._resolver)
            if network.mode is NetworkMode.ALLOWLIST
            else ((), {})
        )
        state: dict[str, Any] = {
            "env_id": env_id,
            "name": name,
            "mode": network.mode.value,
            "links": list(network.links),
            "linked": [],
            "hosts": hosts,
        }
        try:
            summary = self._build(env_id, network.mode, state, allow)
        except BaseException:
            try:
                self._remove(env_id)
            except ExternalError:
                logger.getChild(env_id).exception("rollback of network setup was incomplete")
            raise
        handle = self._handle(state)
        audit.record(
            env_id,
            "created",
            netns=handle.netns,
            address=handle.address,
            gateway=handle.gateway,
            tor_pid=handle.tor_pid,
        )
        audit.record(env_id, "policy_applied", mode=network.mode.value, rules=summary)
        if network.links:
            self._autolink(env_id)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        logger.getChild(env_id).debug("network set up", extra={"ms": elapsed_ms})
        return handle

    def handle(self, env_id: str) -> NetHandle:
        """The handle of an environment set up earlier (also by another instance).

        Raises:
            NotFoundError: no network state for ``env_id``.
        """
        _check_id(env_id)
        state = self._load(env_id)
        if state is None:
            raise NotFoundError("network", env_id)
        return self._handle(state)

    def teardown(self, env_id: str) -> bool:
        """Remove every network object of ``env_id``; safe to repeat and after a crash.

        Returns:
            True if anything was there to remove.

        Raises:
            InputError: ``env_id`` is not an environment id.
            ExternalError: something could not be removed (the rest still is).
        """
        _check_id(env_id)
        removed = self._remove(env_id)
        if removed:
            audit.record(env_id, "destroyed", removed=removed)
        return bool(removed)

    def link(self, env_a: str, env_b: str) -> bool:
        """Let two environments talk if each one's spec names the other (by name or id).

        Returns:
            True if both consent and the rules are in place; False (and no change)
            if either does not name the other or is not in internet/allowlist mode.

        Raises:
            NotFoundError: either environment has no network.
            ExternalError: nft failed.
        """
        with netns.host_lock():  # both state files are read, changed and written
            return self._link(env_a, env_b)

    def _link(self, env_a: str, env_b: str) -> bool:
        a, b = self._load(env_a), self._load(env_b)
        if a is None or b is None:
            raise NotFoundError("network", env_a if a is None else env_b)
        if env_a == env_b or not (_consents(a, b) and _consents(b, a)):
            return False
        if a["mode"] not in _ROUTED or b["mode"] not in _ROUTED:
            return False
        script = nft.render_peer(env_a, host_veth(env_b), slot_addresses(b["slot"])[1], add=True)
        script += nft.render_peer(env_b, host_veth(env_a), slot_addresses(a["slot"])[1], add=True)
        nft.apply(script, what=f"nft link {env_a} {env_b}").wait()
        for mine, other in ((a, env_b), (b, env_a)):
            mine["linked"] = sorted({*mine["linked"], other})
            self._save(mine)
            audit.record(
                mine["env_id"], "policy_applied", mode=mine["mode"], rules=[f"link: {other}"]
            )
        return True

    def owned(self) -> HostNetState:
        """Every GenOS netns, host veth, nft table and Tor pid present on the host."""
        spaces = frozenset(n for n in netns.netns_names() if _NAME_RE.match(n))
        pids = {pid for n in spaces if n.endswith("-tor") for pid in netns.netns_pids(n)}
        return HostNetState(
            netns=spaces,
            veths=frozenset(n for n in netns.link_names() if _VETH_RE.match(n)),
            tables=frozenset(n for n in nft.table_names() if _NAME_RE.match(n)),
            tor_pids=frozenset(pids),
        )

    def teardown_all_orphans(self, keep: set[str]) -> list[str]:
        """Tear down every environment on the host (or in the state dir) not in ``keep``.

        Returns:
            The ids torn down, sorted.
        """
        gone = sorted((set(self.owned().env_ids) | set(self._state_ids())) - keep)
        for env_id in gone:
            self.teardown(env_id)
        return gone

    # -- building and removing --------------------------------------------------

    def _build(
        self, env_id: str, mode: NetworkMode, state: dict[str, Any], allow: Sequence[nft.Allow]
    ) -> list[str]:
        if mode is NetworkMode.NONE:
            with netns.host_lock():
                self._save(state)
                netns.ip_batch([f"netns add {env_ns(env_id)}"]).wait()
            netns.ip_batch(["link set lo up"], netns=env_ns(env_id)).wait()
            return ["loopback only"]
        uplinks = self._uplinks if self._uplinks is not None else netns.default_uplinks()
        jobs: list[netns.Job] = []
        try:
            with netns.host_lock():
                state["slot"] = netns.free_slot(self._taken())
                self._save(state)
                host, inner = slot_addresses(state["slot"])
                policy = self._policy(env_id, mode, inner, uplinks, allow)
                jobs.append(nft.apply(nft.render_host(policy), what=f"nft table of {env_id}"))
                tor_mode = mode is NetworkMode.TOR
                netns.ip_batch(netns.host_lines(env_id, host, tor=tor_mode)).wait()
            netns.enable_forwarding(host_veth(env_id), uplinks)
            if tor_mode:
                jobs += tor.plumb(env_id, host, inner)
            else:
                lines = netns.inner_lines("eth0", inner, host, 30)
                jobs.append(netns.ip_batch(lines, netns=env_ns(env_id)))
        except BaseException:
            for job in jobs:  # never roll back while a run could still create things
                netns.collect(job)
            raise
        netns.wait_all(jobs)
        if tor_mode:
            self._env_dir(env_id).chmod(0o711)  # tor's user enters it to reach its data
            state["tor_pid"] = tor.start(
                gateway_ns(env_id), self._env_dir(env_id), self._tor_options
            )
            self._save(state)
        return policy.summary()

    def _policy(
        self,
        env_id: str,
        mode: NetworkMode,
        source: str,
        uplinks: tuple[str, ...],
        allow: Sequence[nft.Allow],
    ) -> nft.HostPolicy:
        dns = self._dns if self._dns is not None else netns.host_resolvers()
        return nft.HostPolicy(
            env_id=env_id,
            veth=host_veth(env_id),
            source=source,
            egress=_EGRESS[mode],
            uplinks=uplinks,
            blocked=nft.NEVER_IPV4 + netns.onlink_networks(uplinks),
            dns=dns if mode is NetworkMode.INTERNET else (),
            allow=tuple(allow),
        )

    def _autolink(self, env_id: str) -> None:
        for other in self._state_ids():
            if other != env_id:
                with suppress(NotFoundError):
                    self.link(env_id, other)

    def _remove(self, env_id: str) -> list[str]:
        state = self._load(env_id) or {}
        gw = gateway_ns(env_id)
        pids = {*netns.netns_pids(gw), *([state["tor_pid"]] if state.get("tor_pid") else [])}
        config = self._env_dir(env_id) / "torrc"
        removed = [f"tor {pid}" for pid in sorted(pids) if tor.stop(pid, gw, config)]
        with netns.host_lock():
            self._unlink_peers(env_id, state)
        lines = []
        if host_veth(env_id) in netns.link_names():
            lines.append(f"link del {host_veth(env_id)}")
            removed.append(host_veth(env_id))
        for space in (env_ns(env_id), gw):
            if (netns.NETNS_DIR / space).exists():
                lines.append(f"netns del {space}")
                removed.append(space)
        jobs = [netns.ip_batch(lines, force=True)] if lines else []
        if state.get("mode") != NetworkMode.NONE.value:  # unknown state: remove it anyway
            jobs.append(nft.apply(nft.render_delete(env_id), what=f"nft delete of {env_id}"))
        errors = [e for e in map(netns.collect, jobs) if e]
        if self._env_dir(env_id).exists():
            shutil.rmtree(self._env_dir(env_id), ignore_errors=True)
            removed.append("state")
        left = [n for n in (env_ns(env_id), gw) if (netns.NETNS_DIR / n).exists()]
        left += [n for n in (host_veth(env_id),) if n in netns.link_names()]
        if left or errors:
            what = ", ".join(left) or "nft table"
            raise ExternalError(f"could not remove {what} of {env_id}", detail="\n".join(errors))
        return removed

    def _unlink_peers(self, env_id: str, state: dict[str, Any]) -> None:
        if "slot" not in state:
            return
        address = slot_addresses(state["slot"])[1]
        for peer in state.get("linked", []):
            other = self._load(peer)
            if other is None:
                continue
            script = nft.render_peer(peer, host_veth(env_id), address, add=False)
            with suppress(ExternalError):  # the peer's table may be gone already
                nft.apply(script, what=f"nft unlink {peer}").wait()
            other["linked"] = [p for p in other["linked"] if p != env_id]
            self._save(other)

    # -- state ----------------------------------------------------------------

    def _env_dir(self, env_id: str) -> Path:
        return self.state_dir / env_id

    def _state_path(self, env_id: str) -> Path:
        return self._env_dir(env_id) / "state.json"

    def _state_ids(self) -> list[str]:
        try:
            names = [p.name for p in self.state_dir.iterdir()]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_env_id(n) and self._state_path(n).exists())

    def _load(self, env_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._state_path(env_id).read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data

    def _save(self, state: dict[str, Any]) -> None:
        path = self._state_path(state["env_id"])
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        tmp.replace(path)

    def _taken(self) -> set[str]:
        """Host addresses of slots this state dir holds (their veth may not exist yet)."""
        states = (self._load(i) for i in self._state_ids())
        return {slot_addresses(s["slot"])[0] for s in states if s and "slot" in s}

    def _handle(self, state: dict[str, Any]) -> NetHandle:
        env_id, mode = state["env_id"], NetworkMode(state["mode"])
        ns = env_ns(env_id)
        if mode is NetworkMode.NONE:
            return NetHandle(env_id, mode, ns, netns.NETNS_DIR / ns)
        if mode is NetworkMode.TOR:
            return NetHandle(
                env_id,
                mode,
                ns,
                netns.NETNS_DIR / ns,
                address=tor.WORKSTATION,
                gateway=tor.GATEWAY,
                dns=(tor.GATEWAY,),
                proxy=f"socks5://{tor.GATEWAY}:{tor.SOCKS_PORT}",
                tor_pid=state.get("tor_pid"),
            )
        host, inner = slot_addresses(state["slot"])
        dns = self._dns if self._dns is not None else netns.host_resolvers()
        pins = tuple((d, a) for d, addrs in sorted(state["hosts"].items()) for a in addrs)
        return NetHandle(
            env_id,
            mode,
            ns,
            netns.NETNS_DIR / ns,
            address=inner,
            gateway=host,
            dns=dns if mode is NetworkMode.INTERNET else (),
            hosts=pins,
        )


def _check_id(env_id: str) -> None:
    if not is_env_id(env_id):
        raise InputError(f"not an environment id: {env_id!r}")


def _consents(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Does ``a``'s spec name ``b`` (by name or id)?"""
    names = {b["env_id"], b.get("name")} - {None}
    return bool(names & set(a.get("links", [])))
