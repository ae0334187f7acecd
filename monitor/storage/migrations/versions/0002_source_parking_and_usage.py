"""Source parking (rate limits, refused credentials), partial-failure warnings, monthly read counts.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_usage",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("reads", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_usage")),
        sa.UniqueConstraint("source", "month", name=op.f("uq_source_usage_source_month")),
    )
    with op.batch_alter_table("source_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parked_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("config_fingerprint", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("last_warning", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("source_state", schema=None) as batch_op:
        batch_op.drop_column("last_warning")
        batch_op.drop_column("config_fingerprint")
        batch_op.drop_column("parked_reason")

    op.drop_table("source_usage")
