"""Aggregate rules: evaluated on a schedule over many mentions, not per post.

- `spike`: per brand, the mentions of the last `window` against the usual rate over the
  `reference` period before it (at least `ratio` times as many, and at least `min_count`);
- `flatline`: a source (a stalled collector) or a brand with no new mention for `window`;
- `frequency`: at least `count` posts flagged (by `rules`, default any) for a brand in `window`.

An alert-worthy result is stored in `aggregate_alerts` and queued in the outbox (kind
`aggregate`) for the rule's `notify` channels, in the caller's transaction. The same rule then
stays quiet for the same brand or source for its cooldown (default: its window), so a spike
alerts once. The daemon calls `evaluate_aggregates` every minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, distinct, func, or_, select, text
from sqlalchemy.orm import Session

from monitor.alerts.outbox import wants
from monitor.confbase import format_duration
from monitor.config import AggregateRule, FlatlineRule, FrequencyRule, Settings, SpikeRule
from monitor.storage.tables import AggregateAlertRow, FlagRow, MentionRow, OutboxRow

EVERY = timedelta(minutes=1)  # how often the daemon evaluates them
_LOCK = 0x6D6F6E61  # PostgreSQL advisory lock: one node evaluates at a time


@dataclass(frozen=True, slots=True)
class AggregateResult:
    """One alert-worthy finding; `alert_id` is None when the rule's cooldown kept it quiet."""

    rule: str
    kind: str
    subject: str
    severity: str
    value: float
    reference: float | None
    window_start: datetime
    window_end: datetime
    matched: tuple[str, ...]
    brand: str | None = None
    source: str | None = None
    alert_id: int | None = None
    queued: int = 0


def evaluate_aggregates(session: Session, settings: Settings, now: datetime) -> list[AggregateResult]:
    """Evaluate every enabled aggregate rule at `now`; store and queue the new alerts."""
    if not any(rule.enabled for rule in settings.aggregates):
        return []
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
    results = []
    for rule in settings.aggregates:
        if not rule.enabled:
            continue
        for finding in _findings(session, settings, rule, now):
            results.append(_record(session, settings, rule, finding, now))
    return results


def _findings(
    session: Session, settings: Settings, rule: AggregateRule, now: datetime
) -> Iterator[AggregateResult]:
    if isinstance(rule, SpikeRule):
        return _spikes(session, settings, rule, now)
    if isinstance(rule, FlatlineRule):
        return _flatlines(session, settings, rule, now)
    assert isinstance(rule, FrequencyRule)
    return _frequencies(session, settings, rule, now)


def _brands(settings: Settings, rule: AggregateRule) -> list[str]:
    return list(rule.brands or (b.name for b in settings.brands))


def _moment_between(start: datetime, end: datetime) -> ColumnElement[bool]:
    """Published (else collected) in (start, end]: written so each branch can use an index."""
    return or_(
        and_(MentionRow.published_at > start, MentionRow.published_at <= end),
        and_(
            MentionRow.published_at.is_(None), MentionRow.collected_at > start, MentionRow.collected_at <= end
        ),
    )


def _spikes(
    session: Session, settings: Settings, rule: SpikeRule, now: datetime
) -> Iterator[AggregateResult]:
    current_start = now - rule.window
    reference_start = current_start - rule.reference
    moment = func.coalesce(MentionRow.published_at, MentionRow.collected_at)
    in_current = func.sum(case((moment > current_start, 1), else_=0))
    rows = session.execute(
        select(MentionRow.brand, in_current, func.count())
        .where(MentionRow.brand.in_(_brands(settings, rule)), _moment_between(reference_start, now))
        .group_by(MentionRow.brand)
    )
    window, reference = format_duration(rule.window), format_duration(rule.reference)
    for brand, current_sum, total in rows:
        current = int(current_sum or 0)
        expected = (int(total) - current) * (rule.window / rule.reference)
        if current < rule.min_count or current < rule.ratio * expected:
            continue
        usual = (
            f"{current / expected:.1f}x the usual {expected:.1f} per {window} (over the previous {reference})"
            if expected
            else f"none in the previous {reference}"
        )
        yield AggregateResult(
            rule=rule.name,
            kind="spike",
            subject=f"brand {brand}",
            severity=rule.severity,
            value=float(current),
            reference=round(expected, 3),
            window_start=current_start,
            window_end=now,
            matched=(f"{current} mentions of {brand} in the last {window}, {usual}",),
            brand=brand,
        )


