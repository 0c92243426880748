"""Clusters: the state ``lost``, and the link between a lost environment and its replacement.

Revision ID: 0003
Revises: 0002
Create Date: 2030-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

OLD = "'requested','queued','provisioning','running','suspended','terminated','failed'"
NEW = OLD + ",'lost'"


def upgrade() -> None:
    """Allow ``lost``; add ``replaces`` and ``replaced_by``."""
    with op.batch_alter_table("environments") as batch:
        batch.drop_constraint(op.f("ck_environments_state"), type_="check")
        batch.create_check_constraint(op.f("ck_environments_state"), f"state IN ({NEW})")
        batch.add_column(sa.Column("replaces", sa.String(16), nullable=True))
        batch.add_column(sa.Column("replaced_by", sa.String(16), nullable=True))


def downgrade() -> None:
    """Drop what :func:`upgrade` added (a ``lost`` environment becomes ``failed``)."""
    op.execute("UPDATE environments SET state = 'failed' WHERE state = 'lost'")
    with op.batch_alter_table("environments") as batch:
        batch.drop_column("replaced_by")
        batch.drop_column("replaces")
        batch.drop_constraint(op.f("ck_environments_state"), type_="check")
        batch.create_check_constraint(op.f("ck_environments_state"), f"state IN ({OLD})")
