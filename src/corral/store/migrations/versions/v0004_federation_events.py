"""Federation and shared security events: OIDC providers, federated subjects, SSF streams,
per-pool bearer opt-in.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

_TS = sa.DateTime(timezone=True)  # aware UTC (naive UTC text on SQLite)

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "pools",
        sa.Column("allow_bearer", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "oidc_providers",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("audience", sa.String(512), nullable=False),
        sa.Column("jwks_uri", sa.Text, nullable=True),
        sa.Column("jwks", sa.Text, nullable=True),
        sa.Column("client_id", sa.String(255), nullable=True),
        sa.Column("client_secret", sa.Text, nullable=True),
        sa.Column("allow_console", sa.Boolean, nullable=False),
        sa.Column("allow_assertions", sa.Boolean, nullable=False),
        sa.Column("allow_events", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_oidc_providers"),
        sa.UniqueConstraint("issuer", name="uq_oidc_providers_issuer"),
    )
    op.create_table(
        "federated_subjects",
        sa.Column("provider", sa.String(63), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=True),
        sa.Column("agent_id", sa.String(32), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("provider", "subject", name="pk_federated_subjects"),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["oidc_providers.name"],
            name="fk_federated_subjects_provider_oidc_providers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_federated_subjects_user_id_users",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_federated_subjects_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "(user_id IS NULL) <> (agent_id IS NULL)", name="ck_federated_subjects_one_principal"
        ),
    )
    op.create_index("ix_federated_subjects_user_id", "federated_subjects", ["user_id"])
    op.create_index("ix_federated_subjects_agent_id", "federated_subjects", ["agent_id"])
    op.create_table(
        "ssf_receivers",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("audience", sa.String(512), nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("auth_header", sa.Text, nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ssf_receivers"),
        sa.UniqueConstraint("name", name="uq_ssf_receivers_name"),
    )
    op.create_table(
        "ssf_outbox",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("receiver_id", sa.String(32), nullable=False),
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ssf_outbox"),
        sa.ForeignKeyConstraint(
            ["receiver_id"],
            ["ssf_receivers.id"],
            name="fk_ssf_outbox_receiver_id_ssf_receivers",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_ssf_outbox_delivered_at", "ssf_outbox", ["delivered_at"])
    op.create_table(
        "ssf_inbound",
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("jti", sa.String(128), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti", name="pk_ssf_inbound"),
    )


def downgrade() -> None:
    op.drop_table("ssf_inbound")
    op.drop_index("ix_ssf_outbox_delivered_at", table_name="ssf_outbox")
    op.drop_table("ssf_outbox")
    op.drop_table("ssf_receivers")
    op.drop_index("ix_federated_subjects_agent_id", table_name="federated_subjects")
    op.drop_index("ix_federated_subjects_user_id", table_name="federated_subjects")
    op.drop_table("federated_subjects")
    op.drop_table("oidc_providers")
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("allow_bearer")
