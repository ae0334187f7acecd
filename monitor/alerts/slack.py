"""Slack incoming-webhook channel settings."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from monitor.alerts.base import ChannelConfig


class SlackConfig(ChannelConfig):
    type: Literal["slack"] = "slack"
    webhook_url: SecretStr
