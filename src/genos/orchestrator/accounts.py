"""Users and API tokens in the registry. Hashing is ``genos.api.security``'s job.

Rows only: a password or token arrives here already hashed (argon2id), and a
token is found by its id (``genos_<id>_<secret>``) and checked by the caller.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from genos.errors import NotFoundError
from genos.orchestrator.models import ApiTokenRow, UserRow
from genos.orchestrator.records import ApiToken, Role, User

if TYPE_CHECKING:
    from genos.orchestrator.registry import Registry


class Accounts:
    """Users and their API tokens (``registry.accounts``)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def add_user(
        self,
        name: str,
        role: Role = "user",
        password_hash: str | None = None,
        user_id: str | None = None,
    ) -> User:
        """Create a user.

        Args:
            name: unique login name.
            role: ``admin`` or ``user``.
            password_hash: an argon2 hash, or None for a token-only account.
            user_id: the id; default a fresh random one.

        Returns:
            The new user.

        Raises:
            RegistryError: the name or id is taken (a unique constraint).
        """
        row = UserRow(
            id=user_id or f"u{secrets.token_hex(6)}",
            name=name,
            role=role,
            password_hash=password_hash,
            totp_secret=None,
            created=self._registry.clock.now(),
        )

        def work(session: Session) -> User:
            session.add(row)
            session.flush()
            return _user(row)

        return await self._registry.run(work, write=True)

    async def get_user(self, user_id: str) -> User:
        """The user with ``user_id``.

        Raises:
            NotFoundError: no such user.
        """
        return await self._registry.run(lambda s: _user(_user_row(s, user_id)), write=False)

    async def users(self) -> list[User]:
        """Every user, oldest first."""
        query = select(UserRow).order_by(UserRow.created, UserRow.id)
        return await self._registry.run(lambda s: [_user(r) for r in s.scalars(query)], write=False)

    async def user_by_name(self, name: str) -> User:
        """The user called ``name``.

        Raises:
            NotFoundError: no such user.
        """

        def work(session: Session) -> User:
            row = session.scalars(select(UserRow).where(UserRow.name == name)).one_or_none()
            if row is None:
                raise NotFoundError("user", name)
            return _user(row)

        return await self._registry.run(work, write=False)

    async def set_totp(self, user_id: str, secret: str | None) -> None:
        """Set (or clear, with None) a user's TOTP secret.

        Raises:
            NotFoundError: no such user.
        """

        def work(session: Session) -> None:
            _user_row(session, user_id).totp_secret = secret

        await self._registry.run(work, write=True)

    async def add_token(self, user_id: str, name: str, token_id: str, token_hash: str) -> ApiToken:
        """Store a minted token's id and hash.

        Raises:
            NotFoundError: no such user.
        """
        now = self._registry.clock.now()

        def work(session: Session) -> ApiToken:
            _user_row(session, user_id)
            row = ApiTokenRow(
                id=token_id,
                user_id=user_id,
                name=name,
                token_hash=token_hash,
                created=now,
                last_used=None,
                revoked=False,
            )
            session.add(row)
            session.flush()
            return _token(row)

        return await self._registry.run(work, write=True)

    async def get_token(self, token_id: str) -> ApiToken:
        """The token row with ``token_id`` (revoked ones too).

        Raises:
            NotFoundError: no such token.
        """
        return await self._registry.run(lambda s: _token(_token_row(s, token_id)), write=False)

    async def tokens(self, user_id: str) -> list[ApiToken]:
        """A user's tokens, oldest first."""
        query = select(ApiTokenRow).where(ApiTokenRow.user_id == user_id)
        query = query.order_by(ApiTokenRow.created, ApiTokenRow.id)
        return await self._registry.run(
            lambda s: [_token(r) for r in s.scalars(query)], write=False
        )

    async def touch_token(self, token_id: str) -> None:
        """Record that a token was just used.

        Raises:
            NotFoundError: no such token.
        """
        now = self._registry.clock.now()

        def work(session: Session) -> None:
            _token_row(session, token_id).last_used = now

        await self._registry.run(work, write=True)

    async def revoke_token(self, token_id: str) -> None:
        """Revoke a token for good.

        Raises:
            NotFoundError: no such token.
        """

        def work(session: Session) -> None:
            _token_row(session, token_id).revoked = True

        await self._registry.run(work, write=True)


def _user_row(session: Session, user_id: str) -> UserRow:
    row = session.get(UserRow, user_id)
    if row is None:
        raise NotFoundError("user", user_id)
    return row


def _token_row(session: Session, token_id: str) -> ApiTokenRow:
    row = session.get(ApiTokenRow, token_id)
    if row is None:
        raise NotFoundError("token", token_id)
    return row


def _user(row: UserRow) -> User:
    role: Role = "admin" if row.role == "admin" else "user"
    return User(row.id, row.name, role, row.password_hash, row.totp_secret, row.created)


def _token(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        row.id, row.user_id, row.name, row.token_hash, row.created, row.last_used, row.revoked
    )
