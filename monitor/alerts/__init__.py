"""Alert channels. Registry: config `type:` name -> channel settings model."""

from __future__ import annotations

from monitor.alerts.base import ChannelConfig
from monitor.alerts.email import EmailConfig
from monitor.alerts.slack import SlackConfig

CHANNEL_TYPES: dict[str, type[ChannelConfig]] = {"slack": SlackConfig, "email": EmailConfig}

__all__ = ["CHANNEL_TYPES", "ChannelConfig"]
