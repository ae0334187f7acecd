"""Alerts through the outbox to a real Slack-like webhook server and a real SMTP server."""

from __future__ import annotations

import email
import email.policy
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from monitor.alerts.outbox import LEASE, Delivery, notifiers_for
from monitor.cli import main
from monitor.config import Settings
from monitor.mention import Mention
from monitor.pipeline import Pipeline
from monitor.storage.db import Database
from monitor.storage.tables import OutboxRow

from servers import Mailbox, SlackWebhook, slack_webhook, smtp_server

RULES = [
    {
        "name": "churn",
        "severity": "high",
        "when": {"words_any": ["résilier", "cancel"]},
        "notify": ["slack", "mail"],
    },
    {"name": "outage", "severity": "low", "when": {"words_any": ["panne", "outage"]}, "notify": ["slack"]},
]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def webhook() -> Iterator[SlackWebhook]:
    with slack_webhook() as hook:
        yield hook


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server(user="bot", password="sm7p-pa55") as box:
        yield box


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], webhook: SlackWebhook, mailbox: Mailbox) -> Settings:
    return make_settings(
        rules=RULES,
        channels={
            "slack": {"type": "slack", "webhook_url": webhook.url, "timeout": "1s"},
            "mail": {
                "type": "email",
                "host": mailbox.host,
                "port": mailbox.port,
                "starttls": False,
                "username": "bot",
                "password": "sm7p-pa55",
                "from": "monitor@example.com",
                "to": ["support@example.com", "lead@example.com"],
            },
        },
    )


def flag(db: Database, settings: Settings, clock: Clock, *posts: tuple[str, str]) -> None:
    """Ingest posts (author, text) as the collector would: flags and outbox rows in one go."""
    pipeline = Pipeline(settings, enrichers=[])
    mentions = [
        Mention(
            source="x",
            external_id=f"{author}-{i}",
            text=text,
            author_id=f"x:{author}",
            author_name=author,
            author_handle=author.lower(),
            author_followers=1234,
            url=f"https://x.com/{author}/status/{i}",
        )
        for i, (author, text) in enumerate(posts)
    ]
    with db.session() as session:
        pipeline.ingest(session, mentions, source="x", now=clock())


def delivery(settings: Settings, db: Database, clock: Clock) -> Delivery:
    return Delivery(db, notifiers_for(settings.channels), clock=clock)


def outbox(db: Database) -> list[OutboxRow]:
    with db.session() as session:
        return list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))


def test_a_flag_reaches_slack_and_email_once(
    db: Database, settings: Settings, clock: Clock, webhook: SlackWebhook, mailbox: Mailbox
) -> None:
    flag(db, settings, clock, ("Anne", "Bouygues Telecom, je vais résilier demain"))
    report = delivery(settings, db, clock).run_once()
    assert (report.sent, report.retried, report.failed) == (2, 0, 0)
    (post,) = webhook.posts
    rendered = json.dumps(post, ensure_ascii=False)
    assert "[HIGH] churn — Bouygues Telecom — Anne" in post["text"]
    assert "Anne (@anne), 1,234 followers" in rendered
    assert "<https://x.com/Anne/status/0|Open the post>" in rendered
    assert "words: résilier" in rendered and "monitor cases show 1" in rendered
    (envelope,) = mailbox.messages
    assert envelope.rcpt_tos == ["support@example.com", "lead@example.com"] and mailbox.logins == ["bot"]
    mail = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert mail["Subject"] == "[monitor] [HIGH] churn — Bouygues Telecom — Anne"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "je vais résilier demain" in text and "Why: words: résilier" in text
    assert "je vais résilier demain" in html and "<blockquote>" in html
    assert {row.status for row in outbox(db)} == {"sent"}
    assert delivery(settings, db, clock).run_once().sent == 0  # nothing is sent twice
    assert len(webhook.posts) == 1 and len(mailbox.messages) == 1


