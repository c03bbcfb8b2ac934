"""Request authentication: session owners, user keys, token revocation times.

Revision ID: 0003
Revises: 0002
Create Date: 2026-05-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

_TS = sa.DateTime(timezone=True)  # aware UTC (naive UTC text on SQLite)

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table copy on SQLite, which would lose the partial index).
    op.add_column("sessions", sa.Column("owner", sa.String(32), nullable=True))
    op.create_index("ix_sessions_owner", "sessions", ["owner"])
    op.add_column("users", sa.Column("tokens_revoked_before", _TS, nullable=True))
    op.add_column("agents", sa.Column("tokens_revoked_before", _TS, nullable=True))
    op.create_table(
        "user_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_user_keys"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_keys_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_user_keys_user_id", "user_keys", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_user_keys_user_id", table_name="user_keys")
    op.drop_table("user_keys")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("tokens_revoked_before")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tokens_revoked_before")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_owner")
        batch.drop_column("owner")
