"""Invalidation: the user's reason for marking a product bad or qualified.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

Written by hand, a frozen snapshot (plain SQLAlchemy types, never Wisp's models). The new column has a
server default, so existing rows stay valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.add_column(sa.Column(
            "validity_note", sa.Text(), nullable=False, server_default=sa.text("''"),
            comment="Why a user marked it bad or qualified (is_valid 0 or 2); '' if never"))


def downgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.drop_column("validity_note")
