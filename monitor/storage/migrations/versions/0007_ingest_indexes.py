"""Indexes for the ingest path: a case's author, and an append-only day index on SQLite.

- `ix_cases_author` on cases (brand, author_key): a flag whose author has no open case reopens
  the author's last closed case; without it, finding that case read the whole table.
- SQLite's `ix_mentions_day` (migration 0006) put `sentiment` right after (day, brand, source):
  each new mention went to a random place in its day's entries, so a batch of 100 posts wrote
  about 60 pages of that index alone (a quarter of SQLite's work per batch). With `id` before
  `sentiment`, new mentions are appended; the report reads the index as before (it only needs
  the columns to be there).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

DAY = "substr(coalesce(published_at, collected_at), 1, 10)"


def upgrade() -> None:
    op.create_index("ix_cases_author", "cases", ["brand", "author_key"], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP INDEX IF EXISTS ix_mentions_day")
        op.execute(
            f"CREATE INDEX ix_mentions_day ON mentions ({DAY}, brand, source, id, sentiment, collected_at)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP INDEX IF EXISTS ix_mentions_day")
        op.execute(
            f"CREATE INDEX ix_mentions_day ON mentions ({DAY}, brand, source, sentiment, collected_at)"
        )
    op.drop_index("ix_cases_author", table_name="cases")
