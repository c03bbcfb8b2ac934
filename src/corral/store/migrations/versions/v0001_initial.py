"""Pools, PCs and sessions.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

_TS = sa.DateTime(timezone=True)  # aware UTC (naive UTC text on SQLite)

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_ACTIVE = sa.text("state = 'active'")
_PC_STATES = "'booting', 'ready', 'in_use', 'resetting', 'quarantined', 'destroying'"


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("image", sa.String(255), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("size", sa.String(32), nullable=False),
        sa.Column("warm", sa.Integer, nullable=False),
        sa.Column("max", sa.Integer, nullable=False),
        sa.Column("idle_timeout_s", sa.Integer, nullable=False),
        sa.Column("max_lifetime_s", sa.Integer, nullable=False),
        sa.Column("deleting", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_pools"),
    )
    op.create_table(
        "pcs",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pcs"),
        sa.ForeignKeyConstraint(
            ["pool"], ["pools.name"], name="fk_pcs_pool_pools", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("session_id", name="uq_pcs_session_id"),
        sa.CheckConstraint(f"state IN ({_PC_STATES})", name="ck_pcs_state"),
    )
    op.create_index("ix_pcs_pool_state", "pcs", ["pool", "state"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("pc_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("last_activity", _TS, nullable=False),
        sa.Column("released_at", _TS, nullable=True),
        sa.Column("release_reason", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.ForeignKeyConstraint(
            ["pool"], ["pools.name"], name="fk_sessions_pool_pools", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("pool", "idempotency_key", name="uq_sessions_pool_idempotency_key"),
        sa.CheckConstraint("state IN ('active', 'released')", name="ck_sessions_state"),
    )
    op.create_index("ix_sessions_state", "sessions", ["state"])
    op.create_index(
        "uq_sessions_active_pc",
        "sessions",
        ["pc_id"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("pcs")
    op.drop_table("pools")
