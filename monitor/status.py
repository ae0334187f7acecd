"""Health of the sources, as `monitor sources` shows it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from monitor.collector import build_sources
from monitor.config import Settings
from monitor.errors import MonitorError
from monitor.storage import state
from monitor.storage.db import Database
from monitor.storage.tables import OutboxRow, SourceStateRow


def source_health(settings: Settings, db: Database, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per stream of every configured source (and per stream left from removed ones)."""
    now = now or datetime.now(UTC)
    sources = build_sources(settings)
    with db.session() as session:
        rows = {(r.source, r.stream): r for r in state.all_states(session)}
        reads = {s.name: state.reads_this_month(session, s.name, now) for s in sources}
    health: list[dict[str, Any]] = []
    configured = set()
    for source in sources:
        reason = source.disabled_reason()
        fingerprint = source.fingerprint()
        for stream in source.streams():
            configured.add((source.name, stream))
            row = rows.get((source.name, stream))
            parked = state.parked_reason(row, now, fingerprint) if row is not None else None
            health.append(
                _row(source.name, source.type, stream, row, reason, parked)
                | {
                    "reads_this_month": reads[source.name],
                    "monthly_read_cap": source.config.monthly_read_cap,
                    "estimated_cost": round(reads[source.name] * source.config.price_per_read, 4),
                }
            )
        source.close()
    for key, row in rows.items():
        if key not in configured:
            health.append(_row(row.source, "?", row.stream, row, "no longer in the config", None))
    return health


def _row(
    source: str, kind: str, stream: str, row: SourceStateRow | None, disabled: str | None, parked: str | None
) -> dict[str, Any]:
    if disabled:
        status = "disabled"
    elif parked:
        status = "parked"
    else:
        status = "error" if row is not None and row.last_error else "ok"
    return {
        "source": source,
        "type": kind,
        "stream": stream,
        "status": status,
        "disabled_reason": disabled,
        "parked_reason": parked,
        "last_poll_at": row.last_poll_at if row else None,
        "last_ok_at": row.last_ok_at if row else None,
        "last_error": row.last_error if row else None,
        "last_error_at": row.last_error_at if row else None,
        "last_warning": row.last_warning if row else None,
        "errors": row.consecutive_errors if row else 0,
        "next_poll_at": row.next_poll_at if row else None,
        "parked_until": row.parked_until if row else None,
        "mentions": row.mentions_total if row else 0,
    }


FAILING_STREAM_ERRORS = 3  # a stream failing this many polls in a row makes the node unhealthy
STUCK_ALERT = timedelta(minutes=30)  # an alert waiting longer means delivery is stuck


def health(settings: Settings, database_url: str, now: datetime | None = None) -> dict[str, Any]:
    """What `monitor status` reports: database, outbox backlog, each stream; and whether all is well."""
    now = now or datetime.now(UTC)
    report: dict[str, Any] = {
        "database_ok": False,
        "database_error": None,
        "outbox_pending": 0,
        "oldest_pending_minutes": None,
        "sources": [],
        "problems": [],
    }
    try:
        db = Database(database_url)
        with db.session() as session:
            pending = session.execute(
                select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.status == "pending")
            ).one()
        report["database_ok"] = True
        report["outbox_pending"] = int(pending[0])
        if pending[1] is not None:
            report["oldest_pending_minutes"] = round((now - pending[1]).total_seconds() / 60, 1)
        report["sources"] = source_health(settings, db, now)
        db.dispose()
    except MonitorError as exc:
        report["database_error"] = str(exc)
        report["problems"].append(f"database: {exc}")
    if (
        report["oldest_pending_minutes"] is not None
        and report["oldest_pending_minutes"] > STUCK_ALERT.total_seconds() / 60
    ):
        report["problems"].append(f"alerts waiting for {report['oldest_pending_minutes']:.0f} min")
    for row in report["sources"]:
        if row["status"] == "error" and row["errors"] >= FAILING_STREAM_ERRORS:
            report["problems"].append(f"source {row['source']} failing: {row['last_error']}")
    report["healthy"] = not report["problems"]
    return report
