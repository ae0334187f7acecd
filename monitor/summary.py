"""The report's summary: volumes, flags, open-case aging, response times and daily series.

Aggregated in SQL (one pass over the mentions for the daily series and the total), so a summary
stays fast on big histories. Case durations are the one thing computed in Python: percentiles are
not portable SQL, and only cases that were contacted or resolved in the period are read.

Which filters apply where:

- mentions: brand, source, since (on `collected_at`, as `monitor mentions` does);
- flags: all of them, as `queries.flagged_posts` (since on the flag's `created_at`), without limit;
- cases: brand, severity and status on the case; rule and source through the case's flags;
  since on `first_contact_at` / `resolved_at` for the response times. Open-case aging is the state
  at `now`, whatever `since` says: an old open case is what aging is for.

Days are UTC calendar days, `YYYY-MM-DD`: a mention's day is that of `published_at`, or of
`collected_at` when the source gave no date; a flag's day is that of its `created_at`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, literal_column, select
from sqlalchemy.orm import Session

from monitor.confbase import severity_rank
from monitor.storage.queries import Filters, where_flag
from monitor.storage.tables import OPEN_CASE_STATUSES, CaseRow, FlagRow, MentionRow

NEGATIVE = -0.25  # sentiment <= NEGATIVE: negative
POSITIVE = 0.25  # sentiment >= POSITIVE: positive; in between (or unknown): neutral
AGE_BUCKETS = ("<1d", "1-3d", "3-7d", ">7d")
_AGE_LIMITS = (timedelta(days=1), timedelta(days=3), timedelta(days=7))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation between closest ranks (like numpy's default
    and PostgreSQL's percentile_cont); the 0.5-quantile is the usual median. None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _day(session: Session, moment: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp, as text `YYYY-MM-DD`, in the session's dialect.

    Literal SQL, not bound parameters: PostgreSQL only matches a GROUP BY expression to the
    selected one when both are textually the same, and two bound parameters are not.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), moment)
        return func.to_char(utc, literal_column("'YYYY-MM-DD'"))
    if dialect == "sqlite":
        # Stored as ISO text in UTC ("2026-11-01 09:30:00.000000"): the day is its first 10 characters.
        return func.substr(moment, literal_column("1"), literal_column("10"))
    return func.date(moment)


def _hours(session: Session, start: Any, end: Any) -> ColumnElement[Any]:
    """Hours from `start` to `end`, computed by the database: tens of thousands of cases must not
    each become two Python datetimes for one subtraction."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * literal_column("24.0")
    return func.extract("epoch", end - start) / literal_column("3600.0")


def _day_text(value: Any) -> str:
    return value.isoformat()[:10] if isinstance(value, date) else str(value)[:10]


def _where_case(query: Any, filters: Filters) -> Any:
    if filters.brand:
        query = query.where(CaseRow.brand == filters.brand)
    if filters.severity:
        query = query.where(CaseRow.severity == filters.severity)
    if filters.status:
        query = query.where(CaseRow.status == filters.status)
    if filters.rule or filters.source:
        flag = select(FlagRow.id).where(FlagRow.case_id == CaseRow.id)
        if filters.rule:
            flag = flag.where(FlagRow.rule == filters.rule)
        if filters.source:
            flag = flag.join(MentionRow, FlagRow.mention_id == MentionRow.id).where(
                MentionRow.source == filters.source
            )
        query = query.where(exists(flag))
    return query


def _days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def _span(found: Sequence[str], since: datetime | None, now: datetime) -> list[str]:
    """Every day from the period's start (or the first day with data) to now, gaps included."""
    if not found:
        return []
    first, last = min(found), max(found)
    if since is not None:
        first = min(first, _day_text(since.date()))
    return _days(first, max(last, _day_text(now.date())))


def _mention_counts(columns: Sequence[Any], filters: Filters) -> Any:
    """Mentions counted (total, negative, positive) over the filtered period, with `columns` first."""
    query = select(
        *columns,
        func.count(),
        func.count().filter(MentionRow.sentiment <= NEGATIVE),  # FILTER: a third faster than a CASE
        func.count().filter(MentionRow.sentiment >= POSITIVE),
    ).select_from(MentionRow)
    if filters.brand:
        query = query.where(MentionRow.brand == filters.brand)
    if filters.source:
        query = query.where(MentionRow.source == filters.source)
    if filters.since:
        query = query.where(MentionRow.collected_at >= filters.since)
    return query


def _mentions_per_day(session: Session, filters: Filters, now: datetime) -> list[dict[str, Any]]:
    day = _day(session, func.coalesce(MentionRow.published_at, MentionRow.collected_at))
    query = _mention_counts([day], filters)
    counts = {
        _day_text(d): (int(total), int(negative or 0), int(positive or 0))
        for d, total, negative, positive in session.execute(query.group_by(day))
    }
    series = []
    for d in _span(list(counts), filters.since, now):
        total, negative, positive = counts.get(d, (0, 0, 0))
        series.append(
            {
                "day": d,
                "total": total,
                "negative": negative,
                "neutral": total - negative - positive,
                "positive": positive,
                "negative_share": round(negative / total, 4) if total else None,
            }
        )
    return series


