"""Slack: a Block Kit message per alert through an incoming webhook (slack_sdk).

Post text is escaped for Slack (`&`, `<`, `>`), so a tweet containing `<!channel>`, `<!here>`
or `<@U123>` can never ping anyone or forge a link.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

from pydantic import SecretStr
from slack_sdk.webhook import WebhookClient

from monitor.alerts.base import ChannelConfig, Notifier
from monitor.alerts.message import AlertMessage
from monitor.confbase import Duration
from monitor.errors import DeliveryError
from monitor.logs import RedactSecrets

SEVERITY_EMOJI = {
    "low": ":large_blue_circle:",
    "medium": ":warning:",
    "high": ":rotating_light:",
    "critical": ":fire:",
}


class SlackConfig(ChannelConfig):
    type: Literal["slack"] = "slack"
    webhook_url: SecretStr
    timeout: Duration = timedelta(seconds=10)


def escape(text: str) -> str:
    """Slack's own escaping: the three characters that make links and mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str, label: str) -> str:
    # Inside <url|label>, a `|` or `>` in the URL would end it early: percent-encode them.
    safe = url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C").replace(" ", "%20")
    return f"<{safe}|{escape(label)}>"


def blocks(message: AlertMessage) -> list[dict[str, Any]]:
    """The Block Kit layout: headline, who and where, the post, why it was flagged, what to do."""
    emoji = SEVERITY_EMOJI.get(message.severity, ":bell:")
    who = escape(message.author or "unknown author")
    if message.author_handle:
        who += f" (@{escape(message.author_handle)})"
    if message.author_followers is not None:
        who += f", {message.author_followers:,} followers"
    fields = [
        {"type": "mrkdwn", "text": f"*Brand*\n{escape(message.brand)}"},
        {"type": "mrkdwn", "text": f"*Author*\n{who}"},
        {"type": "mrkdwn", "text": f"*Source*\n{escape(message.source or '?')}"},
        {"type": "mrkdwn", "text": f"*Case*\n#{message.case_id}" if message.case_id else "*Case*\n—"},
    ]
    post = f"> {escape(message.excerpt)}" if message.excerpt else "> (no text)"
    url = message.safe_url()
    if url:
        post += f"\n{_link(url, 'Open the post')}"
    result: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *{escape(message.headline)}*"}},
        {"type": "section", "fields": fields},
        {"type": "section", "text": {"type": "mrkdwn", "text": post[:2900]}},
    ]
    if message.why:
        why = "\n".join(f"• {escape(line)}" for line in message.why)
        result.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"*Why:* {why}"[:2900]}]})
    if message.command:
        result.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Act: `{message.command}`"}]}
        )
    return result


class SlackNotifier(Notifier):
    type = "slack"
    Config = SlackConfig
    config: SlackConfig

    def __init__(self, name: str, config: SlackConfig) -> None:
        super().__init__(name, config)
        url = config.webhook_url.get_secret_value()
        # slack_sdk logs the webhook URL (a secret) at DEBUG: give it a logger that scrubs it.
        sdk_log = logging.getLogger(f"monitor.alerts.slack.{name}")
        sdk_log.addFilter(RedactSecrets([url]))
        self._client = WebhookClient(
            url,
            timeout=max(1, int(config.timeout.total_seconds())),
            retry_handlers=[],  # the outbox retries, with backoff, and remembers why
            logger=sdk_log,
        )

    def send(self, messages: Sequence[AlertMessage]) -> None:
        for message in messages:
            self._post(message)

    def _post(self, message: AlertMessage) -> None:
        where = f"Slack channel {self.name!r}"
        try:
            response = self._client.send(
                text=escape(message.headline), blocks=blocks(message), unfurl_links=False
            )
        except (OSError, ValueError) as exc:  # urllib's URLError, timeouts, refused connections
            raise DeliveryError(f"{where}: could not reach the webhook ({type(exc).__name__})") from None
        if response.status_code == 200:
            return
        body = (response.body or "")[:200] if isinstance(response.body, str) else ""
        if response.status_code == 429:
            retry_after = _seconds(response.headers.get("Retry-After") or response.headers.get("retry-after"))
            raise DeliveryError(f"{where}: rate limited by Slack (429)", retry_after=retry_after)
        permanent = response.status_code in (400, 403, 404, 410) and body in (
            "invalid_token",
            "no_service",
            "channel_not_found",
            "channel_is_archived",
            "no_active_hooks",
            "invalid_payload",
        )
        raise DeliveryError(
            f"{where}: Slack answered HTTP {response.status_code} {body}".strip(), permanent=permanent
        )


def _seconds(value: Any) -> float | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None
