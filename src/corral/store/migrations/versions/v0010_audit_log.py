"""The audit log's rows: its state (size and right edge), its entries and its tiles.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    state = op.create_table(
        "audit_state",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("edge", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_state"),
        sa.CheckConstraint("id = 1", name="ck_audit_state_single_row"),
    )
    op.bulk_insert(state, [{"id": 1, "size": 0, "edge": b""}])
    op.create_table(
        "audit_entries",
        sa.Column("idx", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("entry", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("idx", name="pk_audit_entries"),
    )
    op.create_table(
        "audit_tiles",
        sa.Column("level", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("idx", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("hashes", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_audit_tiles"),
    )


def downgrade() -> None:
    op.drop_table("audit_tiles")
    op.drop_table("audit_entries")
    op.drop_table("audit_state")
