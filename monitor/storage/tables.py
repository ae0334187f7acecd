"""The schema. Changes go through an Alembic migration in `migrations/versions/`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY is the rowid).
Id = BigInteger().with_variant(Integer(), "sqlite")
OPEN_CASE_STATUSES = ("new", "contacted")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, returns timezone-aware UTC on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class MentionRow(Base):
    __tablename__ = "mentions"
    __table_args__ = (
        UniqueConstraint("source", "external_id"),
        Index("ix_mentions_brand_published", "brand", "published_at"),
        Index("ix_mentions_author", "brand", "author_id"),
        # Covering indexes for the report's per-day series (the table is read, not the rows).
        Index("ix_mentions_collected_at", "collected_at", "published_at", "sentiment"),
        Index("ix_mentions_brand_day", "brand", "collected_at", "published_at", "sentiment"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(512))
    url: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    author_id: Mapped[str | None] = mapped_column(String(300))
    author_name: Mapped[str | None] = mapped_column(String(300))
    author_handle: Mapped[str | None] = mapped_column(String(100))
    author_followers: Mapped[int | None] = mapped_column(Integer)
    author_is_brand: Mapped[bool] = mapped_column(Boolean, default=False)
    lang: Mapped[str | None] = mapped_column(String(8))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    collected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    conversation_id: Mapped[str | None] = mapped_column(String(64))
    brand: Mapped[str] = mapped_column(String(200))
    sentiment: Mapped[float | None] = mapped_column(Float)
    complaint_score: Mapped[float | None] = mapped_column(Float)
    churn: Mapped[bool | None] = mapped_column(Boolean)


class SourceStateRow(Base):
    """One row per stream of a source (a feed URL, an API endpoint): its cursor and health."""

    __tablename__ = "source_state"
    __table_args__ = (UniqueConstraint("source", "stream"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(1000))
    cursor: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_errors: Mapped[int] = mapped_column(Integer, default=0)
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    parked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    parked_reason: Mapped[str | None] = mapped_column(Text)
    # Hash of the source's settings when it was parked "until the config changes".
    config_fingerprint: Mapped[str | None] = mapped_column(String(64))
    last_warning: Mapped[str | None] = mapped_column(Text)
    mentions_total: Mapped[int] = mapped_column(Integer, default=0)


class SourceUsageRow(Base):
    """Posts read (billed) per source and calendar month, for read caps and cost estimates."""

    __tablename__ = "source_usage"
    __table_args__ = (UniqueConstraint("source", "month"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    month: Mapped[str] = mapped_column(String(7))  # 2026-11
    reads: Mapped[int] = mapped_column(Integer, default=0)


class CaseRow(Base):
    """A customer to take care of: one open case per (brand, author)."""

    __tablename__ = "cases"
    __table_args__ = (
        Index(
            "uq_cases_open_author",
            "brand",
            "author_key",
            unique=True,
            sqlite_where=text("status IN ('new', 'contacted')"),
            postgresql_where=text("status IN ('new', 'contacted')"),
        ),
        Index("ix_cases_status", "status", "priority"),
        Index("ix_cases_author", "brand", "author_key"),  # an author's last closed case, to reopen
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    brand: Mapped[str] = mapped_column(String(200))
    author_key: Mapped[str] = mapped_column(String(300))
    author_name: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default="new")
    severity: Mapped[str] = mapped_column(String(16))
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    assignee: Mapped[str | None] = mapped_column(String(200))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hint: Mapped[str | None] = mapped_column(String(200))  # e.g. "customer seems satisfied"


class CaseEventRow(Base):
    """The case timeline: every change, with who and when."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    mention_id: Mapped[int | None] = mapped_column(ForeignKey("mentions.id", ondelete="SET NULL"))


class FlagRow(Base):
    __tablename__ = "flags"
    __table_args__ = (UniqueConstraint("mention_id", "rule"), Index("ix_flags_created_at", "created_at"))

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    mention_id: Mapped[int] = mapped_column(ForeignKey("mentions.id", ondelete="CASCADE"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="SET NULL"), index=True)
    rule: Mapped[str] = mapped_column(String(100))
    severity: Mapped[str] = mapped_column(String(16))
    priority: Mapped[float] = mapped_column(Float)
    explanation: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxRow(Base):
    """One alert to deliver on one channel; delivery state is per channel."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("event_key", "channel"),
        Index("ix_outbox_pending", "status", "next_try_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    event_key: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    flag_id: Mapped[int | None] = mapped_column(ForeignKey("flags.id", ondelete="CASCADE"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AggregateAlertRow(Base):
    """An aggregate rule's alert-worthy result: a volume spike, a silent source, a run of complaints."""

    __tablename__ = "aggregate_alerts"
    __table_args__ = (Index("ix_aggregate_alerts_rule_subject", "rule", "subject", "created_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # spike, flatline, frequency
    subject: Mapped[str] = mapped_column(String(300))  # "brand Free", "source blogs"
    brand: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float)  # the count in the window (or hours silent)
    reference: Mapped[float | None] = mapped_column(Float)  # what was expected, when known
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    explanation: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# The Core tables, for the ingest path's bulk statements: one INSERT or UPDATE per batch and table,
# with no unit-of-work bookkeeping per row.
MENTIONS = cast(Table, MentionRow.__table__)
CASES = cast(Table, CaseRow.__table__)
CASE_EVENTS = cast(Table, CaseEventRow.__table__)
FLAGS = cast(Table, FlagRow.__table__)
OUTBOX = cast(Table, OutboxRow.__table__)
