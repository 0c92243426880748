"""Short-lived signed tokens that admit one user to one environment's display.

A token is ``base64url(payload) "." base64url(mac)``: the payload is the
compact JSON array ``["g1", env_id, user_id, permission, expires_at, jti]``
and the MAC is HMAC-SHA256 under the gateway's key over a domain tag and the
payload. :meth:`TokenAuthority.verify` checks, in order: shape (``malformed``),
MAC (``forged``), environment (``wrong_environment``), expiry (``expired``)
and the revocation set (``revoked``); each refusal is a :class:`TokenError`
with that reason. The key lives in ``data_dir()/gateway.key`` (mode 0600).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from genos.errors import ExternalError, TokenError
from genos.gateway.policy import Permission
from genos.paths import data_dir

log = logging.getLogger("genos.gateway")

VERSION = "g1"
_DOMAIN = b"genos-gateway-token/v1\x00"
KEY_BYTES = 32
MAX_TOKEN = 2048


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says."""

    env_id: str
    user_id: str
    permission: Permission
    expires_at: int
    token_id: str


class RevocationStore(Protocol):
    """Where revoked token ids are kept until the tokens would have expired anyway."""

    def is_revoked(self, token_id: str) -> bool:
        """Whether ``token_id`` was revoked."""
        ...

    def revoke(self, token_id: str, expires_at: float) -> None:
        """Revoke ``token_id``; it may be forgotten after ``expires_at``."""
        ...


class MemoryRevocations:
    """A :class:`RevocationStore` in memory (one gateway process)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._revoked: dict[str, float] = {}
        self._clock = clock
        self._lock = threading.Lock()

    def is_revoked(self, token_id: str) -> bool:
        """Whether ``token_id`` was revoked."""
        with self._lock:
            return token_id in self._revoked

    def revoke(self, token_id: str, expires_at: float) -> None:
        """Revoke ``token_id`` and forget ids whose tokens have expired."""
        now = self._clock()
        with self._lock:
            self._revoked[token_id] = expires_at
            for jti in [j for j, exp in self._revoked.items() if exp < now]:
                del self._revoked[jti]


class FileRevocations(MemoryRevocations):
    """A :class:`RevocationStore` that also appends to a file, so revocations survive restarts.

    Args:
        path: a JSON-lines file of ``{"jti": ..., "exp": ...}``; created if missing.
        clock: wall clock, seconds.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._path = path
        now = clock()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    if float(entry["exp"]) >= now:
                        self._revoked[str(entry["jti"])] = float(entry["exp"])
                except (ValueError, KeyError, TypeError):
                    log.warning("skipping a bad line in %s", path)

    def revoke(self, token_id: str, expires_at: float) -> None:
        """Revoke ``token_id`` and append it to the file."""
        super().revoke(token_id, expires_at)
        line = json.dumps({"jti": token_id, "exp": expires_at}) + "\n"
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(line)


def load_or_create_key(path: Path | None = None) -> bytes:
    """The gateway's MAC key, made (32 random bytes, mode 0600) on first use.

    Args:
        path: the key file; default ``data_dir()/gateway.key``.

    Returns:
        The key.

    Raises:
        ExternalError: the file exists but is not a key.
    """
    path = path or data_dir() / "gateway.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(KEY_BYTES))
    log.info("created gateway key %s", path)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        log.warning("gateway key %s was readable by others; now 0600", path)
        path.chmod(0o600)
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise ExternalError(f"gateway key {path} is too short", detail=f"{len(key)} bytes")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenAuthority:
    """Issues and checks gateway tokens.

    Args:
        key: the MAC key (at least 32 bytes).
        revocations: the revocation set; default in memory.
        clock: wall clock, seconds since the epoch.
    """

    def __init__(
        self,
        key: bytes,
        *,
        revocations: RevocationStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError("a gateway key has at least 32 bytes")
        self._key = key
        self._revocations = revocations if revocations is not None else MemoryRevocations(clock)
        self._clock = clock

    @classmethod
    def from_data_dir(cls, root: Path | None = None) -> TokenAuthority:
        """An authority with the key and a file revocation set under the data dir.

        Args:
            root: the data dir; default ``data_dir()``.

        Returns:
            The authority.
        """
        root = root or data_dir()
        key = load_or_create_key(root / "gateway.key")
        return cls(key, revocations=FileRevocations(root / "gateway-revoked.jsonl"))

    def issue(self, env_id: str, user_id: str, permission: Permission, ttl: float = 300.0) -> str:
        """A token for ``user_id`` on ``env_id`` with ``permission``, valid ``ttl`` seconds.

        Args:
            env_id: the environment.
            user_id: the user.
            permission: control or view.
            ttl: lifetime in seconds.

        Returns:
            The token text (URL-safe).
        """
        expires = int(self._clock() + ttl)
        payload = [VERSION, env_id, user_id, str(permission), expires, secrets.token_hex(12)]
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    def verify(self, token: str, env_id: str) -> TokenClaims:
        """Check a token for ``env_id``.

        Args:
            token: the token text.
            env_id: the environment the client asks for.

        Returns:
            The claims.

        Raises:
            TokenError: ``malformed``, ``forged``, ``wrong_environment``, ``expired``
                or ``revoked``.
        """
        claims = self._authentic(token)
        if not hmac.compare_digest(claims.env_id.encode(), env_id.encode()):
            raise TokenError("wrong_environment", "token is for another environment")
        if claims.expires_at <= self._clock():
            raise TokenError("expired", "token has expired")
        if self._revocations.is_revoked(claims.token_id):
            raise TokenError("revoked", "token was revoked")
        return claims

    def revoke(self, token: str) -> TokenClaims:
        """Revoke a token (by its id) so it is refused from now on.

        Args:
            token: the token text.

        Returns:
            Its claims.

        Raises:
            TokenError: ``malformed`` or ``forged``.
        """
        claims = self._authentic(token)
        self._revocations.revoke(claims.token_id, claims.expires_at)
        return claims

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, _DOMAIN + body, hashlib.sha256).digest()

    def _authentic(self, token: str) -> TokenClaims:
        if len(token) > MAX_TOKEN or token.count(".") != 1:
            raise TokenError("malformed", "token is malformed")
        body_text, mac_text = token.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise TokenError("malformed", "token is malformed") from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise TokenError("forged", "token signature does not match")
        return _claims(body)


def _claims(body: bytes) -> TokenClaims:
    try:
        fields = json.loads(body)
    except ValueError:
        fields = None
    if not (isinstance(fields, list) and len(fields) == 6 and fields[0] == VERSION):
        raise TokenError("malformed", "token payload is malformed")
    _, env_id, user_id, permission, expires, jti = fields
    texts = (env_id, user_id, jti)
    if not all(isinstance(v, str) for v in texts) or type(expires) is not int:
        raise TokenError("malformed", "token payload is malformed")
    if permission not in {p.value for p in Permission}:
        raise TokenError("malformed", "token permission is unknown")
    return TokenClaims(env_id, user_id, Permission(permission), expires, jti)