def _flags(session: Session, filters: Filters, now: datetime) -> dict[str, Any]:
    by_rule: dict[str, int] = {}
    by_severity: dict[str, int] = {}
    query = where_flag(select(FlagRow.rule, FlagRow.severity, func.count()).select_from(FlagRow), filters)
    for rule, severity, count in session.execute(query.group_by(FlagRow.rule, FlagRow.severity)):
        by_rule[rule] = by_rule.get(rule, 0) + int(count)
        by_severity[severity] = by_severity.get(severity, 0) + int(count)
    day = _day(session, FlagRow.created_at)
    per_day_query = where_flag(select(day, func.count()).select_from(FlagRow), filters).group_by(day)
    counts = {_day_text(d): int(n) for d, n in session.execute(per_day_query)}
    return {
        "total": sum(by_rule.values()),
        "by_rule": dict(sorted(by_rule.items(), key=lambda item: (-item[1], item[0]))),
        "by_severity": dict(sorted(by_severity.items(), key=lambda item: (-severity_rank(item[0]), item[0]))),
        "per_day": [{"day": d, "flags": counts.get(d, 0)} for d in _span(list(counts), filters.since, now)],
    }


def _open_cases(session: Session, filters: Filters, now: datetime) -> dict[str, Any]:
    newest, recent, week = (now - limit for limit in _AGE_LIMITS)
    opened = CaseRow.opened_at
    query = select(
        func.count(),
        func.sum(case((opened > newest, 1), else_=0)),
        func.sum(case((and_(opened <= newest, opened > recent), 1), else_=0)),
        func.sum(case((and_(opened <= recent, opened > week), 1), else_=0)),
        func.sum(case((opened <= week, 1), else_=0)),
    ).where(CaseRow.status.in_(OPEN_CASE_STATUSES))
    total, *buckets = session.execute(_where_case(query, filters)).one()
    return {
        "total": int(total or 0),
        "by_age": {name: int(n or 0) for name, n in zip(AGE_BUCKETS, buckets, strict=True)},
    }


def _durations(session: Session, filters: Filters, end: Any) -> dict[str, Any]:
    """Hours from opening to `end` (a case timestamp) over the cases that reached it in the period."""
    query = _where_case(select(_hours(session, CaseRow.opened_at, end)).where(end.is_not(None)), filters)
    if filters.since:
        query = query.where(end >= filters.since)
    hours = [float(h) for h in session.scalars(query)]
    median, p90 = percentile(hours, 0.5), percentile(hours, 0.9)
    return {
        "cases": len(hours),
        "median_hours": None if median is None else round(median, 2),
        "p90_hours": None if p90 is None else round(p90, 2),
    }


def build_summary(session: Session, filters: Filters, now: datetime, *, daily: bool = True) -> dict[str, Any]:
    """The report's figures over the filtered period (`filters.since` None: all time).

    A JSON-ready dict:
    `mentions`, `negative_share` (of all mentions in the period), `flags` {total, by_rule,
    by_severity} (most first / most severe first), `open_cases` {total, by_age {<1d, 1-3d, 3-7d,
    >7d}}, `time_to_first_contact` and `time_to_resolution` {cases, median_hours, p90_hours},
    `mentions_per_day` [{day, total, negative, neutral, positive, negative_share}], `flags_per_day`
    [{day, flags}]. Daily series run without gaps from the period's start (or first day with data)
    to `now`, and are empty when there is no data at all.

    Without `daily` (the table report shows no series), `mentions_per_day` is left empty and the
    mentions are counted by one pass with no grouping: a million rows grouped by day cost more
    than all the rest of a report.
    """
    if daily:
        per_day = _mentions_per_day(session, filters, now)
        total = sum(day["total"] for day in per_day)
        negative = sum(day["negative"] for day in per_day)
    else:
        per_day = []
        total, negative, _ = session.execute(_mention_counts([], filters)).one()
        total, negative = int(total or 0), int(negative or 0)
    flags = _flags(session, filters, now)
    return {
        "now": now.isoformat(),
        "since": filters.since.isoformat() if filters.since else None,
        "filters": {
            key: value
            for key, value in (
                ("brand", filters.brand),
                ("source", filters.source),
                ("severity", filters.severity),
                ("status", filters.status),
                ("rule", filters.rule),
            )
            if value
        },
        "mentions": total,
        "negative_share": round(negative / total, 4) if total else None,
        "flags": {key: flags[key] for key in ("total", "by_rule", "by_severity")},
        "open_cases": _open_cases(session, filters, now),
        "time_to_first_contact": _durations(session, filters, CaseRow.first_contact_at),
        "time_to_resolution": _durations(session, filters, CaseRow.resolved_at),
        "mentions_per_day": per_day,
        "flags_per_day": flags["per_day"],
    }
