"""Known secrets through the whole product: zero occurrences in logs, output, errors and the database.

The secrets come from the environment (`${VAR}` in the config), as in production. The run covers
success and failure paths on purpose: an X API that refuses the token (and echoes it back in its
error, as a careless proxy would), a Slack webhook that fails before it works, an SMTP login. Then
every line the CLI printed or logged (at debug level) and every column of every table is searched.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import responses
from conftest import reflected
from sqlalchemy import select

from monitor import logs
from monitor.cli import main
from monitor.storage.db import Database

from servers import slack_webhook, smtp_server

SEARCH_URL = "https://api.twitter.com/2/tweets/search/recent"
BEARER = "AAAAAAAAAAAAAAAAAAAAAbearer%2Fs3cret-xq7"
SMTP_PASSWORD = "smtp-s3cret-pw-84k"
SLACK_SECRET_PATH = "s3cr3tw3bh00k"  # the secret part of the webhook URL (see servers.slack_webhook)
TWEETS = {
    "data": [
        {
            "id": str(1_800_000_000_000_000_000 + n),
            "text": f"@bouyguestelecom encore en panne, je vais résilier ! ({n})",
            "author_id": str(100 + n),
            "created_at": "2026-11-26T10:00:00.000Z",
            "lang": "fr",
        }
        for n in range(3)
    ],
    "includes": {
        "users": [{"id": str(100 + n), "username": f"user{n}", "name": f"User {n}"} for n in range(3)]
    },
    "meta": {"newest_id": str(1_800_000_000_000_000_002), "result_count": 3},
}


def test_no_secret_reaches_logs_output_errors_or_the_database(
    tmp_path: Path,
    db_url: str,
    rsps: responses.RequestsMock,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiosmtpd's own debug log is the test server's, not the product's: it would show the login.
    monkeypatch.setattr(logging.getLogger("mail.log"), "disabled", True)
    with slack_webhook() as hook, smtp_server(user="bot", password=SMTP_PASSWORD) as mailbox:
        monkeypatch.setenv("X_BEARER_TOKEN", BEARER)
        monkeypatch.setenv("SLACK_WEBHOOK_URL", hook.url)
        monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
        secrets = (BEARER, SLACK_SECRET_PATH, SMTP_PASSWORD)
        config = tmp_path / "monitor.yaml"
        config.write_text(
            json.dumps(
                {
                    "database": db_url,
                    "brands": [{"name": "Bouygues Telecom", "handles": ["@bouyguestelecom"]}],
                    "sources": [{"type": "twitter", "name": "x", "bearer_token": "${X_BEARER_TOKEN}"}],
                    "rules": [
                        {
                            "name": "churn",
                            "severity": "high",
                            "when": {"words_any": ["résilier"]},
                            "notify": ["slack", "mail"],
                        }
                    ],
                    "channels": {
                        "slack": {"type": "slack", "webhook_url": "${SLACK_WEBHOOK_URL}", "timeout": "2s"},
                        "mail": {
                            "type": "email",
                            "host": mailbox.host,
                            "port": mailbox.port,
                            "starttls": False,
                            "username": "bot",
                            "password": "${SMTP_PASSWORD}",
                            "from": "monitor@example.com",
                            "to": ["support@example.com"],
                        },
                    },
                }
            )
        )

        def cli(*argv: str) -> int:
            return main(["--config", str(config), "--log-level", "debug", *argv])

        # The API refuses the token and echoes it back in its error detail.
        echo = {
            "title": "Unauthorized",
            "type": "about:blank",
            "status": 401,
            "detail": f"Bearer {BEARER} is not valid",
        }
        rsps.add(responses.GET, SEARCH_URL, json=echo, status=401)
        assert cli("collect", "--once") == 1
        rsps.replace(responses.GET, SEARCH_URL, json=TWEETS)
        cli("sources", "--format", "json")
        # The refused stream is parked until the settings change: the user sets a new token.
        monkeypatch.setenv("X_BEARER_TOKEN", BEARER + "2")
        secrets = (*secrets, BEARER + "2")
        assert cli("collect", "--once") == 0
        hook.mode = "500"
        assert cli("alerts", "send") == 1  # Slack fails, email goes out
        hook.mode = "ok"
        for argv in (
            ("report",),
            ("report", "--format", "json"),
            ("mentions", "--format", "csv"),
            ("cases", "list"),
            ("alerts", "list"),
            ("sources",),
            ("status",),
            ("db", "upgrade"),
        ):
            cli(*argv)
        printed = capfd.readouterr()
        assert len(mailbox.messages) == 3 and set(mailbox.logins) == {"bot"}
    output = printed.out + printed.err
    assert "Unauthorized" in output or "refused" in output  # the failure was reported...
    assert "database error" not in output
    for secret in secrets:
        assert secret not in output, f"secret {secret[:6]}… printed or logged"  # ...without the secret
    db = Database(db_url)
    try:
        metadata = reflected(db.engine)
        with db.session() as session:
            rows = [
                (table.name, row)
                for table in metadata.sorted_tables
                for row in session.execute(select(table))
            ]
    finally:
        db.dispose()
    assert any(name == "mentions" for name, _ in rows)
    dumped = "\n".join(f"{name}: {tuple(row)!r}" for name, row in rows)
    for secret in secrets:
        assert secret not in dumped, f"secret {secret[:6]}… stored in the database"
    logs.configure("WARNING", "human")
