"""Credentials: password and API-token hashing, and TOTP second factors.

- Passwords are stored only as argon2id hashes (slow on purpose: a password
  is guessable). An API token is ``genos_<id>_<secret>``: ``id`` finds the
  row, ``secret`` (256 random bits) is what the hash checks, and since 256
  random bits cannot be guessed, its stored hash is SHA-256 (``sha256$<hex>``,
  compared in constant time), which is as strong for such a secret and costs
  microseconds instead of argon2's ~0.1 s per sign-in. Older argon2 token
  hashes still verify. A verified token is remembered for a short time (by
  its SHA-256, never in clear); revoking a token drops it from that memory.
- TOTP follows RFC 6238 (HMAC-SHA1, 30 s steps, 6 digits) with one step of
  clock skew either way; a code is accepted once per step (replay refused).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
TOKEN_PREFIX = "genos_"  # noqa: S105 - a public prefix, not a secret
SHA256_PREFIX = "sha256$"


def hash_secret(secret: str) -> str:
    """An argon2id hash of a password."""
    return _HASHER.hash(secret)


def hash_token_secret(secret: str) -> str:
    """The stored hash of a random token secret: ``sha256$<hex>``."""
    return SHA256_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def verify_secret(stored: str, secret: str) -> bool:
    """True if ``secret`` matches ``stored`` (argon2id or ``sha256$``; False on any mismatch)."""
    if stored.startswith(SHA256_PREFIX):
        return hmac.compare_digest(stored, hash_token_secret(secret))
    try:
        return _HASHER.verify(stored, secret)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class NewToken:
    """A freshly minted API token: show ``plaintext`` once, store ``token_id`` + ``hashed``."""

    token_id: str
    plaintext: str
    hashed: str


def mint_token() -> NewToken:
    """Create an API token (``genos_<id>_<secret>``)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewToken(token_id, f"{TOKEN_PREFIX}{token_id}_{secret}", hash_token_secret(secret))


def split_token(plaintext: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a well-formed token, else None."""
    if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
        return None
    token_id, sep, secret = plaintext[len(TOKEN_PREFIX) :].partition("_")
    if not sep or len(token_id) != 12 or not secret:
        return None
    return token_id, secret


class VerifiedCache:
    """Short-lived memory of verified tokens, keyed by their SHA-256."""

    def __init__(self, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._seen: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(plaintext: str) -> str:
        return hashlib.sha256(plaintext.encode()).hexdigest()

    def get(self, plaintext: str) -> str | None:
        """The token id if this token was verified within the TTL."""
        key = self._key(plaintext)
        with self._lock:
            hit = self._seen.get(key)
            if hit is None or hit[1] < self._clock():
                self._seen.pop(key, None)
                return None
            return hit[0]

    def put(self, plaintext: str, token_id: str) -> None:
        with self._lock:
            self._seen[self._key(plaintext)] = (token_id, self._clock() + self._ttl)

    def forget(self, token_id: str) -> None:
        """Drop every cached entry of ``token_id`` (on revocation)."""
        with self._lock:
            for key in [k for k, (tid, _) in self._seen.items() if tid == token_id]:
                del self._seen[key]


def new_totp_secret() -> str:
    """A random TOTP secret, base32 (what authenticator apps take)."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def totp(secret: str, at: float, *, digits: int = 6, step: int = 30) -> str:
    """The RFC 6238 code of ``secret`` at time ``at`` (HMAC-SHA1)."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    return _hotp(key, int(at // step), digits)


def _hotp(key: bytes, counter: int, digits: int) -> str:
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


class TotpVerifier:
    """Checks TOTP codes with ±1 step of skew, each step's code usable once per user."""

    def __init__(self, clock: Callable[[], float] = time.time, step: int = 30) -> None:
        self._clock = clock
        self._step = step
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def verify(self, user: str, secret: str, code: str) -> bool:
        """True if ``code`` is valid now for ``secret`` and was not used before."""
        if not (code.isdigit() and len(code) == 6):
            return False
        now = self._clock()
        for skew in (0, -1, 1):
            counter = int(now // self._step) + skew
            expected = totp(secret, counter * self._step, step=self._step)
            if hmac.compare_digest(expected, code):
                with self._lock:
                    if self._used.get(user, -1) >= counter:
                        return False
                    self._used[user] = counter
                return True
        return False
