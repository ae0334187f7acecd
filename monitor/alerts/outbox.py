"""The outbox: alerts are rows written in the same transaction as the flag they announce.

Delivery claims due rows with a short lease (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so
several nodes never take the same row), sends them, and marks each sent or schedules a retry
with exponential backoff and jitter. A crash between "sent" and "marked sent" leaves the row to
come due again when its lease ends: that alert is sent a second time, never a third.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from monitor.alerts.base import ChannelConfig, Notifier
from monitor.alerts.message import AlertMessage
from monitor.confbase import severity_rank
from monitor.errors import DeliveryError
from monitor.logs import RedactSecrets, secret_values
from monitor.storage.db import Database
from monitor.storage.queries import insert_values
from monitor.storage.tables import OUTBOX, AggregateAlertRow, CaseRow, FlagRow, MentionRow, OutboxRow

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)  # default of a channel's `lease`
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)


def wants(channel: ChannelConfig, severity: str) -> bool:
    return severity_rank(severity) >= severity_rank(channel.min_severity)


def flag_alerts(
    *,
    flag_id: int,
    case_id: int | None,
    severity: str,
    channels: Iterable[str],
    configured: Mapping[str, ChannelConfig],
    now: datetime,
) -> list[dict[str, Any]]:
    """The outbox rows announcing a flag: one per channel that wants this severity.

    Rows, not writes: the pipeline inserts a whole batch's alerts in one statement
    (`insert_alerts`), in the transaction of their flags.
    """
    rows = []
    for name in dict.fromkeys(channels):
        channel = configured.get(name)
        if channel is not None and wants(channel, severity):
            rows.append(_row(f"flag:{flag_id}", "flag", name, now, flag_id=flag_id, case_id=case_id))
    return rows


def case_event_alerts(
    *, event_id: int, case_id: int, kind: str, configured: Mapping[str, ChannelConfig], now: datetime
) -> list[dict[str, Any]]:
    """A resolution notice ("resolved", or "resolution-suggested" when the author seems
    satisfied) for every channel that asked for them with `notify_resolved`."""
    if kind not in ("resolved", "resolution-suggested"):
        return []
    return [
        _row(f"case-event:{event_id}", kind, name, now, flag_id=None, case_id=case_id)
        for name, channel in configured.items()
        if channel.notify_resolved
    ]


def enqueue_case_event(
    session: Session,
    *,
    event_id: int,
    case_id: int,
    kind: str,
    configured: Mapping[str, ChannelConfig],
    now: datetime,
) -> int:
    """Queue a case event's notices now (a command's single event); returns how many."""
    rows = case_event_alerts(event_id=event_id, case_id=case_id, kind=kind, configured=configured, now=now)
    insert_alerts(session, rows)
    return len(rows)


def insert_alerts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Write outbox rows (from `flag_alerts` / `case_event_alerts`) in one statement."""
    insert_values(session, OUTBOX, _COLUMNS, [tuple(row[c] for c in _COLUMNS) for row in rows])


_COLUMNS = (
    "event_key",
    "kind",
    "channel",
    "status",
    "attempts",
    "next_try_at",
    "created_at",
    "flag_id",
    "case_id",
)


def _row(event_key: str, kind: str, channel: str, now: datetime, **ids: Any) -> dict[str, Any]:
    return {
        "event_key": event_key,
        "kind": kind,
        "channel": channel,
        "status": "pending",
        "attempts": 0,
        "next_try_at": now,
        "created_at": now,
        **ids,
    }


def build_message(session: Session, row: OutboxRow) -> AlertMessage:
    """What the alert says, read from the flag, its mention and its case (or the aggregate alert)."""
    if row.kind == "aggregate":
        return _aggregate_message(session, row)
    flag = session.get(FlagRow, row.flag_id) if row.flag_id is not None else None
    mention = session.get(MentionRow, flag.mention_id) if flag is not None else None
    case = session.get(CaseRow, row.case_id) if row.case_id is not None else None
    explanation = flag.explanation if flag is not None else {}
    return AlertMessage(
        outbox_id=row.id,
        kind=row.kind,
        severity=flag.severity if flag is not None else (case.severity if case else "low"),
        brand=(mention.brand if mention else None) or (case.brand if case else "?"),
        rule=flag.rule if flag is not None else None,
        case_id=row.case_id,
        author=(mention.author_name if mention else None) or (case.author_name if case else None),
        author_handle=mention.author_handle if mention else None,
        author_followers=mention.author_followers if mention else None,
        source=mention.source if mention else None,
        url=mention.url if mention else None,
        title=mention.title if mention else None,
        text=mention.text if mention else (f"Case #{case.id} was {row.kind}." if case else ""),
        published_at=mention.published_at if mention else None,
        why=tuple(str(m) for m in (explanation or {}).get("matched") or ()),
    )


def _aggregate_message(session: Session, row: OutboxRow) -> AlertMessage:
    """An aggregate rule's alert (`event_key` is `aggregate:<id>`): no post, the finding instead."""
    prefix, _, number = row.event_key.partition(":")
    alert = (
        session.get(AggregateAlertRow, int(number)) if prefix == "aggregate" and number.isdigit() else None
    )
    if alert is None:
        return AlertMessage(
            outbox_id=row.id, kind=row.kind, severity="low", brand="?", text="(alert deleted)"
        )
    why = tuple(str(m) for m in (alert.explanation or {}).get("matched") or ())
    return AlertMessage(
        outbox_id=row.id,
        kind=row.kind,
        severity=alert.severity,
        brand=alert.brand or alert.subject,
        rule=alert.rule,
        source=alert.source,
        text=(alert.explanation or {}).get("description") or f"{alert.kind}: {alert.subject}",
        published_at=alert.created_at,
        why=why,
    )


