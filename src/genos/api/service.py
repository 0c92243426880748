"""What the HTTP layer stands on: the engine, accounts, the audit log and the gateway's tokens.

One :class:`Service` per ``genos serve`` process. It authenticates callers
(API tokens, password + TOTP, one-time sign-in links), writes the audit log
of every authentication and lifecycle action, and on first start creates the
``admin`` account and its token (kept root-only in the data directory for the
local CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genos.api.approvals import Approvals
from genos.api.desktops import Desktops
from genos.api.errors import ApiError
from genos.api.security import (
    TotpVerifier,
    VerifiedCache,
    hash_secret,
    hash_token_secret,
    mint_token,
    split_token,
    verify_secret,
)
from genos.audit import AuditLog
from genos.errors import GenOSError, NotFoundError, RegistryError
from genos.gateway.lease import LEASES, Holder
from genos.gateway.tokens import TokenAuthority
from genos.orchestrator.engine import Engine
from genos.orchestrator.records import EventType, Role, User
from genos.orchestrator.signins import Limits, SigninPolicy, Verdict

log = logging.getLogger("genos.api")

ADMIN = "admin"
LINK_TTL = 600.0
SESSION_TOKEN = "session"  # noqa: S105 - the name given to tokens made by password login
# A hash to check against when the user does not exist, so a wrong name costs
# as long as a wrong password (no user enumeration by timing).
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))
_DUMMY_TOKEN_HASH = hash_token_secret(secrets.token_urlsafe(32))


@dataclass(frozen=True)
class Caller:
    """Who is calling: the user, the token they used, and where from."""

    user: User
    token_id: str
    client: str

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"


class Service:
    """The API's state (see the module docstring).

    Args:
        engine: the started or to-be-started orchestration engine.
        root: the data directory (``api/`` and ``audit/`` are made under it).
        gateway: issues and checks display tokens.
        public_url: the base URL people open (default: taken from each request).
        signin: how sign-in attempts are throttled (:class:`SigninPolicy`).
    """

    def __init__(
        self,
        engine: Engine,
        root: Path,
        gateway: TokenAuthority,
        *,
        public_url: str | None = None,
        signin: SigninPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.signin = signin or SigninPolicy()
        self.accounts = engine.registry.accounts
        self.signins = engine.registry.signins
        self.root = root
        self.gateway = gateway
        self.public_url = public_url.rstrip("/") if public_url else None
        self.audit_log = AuditLog(root / "audit" / "api.jsonl")
        self.verified = VerifiedCache()
        self.totp = TotpVerifier()
        self.ready = False
        self.started = time.time()
        self.accelerator: str | None = None  # "kvm"/"tcg" once a VM driver has probed
        self._engine_started = True
        self.cluster: Any = None  # a ControlPlane when this is a replica of a cluster
        self.desktops = Desktops()  # agents' connections to displays (the computer API)
        self.approvals = Approvals()  # agents' questions to the people watching
        # When an agent's action last reset each environment's idle timer (monotonic).
        self.agent_activity: dict[str, float] = {}
        self._notes: set[asyncio.Task[None]] = set()
        self.engine.when_ended(self._ended)
        self._users: dict[str, tuple[User, float]] = {}
        self._links: dict[str, tuple[str, float]] = {}
        self._pending_totp: dict[str, str] = {}

    async def let_go(self, env_id: str) -> None:
        """Let go of what agents had of an environment no longer running: its connection
        (its screen's pixels), its input lease, and when its agent was last active."""
        self._forget_agent(env_id)
        await self.desktops.drop(env_id)

    def _forget_agent(self, env_id: str) -> None:
        LEASES.drop(env_id)
        self.agent_activity.pop(env_id, None)

    def _ended(self, env_id: str) -> None:
        """:meth:`let_go` of an environment that ended (its connection closes meanwhile)."""
        self._forget_agent(env_id)
        if env_id in self.desktops:
            task = asyncio.get_running_loop().create_task(self.desktops.drop(env_id))
            self._notes.add(task)
            task.add_done_callback(self._notes.discard)

    @property
    def admin_token_path(self) -> Path:
        return self.root / "api" / "admin.token"

    async def start(self, *, engine: bool = True) -> None:
        """Start the engine (its first reconcile), then answer ready.

        Args:
            engine: False for a gateway of its own, which reads the registry
                but leaves the lifecycle to the ``genos serve`` that owns it.
        """
        if engine and self.cluster is not None:
            await self.cluster.start()
        if engine:
            await self.engine.start()
        self._engine_started = engine
        if engine:  # a gateway of its own leaves the registry's events to genos serve
            LEASES.on_change = self._lease_changed
        self.ready = True

    async def aclose(self) -> None:
        """Stop the engine's background work."""
        self.ready = False
        if LEASES.on_change == self._lease_changed:
            LEASES.on_change = None
        await self.desktops.aclose()
        await asyncio.gather(*self._notes, return_exceptions=True)
        if self._engine_started:
            await self.engine.aclose()
        if self.cluster is not None:
            await self.cluster.aclose()

    def _lease_changed(self, env_id: str, holder: Holder | None) -> None:
        """An event of the environment when its input lease changes hands (agents follow it)."""
        who = f"{holder.kind} {holder.name}" if holder else "nobody (free)"
        data = {"lease": holder.as_json() if holder else None}
        task = asyncio.get_running_loop().create_task(self._note(env_id, f"input: {who}", data))
        self._notes.add(task)
        task.add_done_callback(self._notes.discard)

    async def _note(self, env_id: str, message: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(GenOSError):
            await self.engine.note(env_id, EventType.PROGRESS, message, data)

    def audit(self, caller: Caller | None, action: str, **fields: Any) -> None:
        """Append one record to the audit log: who, what, when (added by the log), from where."""
        who = {"user": caller.user.name, "user_id": caller.user.id} if caller else {}
        where = {"client": caller.client} if caller else {}
        self.audit_log.append(action=action, **who, **where, **fields)

    async def bootstrap_admin(self) -> str | None:
        """On first start, create ``admin`` and its token; returns it (shown once) or None."""
        if await self.accounts.users():
            return None
        user = await self.accounts.add_user(ADMIN, "admin")
        token = await self.new_token(user, "admin-cli")
        path = self.admin_token_path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        self.audit_log.append(action="bootstrap", user=ADMIN, user_id=user.id)
        return token

    async def new_token(self, user: User, name: str) -> str:
        """Mint an API token for ``user``; returns its plaintext (the only time it exists)."""
        minted = await asyncio.to_thread(mint_token)
        await self.accounts.add_token(user.id, name, minted.token_id, minted.hashed)
        self.verified.put(minted.plaintext, minted.token_id)
        return minted.plaintext

    async def revoke_token(self, token_id: str) -> None:
        """Revoke a token and drop it from every cache, so it is refused at once."""
        await self.accounts.revoke_token(token_id)
        self.verified.forget(token_id)
        self._users.pop(token_id, None)

    async def authenticate(self, header: str | None, client: str) -> Caller:
        """The caller behind an ``Authorization: Bearer`` header.

        Raises:
            ApiError: 401 when the header is missing, malformed, unknown, revoked or wrong.
        """
        scheme, _, plaintext = (header or "").partition(" ")
        parts = split_token(plaintext.strip()) if scheme.lower() == "bearer" else None
        if parts is None:
            raise ApiError(401, "unauthorized", "a bearer token is required")
        token_id = self.verified.get(plaintext.strip())
        if token_id is None:
            token_id = await self._check_token(parts[0], parts[1])
            self.verified.put(plaintext.strip(), token_id)
        return Caller(await self._user_of_token(token_id), token_id, client)

    async def _check_token(self, token_id: str, secret: str) -> str:
        try:
            row = await self.accounts.get_token(token_id)
        except NotFoundError:
            row = None
        stored = row.token_hash if row is not None else _DUMMY_TOKEN_HASH
        good = await asyncio.to_thread(verify_secret, stored, secret)
        if row is None or row.revoked or not good:
            raise ApiError(401, "unauthorized", "the token is not valid")
        with contextlib.suppress(NotFoundError, RegistryError):
            await self.accounts.touch_token(token_id)
        return token_id

    async def _user_of_token(self, token_id: str) -> User:
        cached = self._users.get(token_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        token = await self.accounts.get_token(token_id)
        if token.revoked:
            self.verified.forget(token_id)
            raise ApiError(401, "unauthorized", "the token is not valid")
        user = await self.accounts.get_user(token.user_id)
        self._users[token_id] = (user, time.monotonic() + 30.0)
        return user

    async def login(
        self, username: str, password: str, code: str | None, client: str
    ) -> tuple[str, User]:
        """Password (and TOTP) sign-in; returns a fresh session token and the user.

        Attempts are throttled per account name and per client address (see
        :mod:`genos.orchestrator.signins`); a refused attempt is answered the
        same whether the account exists or not, before any password check.

        Raises:
            ApiError: 401 ``invalid_credentials`` or ``totp_required``;
                429 ``too_many_attempts`` with ``Retry-After``.
        """
        keys = self._signin_keys(client, username)
        verdict = await self._admit(keys)
        try:
            user: User | None = await self.accounts.user_by_name(username)
        except NotFoundError:
            user = None
        stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
        good = await asyncio.to_thread(verify_secret, stored, password)
        if user is None or not user.password_hash or not good:
            self.audit_log.append(action="login", user=username, client=client, outcome="denied")
            self._audit_lockout(verdict, username, client)
            raise ApiError(401, "invalid_credentials", "wrong user name or password")
        if user.totp_secret is not None:
            if not code:  # the password was right: this attempt is not a failure
                await self._refund(keys, forget=())
                raise ApiError(401, "totp_required", "enter the code from your authenticator")
            if not self.totp.verify(user.id, user.totp_secret, code):
                self.audit_log.append(
                    action="login", user=username, client=client, outcome="bad_totp"
                )
                self._audit_lockout(verdict, username, client)
                raise ApiError(401, "invalid_credentials", "wrong or reused authenticator code")
        await self._refund(keys, forget=tuple(k for k, _ in keys if k.startswith("account:")))
        token = await self.new_token(user, SESSION_TOKEN)
        self.audit_log.append(
            action="login", user=username, user_id=user.id, client=client, outcome="ok"
        )
        return token, user

    def _signin_keys(self, client: str, username: str | None) -> list[tuple[str, Limits]]:
        """The keys an attempt counts against: the client's address, then the account name."""
        if not self.signin.enabled:
            return []
        keys = [(f"client:{_address_key(client)}", self.signin.client)]
        if username is not None:
            keys.append((f"account:{username}", self.signin.account))
        return keys

    async def _admit(self, keys: list[tuple[str, Limits]]) -> Verdict:
        """Charge an attempt, or refuse it with 429 and ``Retry-After``."""
        if not keys:
            return Verdict(retry_after=0)
        verdict = await self.signins.admit(keys)
        if verdict.retry_after > 0:
            raise ApiError(
                429,
                "too_many_attempts",
                f"too many sign-in attempts; try again in {verdict.retry_after} s",
                headers={"Retry-After": str(verdict.retry_after)},
            )
        return verdict

    async def _refund(self, keys: list[tuple[str, Limits]], *, forget: tuple[str, ...]) -> None:
        if keys:
            await self.signins.refund(keys, forget=forget)

    def _audit_lockout(self, verdict: Verdict, username: str | None, client: str) -> None:
        """The audit record of a failure that locked a key (account name or client address)."""
        if not verdict.locked:
            return
        until = verdict.until.isoformat() if verdict.until is not None else None
        self.audit_log.append(
            action="login_lockout",
            user=username,
            client=client,
            locked=[key.partition(":")[0] for key in verdict.locked],
            until=until,
        )

    def new_link(self, caller: Caller) -> tuple[str, float]:
        """A one-time sign-in code for the caller, valid :data:`LINK_TTL` seconds."""
        now = time.time()
        self._links = {c: v for c, v in self._links.items() if v[1] > now}
        code = secrets.token_urlsafe(24)
        self._links[code] = (caller.user.id, now + LINK_TTL)
        return code, now + LINK_TTL

    async def redeem_link(self, code: str, client: str) -> tuple[str, User]:
        """Exchange a one-time sign-in code for a session token.

        Raises:
            ApiError: 401 when the code is unknown, used or expired; 429 (with
                ``Retry-After``) when the client address is throttled.
        """
        keys = self._signin_keys(client, None)
        verdict = await self._admit(keys)
        entry = self._links.pop(code, None)
        if entry is None or entry[1] <= time.time():
            self.audit_log.append(action="login", method="link", client=client, outcome="denied")
            self._audit_lockout(verdict, None, client)
            raise ApiError(
                401, "invalid_credentials", "the sign-in link is not valid (used or expired)"
            )
        await self._refund(keys, forget=())
        user = await self.accounts.get_user(entry[0])
        token = await self.new_token(user, SESSION_TOKEN)
        self.audit_log.append(
            action="login",
            method="link",
            user=user.name,
            user_id=user.id,
            client=client,
            outcome="ok",
        )
        return token, user

    async def add_user(self, name: str, password: str | None, role: Role) -> User:
        """Create an account.

        Raises:
            ApiError: 409 when the name is taken.
        """
        hashed = await asyncio.to_thread(hash_secret, password) if password else None
        try:
            await self.accounts.user_by_name(name)
        except NotFoundError:
            return await self.accounts.add_user(name, role, hashed)
        raise ApiError(409, "conflict", f"user {name!r} exists")

    def begin_totp(self, user: User, secret: str) -> None:
        """Remember a TOTP secret until the user confirms it with a code."""
        self._pending_totp[user.id] = secret

    async def confirm_totp(self, user: User, code: str) -> None:
        """Turn TOTP on once the pending secret's code checks out.

        Raises:
            ApiError: 409 with nothing pending, 422 for a wrong code.
        """
        secret = self._pending_totp.get(user.id)
        if secret is None:
            raise ApiError(409, "invalid_state", "no authenticator set-up is pending")
        if not self.totp.verify(user.id, secret, code):
            raise ApiError(422, "invalid_input", "wrong authenticator code")
        del self._pending_totp[user.id]
        await self.accounts.set_totp(user.id, secret)
        self._users = {k: v for k, v in self._users.items() if v[0].id != user.id}


def _address_key(client: str) -> str:
    """What a client address is counted as: itself, or its /64 for IPv6 (one host's share)."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
