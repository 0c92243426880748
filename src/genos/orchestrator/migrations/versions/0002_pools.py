"""Warm pools: the pools table, and where each environment came from.

``environments.cpus``/``memory_mb`` keep their names: they have always been
what an environment reserves, which is now its request rather than its limits.

Revision ID: 0002
Revises: 0001
Create Date: 2030-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from genos.orchestrator.models import JsonType, UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``pools``, and ``pool_id``/``claimed`` on environments."""
    op.create_table(
        "pools",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("spec", JsonType, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("set_by", sa.String(32), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.CheckConstraint("size >= 0", name=op.f("ck_pools_size")),
        sa.ForeignKeyConstraint(["set_by"], ["users.id"], name=op.f("fk_pools_set_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pools")),
        sa.UniqueConstraint("digest", name=op.f("uq_pools_digest")),
    )
    with op.batch_alter_table("environments") as batch:
        batch.add_column(sa.Column("pool_id", sa.String(16), nullable=True))
        batch.add_column(sa.Column("claimed", UTCDateTime(), nullable=True))
        batch.create_index(op.f("ix_environments_pool_id"), ["pool_id"])


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    with op.batch_alter_table("environments") as batch:
        batch.drop_index(op.f("ix_environments_pool_id"))
        batch.drop_column("claimed")
        batch.drop_column("pool_id")
    op.drop_table("pools")
