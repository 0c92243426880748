"""What one viewer may do on one environment: the grant.

A :class:`Grant` joins what the token says (who, which environment, control
or view) with what the environment's spec says (clipboard direction,
recording, how far the screen may be resized). The proxy asks it, message by
message, what may pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from genos.spec import Direction, Display, EnvironmentSpec, Security

# The smallest screen a viewer may ask for: the spec's smallest Resolution.
MIN_WIDTH, MIN_HEIGHT = 320, 240


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
        resize: SetDesktopSize may reach the environment (the spec's ``display.resize``).
        max_size: the largest (width, height) it may ask for (``display.max_resolution``).
    """

    env_id: str
    user_id: str
    permission: Permission
    clipboard: Direction = Direction.NONE
    record: bool = False
    token_id: str = ""
    resize: bool = True
    max_size: tuple[int, int] = (3840, 2160)  # the spec's default display.max_resolution

    @classmethod
    def from_security(
        cls,
        env_id: str,
        user_id: str,
        permission: Permission,
        security: Security | EnvironmentSpec,
        token_id: str = "",
    ) -> Grant:
        """Make a grant from a permission and an environment's spec.

        Args:
            env_id: the environment.
            user_id: who.
            permission: control or view.
            security: the spec, or only its ``security`` section (then the
                default display's resize limits apply).
            token_id: the token's ``jti``.

        Returns:
            The grant.
        """
        if isinstance(security, EnvironmentSpec):
            section, display = security.security, security.display
        else:
            section, display = security, Display()
        most = display.max_resolution
        return cls(
            env_id,
            user_id,
            permission,
            section.clipboard,
            section.recording,
            token_id,
            resize=display.resize,
            max_size=(most.width, most.height),
        )

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

    def resize_allowed(self, width: int, height: int) -> bool:
        """Whether a SetDesktopSize to ``width`` x ``height`` may reach the environment."""
        most_w, most_h = self.max_size
        return (
            self.input_allowed
            and self.resize
            and MIN_WIDTH <= width <= most_w
            and MIN_HEIGHT <= height <= most_h
        )
