"""What an alert says, independent of the channel that carries it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EXCERPT_CHARS = 500
CASE_EVENTS = {
    "resolved": "case resolved",
    "resolution-suggested": "customer seems satisfied (suggested: resolve the case)",
}


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """One outbox event (a flag, or a case event) with everything a channel shows.

    All text fields hold raw, attacker-controlled post data: each channel escapes them for
    its own format (Slack mrkdwn, HTML) when it renders them.
    """

    outbox_id: int
    kind: str  # "flag", "aggregate" (an aggregate rule's alert) or a case event ("resolved")
    severity: str
    brand: str
    rule: str | None = None
    case_id: int | None = None
    author: str | None = None
    author_handle: str | None = None
    author_followers: int | None = None
    source: str | None = None
    url: str | None = None
    title: str | None = None
    text: str = ""
    published_at: datetime | None = None
    why: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def excerpt(self) -> str:
        text = " ".join(f"{self.title or ''} {self.text}".split())
        return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"

    @property
    def headline(self) -> str:
        """One line: severity, what happened, brand and author. Whitespace-free of newlines."""
        what = (
            self.rule
            if self.kind in ("flag", "aggregate")
            else CASE_EVENTS.get(self.kind, f"case {self.kind}")
        )
        who = f" — {self.author}" if self.author else ""
        return " ".join(f"[{self.severity.upper()}] {what} — {self.brand}{who}".split())

    @property
    def command(self) -> str | None:
        return f"monitor cases show {self.case_id}" if self.case_id is not None else None

    def safe_url(self) -> str | None:
        """The post's link, only when it is http(s): a `javascript:` link is never rendered."""
        if self.url and self.url.lower().startswith(("http://", "https://")):
            return self.url
        return None
