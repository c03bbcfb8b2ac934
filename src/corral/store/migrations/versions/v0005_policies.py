"""Policies: Cedar policies and their change log, the policy-set version, pool assignments,
sponsor approvals and session controls.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

_TS = sa.DateTime(timezone=True)  # aware UTC (naive UTC text on SQLite)

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_KINDS = ("seed", "add", "replace", "remove", "enable", "disable", "assign", "unassign")
_STATES = ("pending", "approved", "denied", "expired")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policies"),
        sa.UniqueConstraint("name", name="uq_policies_name"),
    )
    op.create_table(
        "policy_changes",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_changes"),
        sa.CheckConstraint(_one_of("kind", _KINDS), name="ck_policy_changes_kind"),
    )
    op.create_index("ix_policy_changes_version", "policy_changes", ["version"])
    state = op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("seeded", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_state"),
        sa.CheckConstraint("id = 1", name="ck_policy_state_single_row"),
    )
    op.bulk_insert(state, [{"id": 1, "version": 0, "seeded": False}])
    op.create_table(
        "pool_assignments",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("agent_id", sa.String(32), nullable=True),
        sa.Column("group_id", sa.String(32), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pool_assignments"),
        sa.ForeignKeyConstraint(
            ["pool"], ["pools.name"], name="fk_pool_assignments_pool_pools", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_pool_assignments_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name="fk_pool_assignments_group_id_groups",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "(agent_id IS NULL) <> (group_id IS NULL)", name="ck_pool_assignments_one_assignee"
        ),
        sa.UniqueConstraint("pool", "agent_id", name="uq_pool_assignments_pool_agent_id"),
        sa.UniqueConstraint("pool", "group_id", name="uq_pool_assignments_pool_group_id"),
    )
    op.create_index("ix_pool_assignments_agent_id", "pool_assignments", ["agent_id"])
    op.create_index("ix_pool_assignments_group_id", "pool_assignments", ["group_id"])
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("agent_id", sa.String(32), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(320), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("policies", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_approvals"),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_approvals_agent_id_agents", ondelete="CASCADE"
        ),
        sa.CheckConstraint(_one_of("state", _STATES), name="ck_approvals_state"),
    )
    op.create_index("ix_approvals_agent_id_digest", "approvals", ["agent_id", "digest"])
    op.create_index("ix_approvals_state", "approvals", ["state"])
    op.create_table(
        "session_controls",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("controls", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_session_controls"),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name="fk_session_controls_session_id_sessions",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("session_controls")
    op.drop_index("ix_approvals_state", table_name="approvals")
    op.drop_index("ix_approvals_agent_id_digest", table_name="approvals")
    op.drop_table("approvals")
    op.drop_index("ix_pool_assignments_group_id", table_name="pool_assignments")
    op.drop_index("ix_pool_assignments_agent_id", table_name="pool_assignments")
    op.drop_table("pool_assignments")
    op.drop_table("policy_state")
    op.drop_index("ix_policy_changes_version", table_name="policy_changes")
    op.drop_table("policy_changes")
    op.drop_table("policies")
