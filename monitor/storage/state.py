"""Per-stream source state: the cursor, health, parking, and monthly read counts.

This is what `monitor sources` shows, and what decides whether a stream is polled at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Insert, Table, Update, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from monitor.storage.tables import SourceStateRow, SourceUsageRow


def get_state(session: Session, source: str, stream: str) -> SourceStateRow:
    """The state row for a stream, created (empty cursor) on first use.

    Kept in the session once read: a poll records success, warning and next poll time in one
    transaction, and each would otherwise read the row again.
    """
    rows: dict[tuple[str, str], SourceStateRow] = session.info.setdefault("source_state", {})
    row = rows.get((source, stream))
    if row is not None:
        return row
    row = session.scalar(
        select(SourceStateRow).where(SourceStateRow.source == source, SourceStateRow.stream == stream)
    )
    if row is None:
        row = _new_state(session, source, stream)
    rows[(source, stream)] = row
    return row


def _new_state(session: Session, source: str, stream: str) -> SourceStateRow:
    # Not flushed here: the session writes all new rows of a transaction in one batch.
    row = SourceStateRow(source=source, stream=stream, cursor={}, consecutive_errors=0, mentions_total=0)
    session.add(row)
    return row


def preload(session: Session, source: str, streams: Sequence[str] | None = None) -> None:
    """Read the state rows of a source (or of these streams of it) at once, creating the
    missing ones: one query for a thousand feeds instead of one each."""
    rows: dict[tuple[str, str], SourceStateRow] = session.info.setdefault("source_state", {})
    query = select(SourceStateRow).where(SourceStateRow.source == source)
    if streams is not None:
        query = query.where(SourceStateRow.stream.in_(list(streams)))
    for row in session.scalars(query):
        rows[(row.source, row.stream)] = row
    for stream in streams or ():
        if (source, stream) not in rows:
            rows[(source, stream)] = _new_state(session, source, stream)


@dataclass(frozen=True, slots=True)
class PollState:
    """What a poll reads of a stream's state before fetching it (`poll_states`)."""

    cursor: dict[str, Any]
    parked_reason: str | None = None
    parked_until: datetime | None = None
    config_fingerprint: str | None = None


def poll_states(session: Session, source: str, streams: Sequence[str]) -> dict[str, PollState]:
    """The cursor and parking of these streams of a source, read by one plain query (no ORM
    object per row: a thousand feeds are read in a few milliseconds); missing rows are created."""
    table = cast(Table, SourceStateRow.__table__)
    wanted = set(streams)
    query = select(
        table.c.stream,
        table.c.cursor,
        table.c.parked_reason,
        table.c.parked_until,
        table.c.config_fingerprint,
    ).where(table.c.source == source)
    found = {
        stream: PollState(dict(cursor or {}), reason, until, fingerprint)
        for stream, cursor, reason, until, fingerprint in session.execute(query)
        if stream in wanted
    }
    for stream in streams:
        if stream not in found:
            get_state(session, source, stream)  # created with the transaction
            found[stream] = PollState({})
    return found


def load_cursor(session: Session, source: str, stream: str) -> dict[str, Any]:
    row = session.scalar(
        select(SourceStateRow.cursor).where(SourceStateRow.source == source, SourceStateRow.stream == stream)
    )
    return dict(row or {})


def parked_reason(row: SourceStateRow | PollState, now: datetime, fingerprint: str) -> str | None:
    """Why this stream must not be polled now, or None.

    Parked until a time (rate limit, monthly cap): until that time. Parked without a time
    (credentials refused): until the source's settings change.
    """
    if not row.parked_reason:
        return None
    if row.parked_until is not None:
        if row.parked_until > now:
            return f"{row.parked_reason} (parked until {row.parked_until:%Y-%m-%d %H:%M} UTC)"
        return None
    if row.config_fingerprint == fingerprint:
        return f"{row.parked_reason} (parked until its settings change)"
    return None


def record_success(
    session: Session,
    source: str,
    stream: str,
    cursor: dict[str, Any],
    now: datetime,
    new_mentions: int,
    also: Mapping[str, Any] | None = None,
) -> None:
    """Save the cursor with the mentions it covers (same transaction) and clear the error;
    `also` sets more columns in the same write (the poll's warning and next poll time).

    A row this transaction has not loaded is written by one upsert, with no ORM object: a
    stream's batch costs one statement of state instead of a read and a write.
    """
    values: dict[str, Any] = {
        "cursor": dict(cursor),
        "last_poll_at": now,
        "last_ok_at": now,
        "last_error": None,
        "consecutive_errors": 0,
        "parked_until": None,
        "parked_reason": None,
        "config_fingerprint": None,
        **(also or {}),
    }
    if values.get("last_warning"):
        values["last_warning"] = values["last_warning"][:2000]
    row = session.info.setdefault("source_state", {}).get((source, stream))
    if row is None:
        connection = session.connection()
        statement = _upsert(connection.dialect.name, tuple(values))
        connection.execute(
            statement, {"source": source, "stream": stream, "mentions_total": new_mentions, **values}
        )
        return
    for name, value in values.items():
        setattr(row, name, value)
    row.mentions_total = (row.mentions_total or 0) + new_mentions


