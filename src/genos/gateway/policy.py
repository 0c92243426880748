"""What one viewer may do on one environment: the grant.

A :class:`Grant` joins what the token says (who, which environment, control
or view) with what the environment's spec says (clipboard direction,
recording). The proxy asks it, message by message, what may pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from genos.spec import Direction, Security


class Permission(StrEnum):
    """What a token lets its holder do."""

    CONTROL = "control"
    VIEW = "view"


@dataclass(frozen=True)
class Grant:
    """One user's authorised session on one environment.

    Attributes:
        env_id: the environment.
        user_id: who.
        permission: control (input reaches the environment) or view (it never does).
        clipboard: which way cut text may cross (the spec's ``security.clipboard``).
        record: write the stream to a recording (the spec's ``security.recording``).
        token_id: the token's ``jti``, for logs and revocation.
    """

    env_id: str
    user_id: str
    permission: Permission
    clipboard: Direction = Direction.NONE
    record: bool = False
    token_id: str = ""

    @classmethod
    def from_security(
        cls,
        env_id: str,
        user_id: str,
        permission: Permission,
        security: Security,
        token_id: str = "",
    ) -> Grant:
        """Make a grant from a permission and an environment's security section.

        Args:
            env_id: the environment.
            user_id: who.
            permission: control or view.
            security: the spec's ``security`` section.
            token_id: the token's ``jti``.

        Returns:
            The grant.
        """
        return cls(env_id, user_id, permission, security.clipboard, security.recording, token_id)

    @property
    def input_allowed(self) -> bool:
        """Keys, pointer and resize requests may reach the environment."""
        return self.permission is Permission.CONTROL

    @property
    def clipboard_to_env(self) -> bool:
        """ClientCutText may reach the environment (also needs control)."""
        return self.input_allowed and self.clipboard in (Direction.TO_ENV, Direction.BOTH)

    @property
    def clipboard_from_env(self) -> bool:
        """ServerCutText may reach the viewer."""
        return self.clipboard in (Direction.FROM_ENV, Direction.BOTH)
