"""Alert channels. Registry: config `type:` name -> Notifier class. Adding a channel is one file plus one line here."""

from __future__ import annotations

from monitor.alerts.base import ChannelConfig, Notifier
from monitor.alerts.email import EmailNotifier
from monitor.alerts.slack import SlackNotifier

NOTIFIERS: dict[str, type[Notifier]] = {cls.type: cls for cls in (SlackNotifier, EmailNotifier)}
CHANNEL_TYPES: dict[str, type[ChannelConfig]] = {name: cls.Config for name, cls in NOTIFIERS.items()}


def build_notifier(name: str, config: ChannelConfig) -> Notifier:
    return NOTIFIERS[config.type](name, config)


__all__ = ["CHANNEL_TYPES", "NOTIFIERS", "ChannelConfig", "Notifier", "build_notifier"]
