"""Environment ids: short enough for interface names (``gh-<id>`` fits IFNAMSIZ)."""

from __future__ import annotations

import re
import secrets

ENV_ID_RE = re.compile(r"^[a-z0-9]{10}$")


def new_env_id() -> str:
    """A fresh random environment id: 10 lower-case hex characters."""
    return secrets.token_hex(5)


def is_env_id(value: str) -> bool:
    return bool(ENV_ID_RE.fullmatch(value))
