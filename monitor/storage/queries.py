"""Reads and writes of mentions and flags, shared by the pipeline, the CLI and the report."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from monitor.mention import Mention
from monitor.storage.tables import CaseRow, FlagRow, MentionRow

_CHUNK = 500
MENTION_COLUMNS = [
    "source",
    "external_id",
    "url",
    "title",
    "text",
    "author_id",
    "author_name",
    "author_handle",
    "author_followers",
    "author_is_brand",
    "lang",
    "published_at",
    "collected_at",
    "conversation_id",
    "brand",
    "sentiment",
    "complaint_score",
    "churn",
]


def known_external_ids(session: Session, source: str, external_ids: Sequence[str]) -> set[str]:
    """Which of these ids are already stored, so the pipeline analyses only new posts."""
    found: set[str] = set()
    for start in range(0, len(external_ids), _CHUNK):
        chunk = external_ids[start : start + _CHUNK]
        found.update(
            session.scalars(
                select(MentionRow.external_id).where(
                    MentionRow.source == source, MentionRow.external_id.in_(chunk)
                )
            )
        )
    return found


def insert_mentions(session: Session, mentions: Sequence[Mention]) -> list[Mention]:
    """Insert, skipping any (source, external_id) already stored; return the stored ones with ids.

    ON CONFLICT DO NOTHING makes the write idempotent even when two nodes race on one post.
    """
    if not mentions:
        return []
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    by_key = {(m.source, m.external_id): m for m in mentions}
    stored: list[Mention] = []
    rows = [{column: getattr(m, column) for column in MENTION_COLUMNS} for m in by_key.values()]
    for start in range(0, len(rows), _CHUNK):
        statement = (
            insert(MentionRow)
            .on_conflict_do_nothing(index_elements=["source", "external_id"])
            .returning(MentionRow.id, MentionRow.source, MentionRow.external_id)
        )
        for row_id, source, external_id in session.execute(statement, rows[start : start + _CHUNK]):
            mention = by_key[(source, external_id)]
            mention.id = row_id
            stored.append(mention)
    return stored


@dataclass(frozen=True, slots=True)
class Filters:
    brand: str | None = None
    source: str | None = None
    since: datetime | None = None
    severity: str | None = None
    status: str | None = None
    rule: str | None = None
    limit: int | None = None


def _mention_dict(row: MentionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": row.source,
        "external_id": row.external_id,
        "url": row.url,
        "title": row.title,
        "author": row.author_name or row.author_handle or row.author_id,
        "author_id": row.author_id,
        "author_followers": row.author_followers,
        "author_is_brand": row.author_is_brand,
        "text": row.text,
        "lang": row.lang,
        "published_at": row.published_at,
        "collected_at": row.collected_at,
        "brand": row.brand,
        "sentiment": row.sentiment,
        "complaint_score": row.complaint_score,
        "churn": row.churn,
    }


def _where_mention(query: Any, filters: Filters) -> Any:
    if filters.brand:
        query = query.where(MentionRow.brand == filters.brand)
    if filters.source:
        query = query.where(MentionRow.source == filters.source)
    return query


def where_flag(query: Any, filters: Filters, *, joined: bool = False) -> Any:
    """The report's filters on a query over flags (the report's rows and its summary counts).

    Unless `joined`, mentions and cases are joined only when a filter needs them.
    """
    if filters.brand or filters.source:
        if not joined:
            query = query.join(MentionRow, FlagRow.mention_id == MentionRow.id)
        query = _where_mention(query, filters)
    if filters.status:
        if not joined:
            query = query.join(CaseRow, FlagRow.case_id == CaseRow.id)
        query = query.where(CaseRow.status == filters.status)
    if filters.since:
        query = query.where(FlagRow.created_at >= filters.since)
    if filters.severity:
        query = query.where(FlagRow.severity == filters.severity)
    if filters.rule:
        query = query.where(FlagRow.rule == filters.rule)
    return query


def list_mentions(session: Session, filters: Filters = Filters()) -> list[dict[str, Any]]:
    """Stored mentions, newest first."""
    query = _where_mention(select(MentionRow), filters)
    if filters.since:
        query = query.where(MentionRow.collected_at >= filters.since)
    query = query.order_by(MentionRow.published_at.desc().nulls_last(), MentionRow.id.desc())
    if filters.limit:
        query = query.limit(filters.limit)
    return [_mention_dict(row) for row in session.scalars(query)]


def flagged_posts(session: Session, filters: Filters = Filters()) -> list[dict[str, Any]]:
    """Flagged posts with their case, most urgent first (priority, then newest)."""
    query = select(FlagRow, MentionRow, CaseRow).join(MentionRow, FlagRow.mention_id == MentionRow.id)
    query = where_flag(query.outerjoin(CaseRow, FlagRow.case_id == CaseRow.id), filters, joined=True)
    query = query.order_by(FlagRow.priority.desc(), MentionRow.published_at.desc().nulls_last(), FlagRow.id)
    if filters.limit:
        query = query.limit(filters.limit)
    posts = []
    for flag, mention, case in session.execute(query):
        post = _mention_dict(mention)
        post.pop("id")
        posts.append(
            {
                "flag_id": flag.id,
                "case_id": case.id if case else None,
                "rule": flag.rule,
                "severity": flag.severity,
                "priority": flag.priority,
                "status": case.status if case else None,
                "explanation": flag.explanation,
                "mention_id": mention.id,
                **post,
                "flagged_at": flag.created_at,
            }
        )
    return posts


def count_mentions(session: Session, sources: Iterable[str] | None = None) -> int:
    query = select(func.count()).select_from(MentionRow)
    if sources is not None:
        query = query.where(MentionRow.source.in_(list(sources)))
    return int(session.scalar(query) or 0)
