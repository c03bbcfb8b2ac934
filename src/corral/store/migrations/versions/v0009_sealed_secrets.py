"""Sealed secrets: the TOTP seed moves to a column wide enough for its sealed form.

The values themselves are sealed by `Store.migrate` right after the upgrade (the key lives in a
file, not in the database, so a migration alone cannot seal): `users.totp_secret` is emptied into
`users.totp_secret_sealed`; OIDC client secrets and push authorization headers are sealed in place.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("totp_secret_sealed", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("totp_secret_sealed")
