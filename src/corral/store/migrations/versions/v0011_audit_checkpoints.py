"""The audit log's signed checkpoints, and on each entry its record id (to find its proof by),
trace id and session id (to find a trace's or a session's records by).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name="pk_audit_checkpoints"),
    )
    op.add_column("audit_entries", sa.Column("record_id", sa.String(128), nullable=True))
    op.add_column("audit_entries", sa.Column("trace_id", sa.String(32), nullable=True))
    op.add_column("audit_entries", sa.Column("session_id", sa.String(128), nullable=True))
    op.create_index("ix_audit_entries_record_id", "audit_entries", ["record_id"])
    op.create_index("ix_audit_entries_trace_id", "audit_entries", ["trace_id"])
    op.create_index("ix_audit_entries_session_id", "audit_entries", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_entries_session_id", table_name="audit_entries")
    op.drop_index("ix_audit_entries_trace_id", table_name="audit_entries")
    op.drop_index("ix_audit_entries_record_id", table_name="audit_entries")
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_column("session_id")
        batch.drop_column("trace_id")
        batch.drop_column("record_id")
    op.drop_table("audit_checkpoints")
