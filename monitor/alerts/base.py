"""What every alert channel's settings share."""

from __future__ import annotations

from monitor.confbase import Frozen, Severity


class ChannelConfig(Frozen):
    type: str
    min_severity: Severity = "low"
    notify_resolved: bool = False
