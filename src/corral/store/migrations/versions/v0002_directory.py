"""The directory: users, groups, agents, sponsors, agent keys, and the access version counter.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

_TS = sa.DateTime(timezone=True)  # aware UTC (naive UTC text on SQLite)

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.String(32)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("roles", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=True),
        sa.Column("totp_secret", sa.String(64), nullable=True),
        sa.Column("totp_enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "groups",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_groups"),
        sa.UniqueConstraint("name", name="uq_groups_name"),
    )
    op.create_table(
        "user_groups",
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("group_id", _ID, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "group_id", name="pk_user_groups"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_groups_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name="fk_user_groups_group_id_groups", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_user_groups_group_id", "user_groups", ["group_id"])
    op.create_table(
        "agents",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("risk", sa.String(16), nullable=False),
        sa.Column("disabled_reason", sa.String(255), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("name", name="uq_agents_name"),
        sa.CheckConstraint("risk IN ('none', 'low', 'medium', 'high')", name="ck_agents_risk"),
    )
    op.create_table(
        "agent_sponsors",
        sa.Column("agent_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("agent_id", "user_id", name="pk_agent_sponsors"),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_agent_sponsors_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_agent_sponsors_user_id_users", ondelete="RESTRICT"
        ),
    )
    op.create_index("ix_agent_sponsors_user_id", "agent_sponsors", ["user_id"])
    op.create_table(
        "agent_groups",
        sa.Column("agent_id", _ID, nullable=False),
        sa.Column("group_id", _ID, nullable=False),
        sa.PrimaryKeyConstraint("agent_id", "group_id", name="pk_agent_groups"),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_agent_groups_agent_id_agents", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name="fk_agent_groups_group_id_groups", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_agent_groups_group_id", "agent_groups", ["group_id"])
    op.create_table(
        "agent_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("agent_id", _ID, nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_agent_keys"),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_agent_keys_agent_id_agents", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_agent_keys_agent_id", "agent_keys", ["agent_id"])
    state = op.create_table(
        "directory_state",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_directory_state"),
        sa.CheckConstraint("id = 1", name="ck_directory_state_single_row"),
    )
    op.bulk_insert(state, [{"id": 1, "version": 0}])


def downgrade() -> None:
    for table in (
        "directory_state",
        "agent_keys",
        "agent_groups",
        "agent_sponsors",
        "agents",
        "user_groups",
        "groups",
        "users",
    ):
        op.drop_table(table)
