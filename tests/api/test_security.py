"""Credentials: token format, hashing, the verified-token cache, and TOTP."""

from __future__ import annotations

import base64

import pytest

from genos.api.security import (
    TotpVerifier,
    VerifiedCache,
    hash_secret,
    mint_token,
    new_totp_secret,
    split_token,
    totp,
    verify_secret,
)

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize(
    ("at", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
    ],
)
def test_totp_matches_rfc_6238_vectors(at: int, code: str) -> None:
    """The SHA-1 test vectors of RFC 6238 appendix B come out exactly."""
    assert totp(RFC_SECRET, at, digits=8) == code


def test_token_round_trip_and_hash_only_storage() -> None:
    """A minted token splits into its id and a secret that only its hash verifies."""
    token = mint_token()
    parts = split_token(token.plaintext)
    assert parts is not None
    assert parts[0] == token.token_id
    assert token.plaintext not in token.hashed
    assert token.hashed.startswith("sha256$")  # 256 random bits: a fast hash is enough
    assert verify_secret(token.hashed, parts[1]) is True
    assert verify_secret(token.hashed, parts[1] + "x") is False
    assert verify_secret("not-a-hash", parts[1]) is False


@pytest.mark.parametrize(
    "bad", ["", "genos_", "genos_abc_def", "bearer xyz", "genos_" + "a" * 12, "genos_" + "x" * 300]
)
def test_malformed_tokens_do_not_split(bad: str) -> None:
    """Anything not shaped genos_<12-char id>_<secret> is refused before hashing."""
    assert split_token(bad) is None


def test_password_hash_is_salted() -> None:
    """The same password hashes differently each time and both verify."""
    first, second = hash_secret("correct horse"), hash_secret("correct horse")
    assert first != second
    assert (verify_secret(first, "correct horse"), verify_secret(second, "correct horse")) == (
        True,
        True,
    )


def test_verified_cache_expires_and_forgets() -> None:
    """The cache answers within its TTL, not after, and not after revocation."""
    now = [100.0]
    cache = VerifiedCache(ttl=60, clock=lambda: now[0])
    cache.put("genos_tok", "id1")
    assert cache.get("genos_tok") == "id1"
    now[0] = 161.0
    assert cache.get("genos_tok") is None
    cache.put("genos_tok", "id1")
    cache.forget("id1")
    assert cache.get("genos_tok") is None


def test_totp_accepts_skew_once_and_refuses_replay() -> None:
    """A code from the previous step verifies once; replaying it or an older one fails."""
    secret = new_totp_secret()
    now = [1_000_000.0]
    verifier = TotpVerifier(clock=lambda: now[0])
    previous = totp(secret, now[0] - 30)
    assert verifier.verify("alice", secret, previous) is True
    assert verifier.verify("alice", secret, previous) is False
    assert verifier.verify("alice", secret, totp(secret, now[0] - 90)) is False
    assert verifier.verify("alice", secret, "12ab56") is False
    assert verifier.verify("bob", secret, totp(secret, now[0])) is True


def test_argon2_token_hashes_still_verify() -> None:
    """Token rows hashed with argon2 before keep working."""
    stored = hash_secret("a-secret")
    assert verify_secret(stored, "a-secret") is True
    assert verify_secret(stored, "another") is False
