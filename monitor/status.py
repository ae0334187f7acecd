"""Health of the sources, as `monitor sources` shows it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monitor.collector import build_sources
from monitor.config import Settings
from monitor.storage import state
from monitor.storage.db import Database
from monitor.storage.tables import SourceStateRow


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
