"""Alembic environment: runs on the connection ``database.migrate()`` opened."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from genos.orchestrator.models import Base

MIGRATION_LOCK = 0x67656E6F  # "geno": any constant shared by every GenOS control plane


def run(connection: Connection) -> None:
    """Run the pending migrations on ``connection`` (already inside a transaction)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise TypeError("GenOS migrations run through genos.orchestrator.database.migrate()")
run(connection)