def test_an_endpoint_down_for_an_hour_gets_every_alert_exactly_once_when_back(
    db: Database, settings: Settings, clock: Clock, webhook: SlackWebhook
) -> None:
    webhook.mode = "500"
    flag(db, settings, clock, *[(f"User{i}", f"Bouygues Telecom outage number {i}") for i in range(5)])
    sender = delivery(settings, db, clock)
    for _ in range(12):  # an hour, looked at every 5 minutes
        sender.run_once()
        clock.advance(timedelta(minutes=5))
    assert webhook.posts == [] and webhook.attempts >= 10
    rows = outbox(db)
    assert all(r.status == "pending" and "HTTP 500" in (r.last_error or "") for r in rows)
    webhook.mode = "ok"
    for _ in range(30):
        sender.run_once()
        clock.advance(timedelta(minutes=5))
    texts = [p["text"] for p in webhook.posts]
    assert sorted(texts) == sorted(f"[LOW] outage — Bouygues Telecom — User{i}" for i in range(5))
    assert {r.status for r in outbox(db)} == {"sent"}


def test_a_failed_channel_is_retried_even_when_the_other_succeeded(
    db: Database, settings: Settings, clock: Clock, webhook: SlackWebhook, mailbox: Mailbox
) -> None:
    webhook.mode = "500"
    flag(db, settings, clock, ("Anne", "Bouygues Telecom: cancel everything"))
    delivery(settings, db, clock).run_once()
    by_channel = {r.channel: r for r in outbox(db)}
    assert by_channel["mail"].status == "sent" and by_channel["slack"].status == "pending"
    webhook.mode = "ok"
    clock.advance(timedelta(minutes=2))
    assert delivery(settings, db, clock).run_once().sent == 1
    assert len(mailbox.messages) == 1 and len(webhook.posts) == 1


def test_slack_429_is_retried_after_retry_after(
    db: Database, settings: Settings, clock: Clock, webhook: SlackWebhook
) -> None:
    webhook.mode, webhook.retry_after = "429", 42
    flag(db, settings, clock, ("Anne", "Bouygues Telecom outage"))
    delivery(settings, db, clock).run_once()
    (row,) = outbox(db)
    assert row.next_try_at == clock() + timedelta(seconds=42) and "rate limited by Slack (429)" in (
        row.last_error or ""
    )


