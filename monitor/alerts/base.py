"""What every alert channel's settings share."""

from __future__ import annotations

from typing import Literal

from monitor.confbase import Frozen

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")


class ChannelConfig(Frozen):
    type: str
    min_severity: Severity = "low"
    notify_resolved: bool = False
