"""The etcd client: aetcd over a mutual-TLS gRPC channel to every member of the cluster.

aetcd (1.0, asyncio, maintained) speaks etcd's v3 gRPC API but only opens
plain channels; :class:`EtcdClient` opens a ``grpc.aio`` secure channel
with the member certificate of :mod:`genos.cluster.pki` and otherwise is
aetcd as it is. All members go in one target (``ipv4:a:p,b:q,...``): gRPC's
``pick_first`` connects to the first that answers and moves on when it
fails, so losing a member (not the quorum) costs one reconnect; the channel
retries calls etcd answers ``UNAVAILABLE`` while its members elect a leader
(:data:`RETRY_CONFIG`).

Failures of the client are translated here: :class:`~genos.errors.ClusterUnavailableError`
(etcd cannot be reached or has no quorum: a ``503`` above) and
:class:`~genos.errors.ExternalError` for the rest. :func:`watch` is the one
watch loop everything uses: it resumes after a broken stream from the
revision after the last event it saw, and says so when etcd compacted that
history away (the caller lists again).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
from aetcd import exceptions as etcd_errors
from aetcd import rpc
from aetcd.watcher import Watcher

from genos.cluster.pki import Identity
from genos.errors import ClusterUnavailableError, ExternalError, InputError

log = logging.getLogger("genos.cluster.etcd")
T = TypeVar("T")
SERVER_NAME = "genos-etcd"  # every member's certificate names it; the channel checks it
RETRY_PAUSE = 0.2
# What etcd says when a request was lost to a leader election (worth making again).
ELECTION_SIGNS = ("leader failure", "leader changed", "no leader", "request timed out")
# While the members elect a new leader (one was lost), etcd answers UNAVAILABLE
# ("request timed out, possibly due to previous leader failure"); etcd's own
# client retries, and so does the channel here: every unary call, a few times
# with backoff, within the caller's deadline (:func:`call`). A retried write
# that had been applied is harmless here: puts write the same value again,
# assignments are compare-and-swap (a second try finds the first one's owner),
# and an extra lease lapses by itself. Watches are streams: :func:`watch` resumes them.
RETRY_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": f"etcdserverpb.{name}"} for name in ("KV", "Lease", "Cluster",
                                                              "Maintenance")],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.2s", "maxBackoff": "1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
}]})  # fmt: skip


@dataclass(frozen=True)
class Event:
    """A change of one key: ``kind`` is ``put`` or ``delete``; ``value`` b"" for a delete."""

    kind: str
    key: bytes
    value: bytes
    revision: int


class Resync(Exception):  # noqa: N818 - a signal, not an error
    """The history a watch needed was compacted: list again from scratch."""


def _target(endpoints: Sequence[str]) -> str:
    hosts = [e.split("://", 1)[-1].rstrip("/") for e in endpoints]
    if not hosts:
        raise InputError("no etcd endpoints")
    try:
        for host in hosts:
            ipaddress.ip_address(host.rsplit(":", 1)[0].strip("[]"))
    except ValueError:
        if len(hosts) > 1:
            raise InputError("several etcd endpoints must be IP addresses") from None
        return f"dns:///{hosts[0]}"
    return "ipv4:" + ",".join(hosts)


class EtcdClient(aetcd.Client):
    """aetcd's client on a mutual-TLS channel to ``endpoints`` (plain without ``identity``).

    Args:
        endpoints: the members' client URLs (``https://127.0.0.1:2379``, ...).
        identity: this member's certificate, key and the cluster's CA.
        timeout: seconds per call.
    """

    def __init__(
        self, endpoints: Sequence[str], identity: Identity | None, timeout: float = 5.0
    ) -> None:
        # gRPC's own deadline is long: :func:`call`'s timeout is what bounds a call, so a
        # write made while the members elect a new leader waits as long as its caller lets it.
        super().__init__(timeout=int(max(30, timeout)), connect_wait_timeout=int(timeout))
        self.endpoints = list(endpoints)
        self._target = _target(endpoints)
        self._identity = identity
        self._call_timeout = timeout
        self._is_connecting: bool = False

    async def connect(self) -> None:
        """Open the channel (once; concurrent callers wait for the first)."""
        if self._connected.is_set():
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            options = [("grpc.lb_policy_name", "pick_first"),
                       ("grpc.keepalive_time_ms", 10_000),
                       ("grpc.keepalive_timeout_ms", 5_000),
                       ("grpc.enable_retries", 1),
                       ("grpc.service_config", RETRY_CONFIG)]  # fmt: skip
            if self._identity is None:
                self.channel = rpc.insecure_channel(self._target, options=options)
            else:
                creds = _credentials(self._identity)
                options.append(("grpc.ssl_target_name_override", SERVER_NAME))
                self.channel = rpc.secure_channel(self._target, creds, options=options)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = Watcher(rpc.WatchStub(self.channel), timeout=None)
            self._connected.set()
        finally:
            self._is_connecting = False


def _credentials(identity: Identity) -> Any:
    import grpc  # noqa: PLC0415 - a dependency of aetcd; only TLS channels need it here

    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca.read_bytes(),
        private_key=identity.key.read_bytes(),
        certificate_chain=identity.cert.read_bytes(),
    )


async def call(
    what: str, work: Awaitable[T] | Callable[[], Awaitable[T]], timeout: float = 5.0
) -> T:
    """Await one etcd call, its failures translated.

    ``work`` may be the call's awaitable, or a function that makes it: then a call
    etcd drops while its members elect a new leader (``UNAVAILABLE``: "request
    timed out, possibly due to previous leader failure", "leader changed") is
    made again until ``timeout`` has passed, as etcd's own client does. Writes
    here may be made twice: see :data:`RETRY_CONFIG` for why that is harmless.

    Raises:
        ClusterUnavailableError: etcd is unreachable or without quorum.
        ExternalError: any other failure of the call.
    """
    if not callable(work):
        return await _once(what, work, timeout)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            return await _once(what, work(), max(left, 0.01))
        except ClusterUnavailableError as exc:
            again = any(s in (exc.detail or "") for s in ELECTION_SIGNS)
            if not again or left <= 2 * RETRY_PAUSE:
                raise
            log.info("etcd %s: %s; again", what, exc.detail)
        await asyncio.sleep(RETRY_PAUSE)


async def _once(what: str, work: Awaitable[T], timeout: float) -> T:
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError as exc:
        raise ClusterUnavailableError(f"etcd did not answer {what} in {timeout:g}s") from exc
    except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError) as exc:
        raise ClusterUnavailableError(f"etcd is unavailable ({what})", detail=str(exc)) from exc
    except etcd_errors.ClientError as exc:
        raise ExternalError(f"etcd refused {what}", detail=str(exc)) from exc
    except rpc.AioRpcError as exc:
        if exc.code() in (rpc.StatusCode.UNAVAILABLE, rpc.StatusCode.DEADLINE_EXCEEDED):
            raise ClusterUnavailableError(f"etcd is unavailable ({what})", detail=str(exc)) from exc
        raise ExternalError(f"etcd refused {what}", detail=str(exc)) from exc


async def watch(
    client: EtcdClient, prefix: bytes, start_revision: int, *, stop: asyncio.Event | None = None
) -> AsyncIterator[Event]:
    """Every change under ``prefix`` from ``start_revision`` on, across broken streams.

    Raises:
        Resync: etcd compacted the revisions the watch would resume from.
    """
    revision = start_revision
    while stop is None or not stop.is_set():
        try:
            iterator = await client.watch_prefix(prefix, start_revision=revision)
            async for change in iterator:
                kind = "put" if change.kind == aetcd.rtypes.EventKind.PUT else "delete"
                key, value = change.kv.key, change.kv.value or b""
                revision = change.kv.mod_revision + 1
                yield Event(kind, key, value, change.kv.mod_revision)
        except etcd_errors.RevisionCompactedError as exc:
            raise Resync(str(exc)) from exc
        except (etcd_errors.ClientError, rpc.AioRpcError, OSError) as exc:
            log.info("watch on %r broke (%s); resuming at revision %d", prefix, exc, revision)
        await asyncio.sleep(RETRY_PAUSE)


async def close(client: EtcdClient) -> None:
    """Close the client, whatever state its channel is in."""
    with contextlib.suppress(Exception):
        await client.close()
