"""Health of the sources, as `monitor sources` shows it."""

from __future__ import annotations

from typing import Any

from monitor.collector import build_sources
from monitor.config import Settings
from monitor.storage import state
from monitor.storage.db import Database


def source_health(settings: Settings, db: Database) -> list[dict[str, Any]]:
    """One row per stream of every configured source (and per stream left from removed ones)."""
    with db.session() as session:
        rows = {(r.source, r.stream): r for r in state.all_states(session)}
    health: list[dict[str, Any]] = []
    configured = set()
    for source in build_sources(settings):
        reason = source.disabled_reason()
        for stream in source.streams():
            configured.add((source.name, stream))
            health.append(_row(source.name, source.type, stream, rows.get((source.name, stream)), reason))
        source.close()
    for key, row in rows.items():
        if key not in configured:
            health.append(_row(row.source, "?", row.stream, row, "no longer in the config"))
    return health


def _row(source: str, kind: str, stream: str, row: Any, disabled: str | None) -> dict[str, Any]:
    return {
        "source": source,
        "type": kind,
        "stream": stream,
        "status": "disabled" if disabled else ("error" if row is not None and row.last_error else "ok"),
        "disabled_reason": disabled,
        "last_poll_at": row.last_poll_at if row else None,
        "last_ok_at": row.last_ok_at if row else None,
        "last_error": row.last_error if row else None,
        "last_error_at": row.last_error_at if row else None,
        "errors": row.consecutive_errors if row else 0,
        "next_poll_at": row.next_poll_at if row else None,
        "parked_until": row.parked_until if row else None,
        "mentions": row.mentions_total if row else 0,
    }
