"""Covering indexes for the report's per-day series (all time and per brand).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mentions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mentions_collected_at"))
        batch_op.create_index(
            "ix_mentions_collected_at", ["collected_at", "published_at", "sentiment"], unique=False
        )
        batch_op.create_index(
            "ix_mentions_brand_day", ["brand", "collected_at", "published_at", "sentiment"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mentions", schema=None) as batch_op:
        batch_op.drop_index("ix_mentions_brand_day")
        batch_op.drop_index("ix_mentions_collected_at")
        batch_op.create_index(batch_op.f("ix_mentions_collected_at"), ["collected_at"], unique=False)
