"""Sign-in throttling: failures per account name and per client address.

Revision ID: 0004
Revises: 0003
Create Date: 2030-04-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from genos.orchestrator.models import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``signin_failures``."""
    op.create_table(
        "signin_failures",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last", UTCDateTime(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_signin_failures")),
    )
    op.create_index(op.f("ix_signin_failures_last"), "signin_failures", ["last"])


def downgrade() -> None:
    """Drop ``signin_failures``."""
    op.drop_index(op.f("ix_signin_failures_last"), table_name="signin_failures")
    op.drop_table("signin_failures")
