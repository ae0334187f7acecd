"""SQLite: an index on the report's day expression, so the per-day series needs no sort.

`summary._mentions_per_day` groups a million mentions by `substr(coalesce(published_at,
collected_at), 1, 10)`; without an index on that expression SQLite sorts every row (1.5 s on a
million). Brand, source, sentiment and collected_at ride along, so every report filter is
answered from the index alone. PostgreSQL aggregates with a hash and needs none of this.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DAY = "substr(coalesce(published_at, collected_at), 1, 10)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE INDEX IF NOT EXISTS ix_mentions_day ON mentions ({DAY}, brand, source, sentiment, collected_at)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP INDEX IF EXISTS ix_mentions_day")
