"""Per-agent session limits and who released a session.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table copy on SQLite, which would lose the partial index). A pool made
    # before this has no stored limit: it gets the default (half its max, at least one).
    op.add_column("pools", sa.Column("max_sessions_per_agent", sa.Integer, nullable=True))
    op.add_column("sessions", sa.Column("released_by", sa.String(32), nullable=True))
    # The per-agent count at acquire: an agent's active sessions, whatever its history.
    op.create_index("ix_sessions_owner_state", "sessions", ["owner", "state"])


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_owner_state")
        batch.drop_column("released_by")
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("max_sessions_per_agent")