def test_a_slow_webhook_times_out_and_secrets_never_leak(
    db: Database, settings: Settings, clock: Clock, webhook: SlackWebhook, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.mode = "slow"
    flag(db, settings, clock, ("Anne", "Bouygues Telecom outage"))
    with caplog.at_level(logging.DEBUG):
        report = delivery(settings, db, clock).run_once()
    assert report.retried == 1 and "Slack channel 'slack': could not reach the webhook" in report.errors[0]
    (row,) = outbox(db)
    for text in (row.last_error or "", caplog.text, *report.errors):
        assert "s3cr3tw3bh00k" not in text


def test_retries_stop_at_max_attempts_then_retry_command_requeues(
    db: Database,
    make_settings: Callable[..., Settings],
    clock: Clock,
    webhook: SlackWebhook,
    tmp_path: Path,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    channels = {"slack": {"type": "slack", "webhook_url": webhook.url, "max_attempts": 2}}
    rules = [{"name": "outage", "severity": "low", "when": {"words_any": ["outage"]}, "notify": ["slack"]}]
    settings = make_settings(rules=rules, channels=channels)
    webhook.mode = "500"
    flag(db, settings, clock, ("Anne", "Bouygues Telecom outage"))
    sender = delivery(settings, db, clock)
    for _ in range(3):
        sender.run_once()
        clock.advance(timedelta(hours=1))
    (row,) = outbox(db)
    assert (row.status, row.attempts) == ("failed", 2)
    config = tmp_path / "monitor.yaml"
    config.write_text(
        json.dumps(
            {
                "database": db_url,
                "brands": [{"name": "Bouygues Telecom"}],
                "rules": rules,
                "channels": channels,
            }
        )
    )
    capsys.readouterr()
    assert main(["--config", str(config), "alerts", "list", "--status", "failed", "--format", "json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["status"] == "failed" and "HTTP 500" in listed["last_error"]
    assert main(["--config", str(config), "alerts", "retry", "--failed"]) == 0
    webhook.mode = "ok"
    assert main(["--config", str(config), "alerts", "send"]) == 0
    assert "sent 1" in capsys.readouterr().out and len(webhook.posts) == 1


def test_a_revoked_webhook_fails_at_once(
    db: Database, settings: Settings, clock: Clock, webhook: SlackWebhook
) -> None:
    webhook.mode = "gone"
    flag(db, settings, clock, ("Anne", "Bouygues Telecom outage"))
    assert delivery(settings, db, clock).run_once().failed == 1
    assert outbox(db)[0].status == "failed"


def test_a_crash_between_sent_and_marked_resends_once_never_more(
    db: Database, settings: Settings, clock: Clock, webhook: SlackWebhook
) -> None:
    flag(db, settings, clock, ("Anne", "Bouygues Telecom outage"))
    sender = delivery(settings, db, clock)
    (row_id,) = sender._claim("slack", 10)  # the node claims the row ...
    with db.session() as session:
        from monitor.alerts.outbox import build_message

        message = build_message(session, session.get(OutboxRow, row_id))
    sender.notifiers["slack"].send([message])  # ... sends it, and dies before marking it sent.
    assert sender.run_once().sent == 0  # the lease holds: nobody resends at once
    clock.advance(LEASE + timedelta(seconds=1))
    assert sender.run_once().sent == 1  # after the lease: sent a second time
    clock.advance(timedelta(hours=2))
    assert sender.run_once().sent == 0
    assert len(webhook.posts) == 2


def test_email_digest_sends_one_message_per_period(
    db: Database, make_settings: Callable[..., Settings], clock: Clock, mailbox: Mailbox
) -> None:
    channels = {
        "mail": {"type": "email", "host": mailbox.host, "port": mailbox.port, "starttls": False,
                 "from": "monitor@example.com", "to": ["support@example.com"], "digest": "1h"},
    }  # fmt: skip
    rules = [{"name": "outage", "severity": "medium", "when": {"words_any": ["outage"]}, "notify": ["mail"]}]
    settings = make_settings(rules=rules, channels=channels)
    flag(db, settings, clock, ("Anne", "Bouygues Telecom outage here"))
    clock.advance(timedelta(minutes=20))
    flag(db, settings, clock, ("Bob", "Bouygues Telecom outage there"))
    sender = delivery(settings, db, clock)
    assert sender.run_once().sent == 0 and mailbox.messages == []
    clock.advance(timedelta(minutes=41))
    assert sender.run_once().sent == 2
    (envelope,) = mailbox.messages
    mail = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert mail["Subject"].startswith("[monitor] 2 new alerts")
    body = mail.get_body(("plain",)).get_content()
    assert "outage here" in body and "outage there" in body


HOSTILE = (
    "<!channel> <!here> <@U123> <https://evil.example|click me> <script>alert(1)</script> & 😡 שלום עולם"
)


def test_hostile_post_text_cannot_ping_link_or_inject(
    db: Database, settings: Settings, clock: Clock, webhook: SlackWebhook, mailbox: Mailbox
) -> None:
    flag(db, settings, clock, ("Eve <@U999>", f"Bouygues Telecom je vais résilier {HOSTILE} " + "x" * 5000))
    delivery(settings, db, clock).run_once()
    (post,) = webhook.posts
    rendered = json.dumps(post, ensure_ascii=False)
    for raw in ("<!channel>", "<!here>", "<@U123>", "<@U999>", "<https://evil.example|", "<script>"):
        assert raw not in rendered
    assert "&lt;!channel&gt;" in rendered and "&lt;@U123&gt;" in rendered and "&amp;" in rendered
    assert "😡" in rendered and "שלום עולם" in rendered
    assert all(
        len(b.get("text", {}).get("text", "")) <= 3000 for b in post["blocks"] if b["type"] == "section"
    )
    mail = email.message_from_bytes(mailbox.messages[0].original_content, policy=email.policy.default)
    html = mail.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\n" not in mail["Subject"]
