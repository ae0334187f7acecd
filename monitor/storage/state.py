"""Per-stream source state: the cursor, and the health shown by `monitor sources`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.storage.tables import SourceStateRow


def get_state(session: Session, source: str, stream: str) -> SourceStateRow:
    """The state row for a stream, created (empty cursor) on first use."""
    row = session.scalar(
        select(SourceStateRow).where(SourceStateRow.source == source, SourceStateRow.stream == stream)
    )
    if row is None:
        row = SourceStateRow(source=source, stream=stream, cursor={}, consecutive_errors=0, mentions_total=0)
        session.add(row)
        session.flush()
    return row


def load_cursor(session: Session, source: str, stream: str) -> dict[str, Any]:
    row = session.scalar(
        select(SourceStateRow.cursor).where(SourceStateRow.source == source, SourceStateRow.stream == stream)
    )
    return dict(row or {})


def record_success(
    session: Session, source: str, stream: str, cursor: dict[str, Any], now: datetime, new_mentions: int
) -> None:
    """Save the cursor with the mentions it covers (same transaction) and clear the error."""
    row = get_state(session, source, stream)
    row.cursor = dict(cursor)
    row.last_poll_at = now
    row.last_ok_at = now
    row.last_error = None
    row.consecutive_errors = 0
    row.parked_until = None
    row.mentions_total = (row.mentions_total or 0) + new_mentions


def record_failure(session: Session, source: str, stream: str, error: str, now: datetime) -> None:
    """Keep the cursor where it is; remember why this poll failed."""
    row = get_state(session, source, stream)
    row.last_poll_at = now
    row.last_error = error[:2000]
    row.last_error_at = now
    row.consecutive_errors = (row.consecutive_errors or 0) + 1


def schedule_next(session: Session, source: str, streams: list[str], next_poll_at: datetime) -> None:
    for stream in streams:
        get_state(session, source, stream).next_poll_at = next_poll_at


def all_states(session: Session) -> list[SourceStateRow]:
    return list(session.scalars(select(SourceStateRow).order_by(SourceStateRow.source, SourceStateRow.id)))
