"""Retention: old mentions that nobody needs are deleted, in batches, so the database stays small.

Kept whatever their age: mentions with a flag, and mentions in the timeline of an open case.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, exists, select

from monitor.storage.db import Database
from monitor.storage.tables import OPEN_CASE_STATUSES, CaseEventRow, CaseRow, FlagRow, MentionRow

BATCH = 1000


def purge(db: Database, retention_days: int, now: datetime, batch: int = BATCH) -> int:
    """Delete unflagged, case-free mentions collected before `retention_days` ago; return how many."""
    cutoff = now - timedelta(days=retention_days)
    flagged = exists().where(FlagRow.mention_id == MentionRow.id)
    in_open_case = (
        exists()
        .where(CaseEventRow.mention_id == MentionRow.id)
        .where(CaseEventRow.case_id == CaseRow.id)
        .where(CaseRow.status.in_(OPEN_CASE_STATUSES))
    )
    deleted = 0
    while True:
        with db.session() as session:
            ids = list(
                session.scalars(
                    select(MentionRow.id)
                    .where(MentionRow.collected_at < cutoff, ~flagged, ~in_open_case)
                    .limit(batch)
                )
            )
            if not ids:
                return deleted
            session.execute(delete(MentionRow).where(MentionRow.id.in_(ids)))
            deleted += len(ids)
