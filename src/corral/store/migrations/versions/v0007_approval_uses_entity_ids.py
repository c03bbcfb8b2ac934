"""Approvals are single use (or N uses, or a window, by policy); policies name directory
entities by their stable ids.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("uses", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("max_uses", sa.Integer, nullable=True, server_default="1"))
        batch.add_column(sa.Column("window_s", sa.Integer, nullable=False, server_default="900"))
    _policies_by_id()


def _policies_by_id() -> None:
    """Stored policies that name a user, agent or group by its name now name it by its id,
    which a policy decision matches (issue 9): without this an upgraded `forbid` naming
    `Agent::"bot"` would match nothing and stop holding. Done once, here, so a later entity
    with a deleted one's name never inherits its policies. Each change is logged."""
    import logging
    from datetime import UTC, datetime

    from corral.access.engine import PolicyError
    from corral.access.rewrite import DirectoryNames, rewrite_names
    from corral.store._tables import UTCDateTime

    conn = op.get_bind()
    names = DirectoryNames.of(
        agents=conn.execute(sa.text("SELECT id, name FROM agents")).all(),
        users=conn.execute(sa.text("SELECT id, name FROM users")).all(),
        groups=conn.execute(sa.text("SELECT id, name FROM groups")).all(),
    )
    now = datetime.now(UTC)
    policies = sa.table(
        "policies",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("text", sa.Text),
        sa.column("updated_at", UTCDateTime),
    )
    changes = sa.table(
        "policy_changes",
        sa.column("version", sa.BigInteger),
        sa.column("kind", sa.String),
        sa.column("subject", sa.String),
        sa.column("text", sa.Text),
        sa.column("actor", sa.String),
        sa.column("at", UTCDateTime),
    )
    state = sa.table(
        "policy_state", sa.column("id", sa.Integer), sa.column("version", sa.BigInteger)
    )
    rows = conn.execute(sa.select(policies.c.id, policies.c.name, policies.c.text)).all()
    for pid, name, text in rows:
        try:
            found = rewrite_names(text, names)
        except PolicyError as exc:  # no longer parses: left as it is (it fails closed anyway)
            logging.getLogger("alembic").warning("policy %s left as it is: %s", name, exc)
            continue
        if found.text == text:
            continue
        version = int(conn.execute(sa.select(state.c.version).where(state.c.id == 1)).scalar_one())
        conn.execute(sa.update(state).where(state.c.id == 1).values(version=version + 1))
        conn.execute(
            sa.update(policies).where(policies.c.id == pid).values(text=found.text, updated_at=now)
        )
        conn.execute(
            sa.insert(changes).values(
                version=version + 1,
                kind="replace",
                subject=name,
                text=found.text,
                actor="system",
                at=now,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("window_s")
        batch.drop_column("max_uses")
        batch.drop_column("uses")
