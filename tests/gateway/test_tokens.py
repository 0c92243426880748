"""Gateway tokens: issued, verified, and refused for each distinct reason."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from genos.errors import TokenError
from genos.gateway.policy import Permission
from genos.gateway.tokens import (
    FileRevocations,
    TokenAuthority,
    load_or_create_key,
)

KEY = b"k" * 32


class FakeClock:
    """Wall-clock seconds that only move when told."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def refused(authority: TokenAuthority, token: str, env_id: str) -> str:
    """The reason ``verify`` refuses with."""
    with pytest.raises(TokenError) as info:
        authority.verify(token, env_id)
    return info.value.reason


def test_valid_token_is_accepted() -> None:
    """A fresh token for the right environment yields its claims."""
    clock = FakeClock()
    authority = TokenAuthority(KEY, clock=clock)
    token = authority.issue("env-1", "alice", Permission.VIEW, ttl=60)
    claims = authority.verify(token, "env-1")
    assert (claims.env_id, claims.user_id, claims.permission) == ("env-1", "alice", Permission.VIEW)
    assert claims.expires_at == int(clock.now) + 60
    assert len(claims.token_id) == 24


def test_expired_token_is_refused() -> None:
    """A token past its expiry is refused as expired."""
    clock = FakeClock()
    authority = TokenAuthority(KEY, clock=clock)
    token = authority.issue("env-1", "alice", Permission.CONTROL, ttl=30)
    clock.now += 30
    assert refused(authority, token, "env-1") == "expired"


def test_forged_token_is_refused() -> None:
    """A payload changed by the holder (view -> control) fails the MAC."""
    authority = TokenAuthority(KEY)
    token = authority.issue("env-1", "alice", Permission.VIEW)
    body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload[3] = "control"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    assert refused(authority, f"{forged}.{mac}", "env-1") == "forged"


def test_token_from_another_key_is_forged() -> None:
    """A token signed with another gateway's key is refused as forged."""
    other = TokenAuthority(b"x" * 32).issue("env-1", "alice", Permission.CONTROL)
    assert refused(TokenAuthority(KEY), other, "env-1") == "forged"


def test_revoked_token_is_refused() -> None:
    """A token presented again after revocation is refused as revoked."""
    authority = TokenAuthority(KEY)
    token = authority.issue("env-1", "alice", Permission.CONTROL)
    authority.verify(token, "env-1")
    authority.revoke(token)
    assert refused(authority, token, "env-1") == "revoked"


def test_wrong_environment_is_refused() -> None:
    """A token for env-1 does not open env-2."""
    authority = TokenAuthority(KEY)
    token = authority.issue("env-1", "alice", Permission.CONTROL)
    assert refused(authority, token, "env-2") == "wrong_environment"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "x" * 3000 + ".y"])
def test_malformed_tokens_are_refused(token: str) -> None:
    """Text that is not a token is refused as malformed."""
    assert refused(TokenAuthority(KEY), token, "env-1") in {"malformed", "forged"}


def test_signed_garbage_is_malformed() -> None:
    """A correctly signed payload that is not our claims is refused as malformed."""
    authority = TokenAuthority(KEY)
    body = b'["g1","env-1","alice","root",99999999999,"j"]'
    mac = authority._mac(body)
    token = f"{_b64(body)}.{_b64(mac)}"
    assert refused(authority, token, "env-1") == "malformed"


def test_revocations_survive_a_restart(tmp_path: Path) -> None:
    """A file revocation store refuses a revoked token in a new authority too."""
    clock = FakeClock()
    first = TokenAuthority(
        KEY, revocations=FileRevocations(tmp_path / "r.jsonl", clock), clock=clock
    )
    token = first.issue("env-1", "alice", Permission.CONTROL)
    first.revoke(token)
    second = TokenAuthority(
        KEY, revocations=FileRevocations(tmp_path / "r.jsonl", clock), clock=clock
    )
    assert refused(second, token, "env-1") == "revoked"


def test_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    """The key file is made on first use, private, and read back unchanged."""
    path = tmp_path / "data" / "gateway.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key


def test_from_data_dir_uses_genos_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default authority keeps its key in GENOS_DATA_DIR/gateway.key."""
    monkeypatch.setenv("GENOS_DATA_DIR", str(tmp_path))
    authority = TokenAuthority.from_data_dir()
    token = authority.issue("env-1", "bob", Permission.VIEW)
    assert (tmp_path / "gateway.key").stat().st_size == 32
    assert TokenAuthority.from_data_dir().verify(token, "env-1").user_id == "bob"
