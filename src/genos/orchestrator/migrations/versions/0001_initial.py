"""The first registry: users, API tokens, environments, transitions, events.

Revision ID: 0001
Revises:
Create Date: 2030-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from genos.orchestrator.models import JsonType, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen here: a later state gets its own migration.
STATES = "'requested','queued','provisioning','running','suspended','terminated','failed'"


def upgrade() -> None:
    """Create every table of the first schema."""
    op.create_table(
        "users",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("totp_secret", sa.String(64), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.CheckConstraint("role IN ('admin','user')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("token_hash", sa.String(255), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("last_used", UTCDateTime(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])
    _environments()
    _history("transitions", _transition_columns())
    _history("events", _event_columns())


def _environments() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(63), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("spec", JsonType, nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("cpus", sa.Float(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.Column("started", UTCDateTime(), nullable=True),
        sa.Column("last_activity", UTCDateTime(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.CheckConstraint(f"state IN ({STATES})", name=op.f("ck_environments_state")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_environments_owner_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
        sa.UniqueConstraint("owner_id", "request_id", name="uq_environments_owner_request"),
    )
    op.create_index(op.f("ix_environments_owner_id"), "environments", ["owner_id"])
    op.create_index(op.f("ix_environments_state"), "environments", ["state"])


def _transition_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
    ]


def _event_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", JsonType, nullable=False),
    ]


def _history(table: str, columns: list[sa.Column[object]]) -> None:
    op.create_table(
        table,
        sa.Column("env_id", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(
            ["env_id"],
            ["environments.id"],
            name=op.f(f"fk_{table}_env_id_environments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("env_id", "seq", name=op.f(f"pk_{table}")),
    )


def downgrade() -> None:
    """Drop every table of the first schema."""
    for table in ("events", "transitions", "environments", "api_tokens", "users"):
        op.drop_table(table)
