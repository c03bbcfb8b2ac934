"""Console logouts: console sessions ended before they expire, kept across restarts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "console_logouts",
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_id", name="pk_console_logouts"),
    )
    op.create_index("ix_console_logouts_expires_at", "console_logouts", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_logouts_expires_at", table_name="console_logouts")
    op.drop_table("console_logouts")