@lru_cache(maxsize=16)
def _upsert(dialect: str, columns: tuple[str, ...]) -> Insert:
    """`record_success`'s upsert for these columns, built once: its values are bound
    parameters, so SQLAlchemy compiles it once and each batch pays only the execution."""
    table = cast(Table, SourceStateRow.__table__)
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    names = ("source", "stream", "mentions_total", *columns)
    statement = (
        insert(table).inline().values({name: bindparam(name, type_=table.c[name].type) for name in names})
    )
    total = func.coalesce(table.c.mentions_total, 0) + statement.excluded.mentions_total
    return statement.on_conflict_do_update(
        index_elements=[table.c.source, table.c.stream],
        set_={**{name: statement.excluded[name] for name in columns}, "mentions_total": total},
    )


def record_not_modified(
    session: Session, source: str, streams: Sequence[str], now: datetime, next_poll_at: datetime
) -> None:
    """Clean polls that move no cursor (feeds that answered 304): their state rows updated by one
    statement (per 500 streams), without loading them.

    The same as `record_success` (cursor and mention count left as they are), a cleared warning
    and `schedule(next_poll_at)`, one next poll time for them all: a thousand unchanged feeds
    cost two statements, not a thousand ORM rows read and written.
    """
    cached: dict[tuple[str, str], SourceStateRow] = session.info.setdefault("source_state", {})
    loaded = [row for row in (cached.pop((source, stream), None) for stream in streams) if row is not None]
    if loaded:  # rows this session holds: their pending changes first, and read again after
        session.flush()
    statement = _not_modified()
    for start in range(0, len(streams), 500):
        session.execute(
            statement,
            {
                "b_source": source,
                "b_streams": list(streams[start : start + 500]),
                "b_now": now,
                "b_next": next_poll_at,
            },
        )
    for row in loaded:
        session.expire(row)


@lru_cache(maxsize=1)
def _not_modified() -> Update:
    """`record_not_modified`'s UPDATE, built once with its values bound (the streams as one
    expanding parameter): SQLAlchemy compiles it once, not a statement and 500 literals a poll."""
    table = cast(Table, SourceStateRow.__table__)
    now = bindparam("b_now", type_=table.c.last_poll_at.type)
    return (
        update(table)
        .where(
            table.c.source == bindparam("b_source", type_=table.c.source.type),
            table.c.stream.in_(bindparam("b_streams", expanding=True, type_=table.c.stream.type)),
        )
        .values(
            last_poll_at=now,
            last_ok_at=now,
            last_error=None,
            consecutive_errors=0,
            parked_until=None,
            parked_reason=None,
            config_fingerprint=None,
            last_warning=None,
            next_poll_at=bindparam("b_next", type_=table.c.next_poll_at.type),
        )
    )


def record_warning(session: Session, source: str, stream: str, warning: str | None) -> None:
    get_state(session, source, stream).last_warning = warning[:2000] if warning else None


def record_failure(
    session: Session,
    source: str,
    stream: str,
    error: str,
    now: datetime,
    *,
    park_until: datetime | None = None,
    park_fingerprint: str | None = None,
) -> int:
    """Keep the cursor where it is; remember why this poll failed. Returns the error count."""
    row = get_state(session, source, stream)
    row.last_poll_at = now
    row.last_error = error[:2000]
    row.last_error_at = now
    row.consecutive_errors = (row.consecutive_errors or 0) + 1
    if park_until is not None or park_fingerprint is not None:
        row.parked_reason = error[:2000]
        row.parked_until = park_until
        row.config_fingerprint = park_fingerprint
    return row.consecutive_errors


def park(session: Session, source: str, stream: str, reason: str, until: datetime) -> None:
    """Hold a healthy stream until `until` (e.g. its monthly read cap is spent)."""
    row = get_state(session, source, stream)
    row.parked_reason = reason
    row.parked_until = until
    row.config_fingerprint = None


def schedule(session: Session, source: str, stream: str, next_poll_at: datetime) -> None:
    get_state(session, source, stream).next_poll_at = next_poll_at


def all_states(session: Session) -> list[SourceStateRow]:
    return list(session.scalars(select(SourceStateRow).order_by(SourceStateRow.source, SourceStateRow.id)))


def month_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m")


def next_month(now: datetime) -> datetime:
    now = now.astimezone(UTC)
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)


def reads_this_month(session: Session, source: str, now: datetime) -> int:
    reads = session.scalar(
        select(SourceUsageRow.reads).where(
            SourceUsageRow.source == source, SourceUsageRow.month == month_of(now)
        )
    )
    return int(reads or 0)


def add_reads(session: Session, source: str, now: datetime, reads: int) -> None:
    """Count billed reads in the same transaction as the mentions they produced."""
    month = month_of(now)
    row = session.scalar(
        select(SourceUsageRow).where(SourceUsageRow.source == source, SourceUsageRow.month == month)
    )
    if row is None:
        session.add(SourceUsageRow(source=source, month=month, reads=reads))
    else:
        row.reads += reads
