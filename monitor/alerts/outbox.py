"""The outbox: alerts are rows written in the same transaction as the flag they announce.

Delivery reads pending rows later, so a crash between "flagged" and "sent" loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy.orm import Session

from monitor.alerts.base import ChannelConfig
from monitor.confbase import severity_rank
from monitor.storage.tables import OutboxRow


def wants(channel: ChannelConfig, severity: str) -> bool:
    return severity_rank(severity) >= severity_rank(channel.min_severity)


def enqueue_flag(
    session: Session,
    *,
    flag_id: int,
    case_id: int | None,
    severity: str,
    channels: Iterable[str],
    configured: Mapping[str, ChannelConfig],
    now: datetime,
) -> int:
    """One pending row per channel that wants this severity; returns how many were queued."""
    queued = 0
    for name in dict.fromkeys(channels):
        channel = configured.get(name)
        if channel is None or not wants(channel, severity):
            continue
        session.add(
            OutboxRow(
                event_key=f"flag:{flag_id}",
                kind="flag",
                flag_id=flag_id,
                case_id=case_id,
                channel=name,
                status="pending",
                attempts=0,
                next_try_at=now,
                created_at=now,
            )
        )
        queued += 1
    return queued
