"""The one interface every alert channel implements, and the settings all channels share."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import timedelta
from typing import ClassVar

from pydantic import Field

from monitor.alerts.message import AlertMessage
from monitor.confbase import Duration, Frozen, Severity


class ChannelConfig(Frozen):
    type: str
    min_severity: Severity = "low"
    notify_resolved: bool = False
    max_attempts: int = Field(default=12, ge=1, le=100)
    # How long a node keeps an alert it is sending before another may retry it (crash safety):
    # longer than the channel's own timeout, short enough that a crashed node's alerts go out soon.
    lease: Duration = timedelta(minutes=5)


class Notifier(ABC):
    """A channel. Subclasses set `type` and `Config` and implement `send`.

    `send` delivers a list of messages (one, or a digest's worth) or raises `DeliveryError`.
    """

    type: ClassVar[str]
    Config: ClassVar[builtins.type[ChannelConfig]]

    def __init__(self, name: str, config: ChannelConfig) -> None:
        self.name = name
        self.config = config

    @property
    def digest(self) -> float | None:
        """Seconds to gather alerts into one message, or None to send each at once."""
        return None

    @abstractmethod
    def send(self, messages: Sequence[AlertMessage]) -> None:
        """Deliver these messages (raise DeliveryError naming the channel, never its secrets)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
