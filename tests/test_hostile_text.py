"""Hostile post text end to end: stored intact (or safely), rendered escaped in every output.

Posts are written by strangers. ANSI escape sequences must not reach a terminal raw (they can
clear the screen, recolour or hide text, retitle the window, or plant hyperlinks); bidi overrides
must not reorder what an agent reads; markup must stay text in HTML and Slack; NUL bytes, invalid
UTF-8 and megabyte posts must neither crash ingest (PostgreSQL refuses NUL in text) nor stall a
source's cursor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.collector import Collector
from monitor.config import Settings
from monitor.feedserver import FeedServer
from monitor.mention import Mention
from monitor.pipeline import MAX_TEXT, Pipeline
from monitor.storage import queries, state
from monitor.storage.db import Database

from servers import slack_webhook

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
ANSI = "\x1b[2J\x1b[31mRED\x1b[0m \x1b]0;pwned title\x07 \x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ \x9b6n"
BIDI = "\u202etxt.exe\u202c \u2066isolated\u2069"
MARKUP = (
    "<script>alert(1)</script> <!channel> @here <@U123> [bold red]rich[/bold red] <https://evil.example|x>"
)
HOSTILE = (
    f"Bouygues Telecom je vais résilier {ANSI} {BIDI} zero\u200bwidth {MARKUP} NUL\x00byte 👨\u200d👩\u200d👧"
)
RULES = [{"name": "churn", "severity": "high", "when": {"words_any": ["résilier"]}, "notify": ["support"]}]


def terminal_safe(output: str) -> None:
    """What a terminal would interpret is gone; the words an agent needs are still there."""
    for raw in ("\x1b", "\x9b", "\x07", "\x00", "\u202e", "\u2066", "\u2069"):
        assert raw not in output, f"{raw!r} reached the terminal"
    assert "Bouygues" in output


def ingest(settings: Settings, db: Database, *mentions: Mention) -> None:
    with db.session() as session:
        Pipeline(settings).ingest(session, list(mentions), source="x", stream="search", cursor={}, now=NOW)


@pytest.fixture
def configured(tmp_path: Path, db_url: str, make_settings: Callable[..., Settings]) -> tuple[Path, Settings]:
    raw = {
        "database": db_url,
        "brands": [{"name": "Bouygues Telecom"}],
        "rules": RULES,
        "channels": {"support": {"type": "slack", "webhook_url": "http://127.0.0.1:9/unused"}},
    }
    path = tmp_path / "monitor.yaml"
    path.write_text(json.dumps(raw))
    return path, make_settings(**{k: v for k, v in raw.items() if k != "database"})


def test_hostile_post_is_stored_and_every_terminal_output_is_safe(
    configured: tuple[Path, Settings], db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    path, settings = configured
    ingest(
        settings,
        db,
        Mention(
            source="x",
            external_id="1",
            text=HOSTILE,
            author_id="x:1",
            author_name=f"Eve {ANSI}",
            author_handle=f"eve{BIDI}",
            published_at=NOW,
        ),
    )
    with db.session() as session:
        (stored,) = queries.list_mentions(session)
    # Stored as written, except NUL (which PostgreSQL cannot store and no reader needs).
    assert stored["text"] == HOSTILE.replace("\x00", "")
    capsys.readouterr()
    for argv in (
        ["report"],
        ["mentions"],
        ["cases", "list"],
        ["cases", "show", "1"],
        ["rules", "backtest", "--since", "2026-11-01"],
        ["rules", "test", HOSTILE],
    ):
        assert main(["--config", str(path), *argv]) == 0, argv
        out = capsys.readouterr().out
        terminal_safe(out)
        assert "RED" in out or argv[0] == "rules" or argv == ["cases", "list"], argv
    assert main(["--config", str(path), "mentions", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["text"] == HOSTILE.replace("\x00", "")


def test_html_report_and_slack_alert_escape_the_same_post(
    configured: tuple[Path, Settings], db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, settings = configured
    with slack_webhook() as hook:
        raw = json.loads(path.read_text())
        raw["channels"]["support"]["webhook_url"] = hook.url
        path.write_text(json.dumps(raw))
        ingest(settings, db, Mention(source="x", external_id="1", text=HOSTILE, author_id="x:1"))
        assert main(["--config", str(path), "alerts", "send"]) == 0
        (post,) = hook.posts
    rendered = json.dumps(post, ensure_ascii=False)
    for raw_markup in ("<!channel>", "<@U123>", "<https://evil.example|", "<script>"):
        assert raw_markup not in rendered
    assert "&lt;!channel&gt;" in rendered
    page = tmp_path / "report.html"
    assert main(["--config", str(path), "report", "--format", "html", "--output", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "\x1b" not in html and "\x00" not in html


def test_invalid_utf8_nul_and_megabyte_posts_in_a_feed_are_stored_and_the_cursor_moves(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    huge = "Bouygues Telecom " + "très lent " * 150_000  # ~1.5 MB of text
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        b"<item><guid>bad-bytes</guid><title>Bouygues Telecom \xff\xfe panne \xc3</title>"
        b"<description>invalid \xed\xa0\x80 utf-8</description></item>"
        b"<item><guid>huge</guid><title>long</title><description>"
        + huge.encode()
        + b"</description></item></channel></rss>"
    )
    url = feed_server.add("/hostile.xml", body, content_type="application/rss+xml; charset=utf-8")
    settings = make_settings(
        sources=[{"type": "rss", "name": "blogs", "urls": [url], "max_bytes": 5_000_000}]
    )
    collector = Collector(settings, db)
    try:
        report = collector.collect()
    finally:
        collector.close()
    assert not report.errors, report.errors
    with db.session() as session:
        rows = {row["external_id"]: row for row in queries.list_mentions(session)}
        (source_state,) = state.all_states(session)
    assert set(rows) == {"bad-bytes", "huge"}
    assert "Bouygues Telecom" in rows["bad-bytes"]["title"] and "panne" in rows["bad-bytes"]["title"]
    assert len(rows["huge"]["text"]) == MAX_TEXT  # cut to the stored maximum, not refused
    assert source_state.cursor.get("etag") == feed_server.routes["/hostile.xml"].etag
    assert source_state.last_error is None