def _flatlines(
    session: Session, settings: Settings, rule: FlatlineRule, now: datetime
) -> Iterator[AggregateResult]:
    if rule.per == "source":
        enabled = {s.name for s in settings.sources if s.enabled}
        targets = [name for name in (rule.sources or sorted(enabled)) if name in enabled]
        column = MentionRow.source
    else:
        targets, column = _brands(settings, rule), MentionRow.brand
    if not targets:
        return
    last_seen = dict(
        session.execute(
            select(column, func.max(MentionRow.collected_at)).where(column.in_(targets)).group_by(column)
        ).all()
    )
    for target in targets:
        last = last_seen.get(target)
        if last is None or now - last < rule.window:
            continue  # never collected anything yet (a new source), or not silent long enough
        silent = now - last
        yield AggregateResult(
            rule=rule.name,
            kind="flatline",
            subject=f"{rule.per} {target}",
            severity=rule.severity,
            value=round(silent.total_seconds() / 3600, 2),
            reference=None,
            window_start=last,
            window_end=now,
            matched=(
                f"no new mention from {rule.per} {target} for {_hours(silent)} "
                f"(last collected {last:%Y-%m-%d %H:%M} UTC; silent allowed: {format_duration(rule.window)})",
            ),
            brand=target if rule.per == "brand" else None,
            source=target if rule.per == "source" else None,
        )


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f}h" if hours < 48 else f"{hours / 24:.1f}d"


def _frequencies(
    session: Session, settings: Settings, rule: FrequencyRule, now: datetime
) -> Iterator[AggregateResult]:
    start = now - rule.window
    query = (
        select(MentionRow.brand, func.count(distinct(FlagRow.mention_id)))
        .join(MentionRow, MentionRow.id == FlagRow.mention_id)
        .where(
            FlagRow.created_at > start,
            FlagRow.created_at <= now,
            MentionRow.brand.in_(_brands(settings, rule)),
        )
        .group_by(MentionRow.brand)
    )
    if rule.rules:
        query = query.where(FlagRow.rule.in_(rule.rules))
    which = f"by {', '.join(rule.rules)}" if rule.rules else "by any rule"
    for brand, count in session.execute(query):
        if int(count) < rule.count:
            continue
        yield AggregateResult(
            rule=rule.name,
            kind="frequency",
            subject=f"brand {brand}",
            severity=rule.severity,
            value=float(count),
            reference=float(rule.count),
            window_start=start,
            window_end=now,
            matched=(
                f"{count} posts about {brand} flagged {which} in the last {format_duration(rule.window)} "
                f"(alert from {rule.count})",
            ),
            brand=brand,
        )


def _record(
    session: Session, settings: Settings, rule: AggregateRule, finding: AggregateResult, now: datetime
) -> AggregateResult:
    """Store and queue a finding, unless the rule alerted for the same subject within its cooldown."""
    recent = session.scalar(
        select(AggregateAlertRow.id)
        .where(
            AggregateAlertRow.rule == rule.name,
            AggregateAlertRow.subject == finding.subject,
            AggregateAlertRow.created_at > now - rule.quiet_period,
        )
        .limit(1)
    )
    if recent is not None:
        return finding
    alert = AggregateAlertRow(
        rule=finding.rule,
        kind=finding.kind,
        subject=finding.subject,
        brand=finding.brand,
        source=finding.source,
        severity=finding.severity,
        value=finding.value,
        reference=finding.reference,
        window_start=finding.window_start,
        window_end=finding.window_end,
        explanation={"rule": rule.name, "description": rule.description, "matched": list(finding.matched)},
        created_at=now,
    )
    session.add(alert)
    session.flush()
    queued = 0
    for name in dict.fromkeys(rule.notify):
        channel = settings.channels.get(name)
        if channel is None or not wants(channel, finding.severity):
            continue
        session.add(
            OutboxRow(
                event_key=f"aggregate:{alert.id}",
                kind="aggregate",
                channel=name,
                status="pending",
                attempts=0,
                next_try_at=now,
                created_at=now,
            )
        )
        queued += 1
    return replace(finding, alert_id=alert.id, queued=queued)