@dataclass(slots=True)
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min ... up to 1 h, with ±20 % jitter so retries do not stampede."""
    delay = min(FIRST_RETRY * 2 ** max(0, attempts - 1), MAX_RETRY)
    return delay * random.uniform(0.8, 1.2)


class Delivery:
    """Sends due outbox rows through the configured channels."""

    def __init__(
        self,
        db: Database,
        notifiers: Mapping[str, Notifier],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch: int = 50,
    ) -> None:
        self.db = db
        self.notifiers = dict(notifiers)
        self.clock = clock
        self.batch = batch
        # A provider's error may quote the webhook URL or the login: keep those out of the outbox.
        self._redact = RedactSecrets(secret_values([n.config for n in self.notifiers.values()])).redact

    def run_once(self) -> DeliveryReport:
        report = DeliveryReport()
        for name, notifier in self.notifiers.items():
            if notifier.digest:
                self._digest(name, notifier, report)
            else:
                for row_id in self._claim(name, self.batch):
                    self._deliver(notifier, [row_id], report)
        return report

    def _lease(self, channel: str) -> timedelta:
        notifier = self.notifiers.get(channel)
        return notifier.config.lease if notifier is not None else LEASE

    def _claim(self, channel: str, limit: int, *, all_pending: bool = False) -> list[int]:
        """Take due rows with a lease: nobody else sends them until it ends."""
        now = self.clock()
        with self.db.session() as session:
            query = select(OutboxRow.id).where(OutboxRow.channel == channel, OutboxRow.status == "pending")
            if not all_pending:
                query = query.where(OutboxRow.next_try_at <= now)
            query = query.order_by(OutboxRow.created_at, OutboxRow.id).limit(limit)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if ids:
                session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id.in_(ids))
                    .values(next_try_at=now + self._lease(channel), attempts=OutboxRow.attempts + 1)
                )
        return ids

    def _digest(self, channel: str, notifier: Notifier, report: DeliveryReport) -> None:
        """One message per period: when the oldest waiting alert is a period old, send them all."""
        assert notifier.digest is not None
        now = self.clock()
        with self.db.session() as session:
            oldest = session.scalar(
                select(OutboxRow.created_at)
                .where(
                    OutboxRow.channel == channel, OutboxRow.status == "pending", OutboxRow.next_try_at <= now
                )
                .order_by(OutboxRow.created_at)
                .limit(1)
            )
        if oldest is None or now - oldest < timedelta(seconds=notifier.digest):
            return
        ids = self._claim(channel, 1000)
        if ids:
            self._deliver(notifier, ids, report)

    def _deliver(self, notifier: Notifier, ids: Sequence[int], report: DeliveryReport) -> None:
        with self.db.session() as session:
            rows = [session.get(OutboxRow, row_id) for row_id in ids]
            messages = [build_message(session, row) for row in rows if row is not None]
            limits = {row.id: (row.attempts, notifier.config.max_attempts) for row in rows if row is not None}
        try:
            notifier.send(messages)
        except DeliveryError as exc:
            self._failed(ids, exc, limits, report)
            return
        now = self.clock()
        with self.db.session() as session:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(list(ids)))
                .values(status="sent", sent_at=now, last_error=None)
            )
        report.sent += len(ids)

    def _failed(
        self,
        ids: Sequence[int],
        exc: DeliveryError,
        limits: dict[int, tuple[int, int]],
        report: DeliveryReport,
    ) -> None:
        now = self.clock()
        error = self._redact(str(exc))[:2000]
        report.errors.append(error)
        log.warning("alert delivery failed: %s", error)
        with self.db.session() as session:
            for row_id in ids:
                attempts, limit = limits.get(row_id, (1, 1))
                if exc.permanent or attempts >= limit:
                    values: dict[str, Any] = {"status": "failed", "last_error": error}
                    report.failed += 1
                else:
                    delay = (
                        timedelta(seconds=exc.retry_after)
                        if exc.retry_after is not None
                        else backoff(attempts)
                    )
                    values = {"next_try_at": now + delay, "last_error": error}
                    report.retried += 1
                session.execute(update(OutboxRow).where(OutboxRow.id == row_id).values(**values))


def retry(db: Database, ids: Sequence[int] = (), *, failed: bool = False, now: datetime | None = None) -> int:
    """Put failed (or given) rows back in the queue, due now, with a fresh attempt budget."""
    now = now or datetime.now(UTC)
    with db.session() as session:
        query = update(OutboxRow).where(OutboxRow.status != "sent")
        if ids:
            query = query.where(OutboxRow.id.in_(list(ids)))
        elif failed:
            query = query.where(OutboxRow.status == "failed")
        else:
            return 0
        result = session.execute(query.values(status="pending", attempts=0, next_try_at=now))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def list_alerts(db: Database, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    with db.session() as session:
        query = select(OutboxRow).order_by(OutboxRow.id.desc())
        if status:
            query = query.where(OutboxRow.status == status)
        if limit:
            query = query.limit(limit)
        return [
            {
                "id": row.id,
                "kind": row.kind,
                "channel": row.channel,
                "status": row.status,
                "attempts": row.attempts,
                "flag_id": row.flag_id,
                "case_id": row.case_id,
                "created_at": row.created_at,
                "next_try_at": row.next_try_at if row.status == "pending" else None,
                "sent_at": row.sent_at,
                "last_error": row.last_error,
            }
            for row in session.scalars(query)
        ]


def notifiers_for(channels: Mapping[str, ChannelConfig]) -> dict[str, Notifier]:
    from monitor.alerts import build_notifier

    return {name: build_notifier(name, config) for name, config in channels.items()}
