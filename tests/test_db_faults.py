"""Database faults: PostgreSQL restarted under a running daemon, and a full disk under SQLite."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conftest import BRAND
from pgserver import binaries, private_postgres
from sqlalchemy import event
from test_daemon import CHURN, item, start, stop, stored, wait_for, write_config

from monitor.collector import Collector
from monitor.config import settings_from_dict
from monitor.feedserver import FeedServer
from monitor.storage import queries, state
from monitor.storage.db import Database
from monitor.storage.tables import MentionRow

from feeds import rss
from servers import slack_webhook

CHURN_RULE = [{"name": "churn", "severity": "high", "when": {"words_any": ["résilier"]}, "notify": ["ops"]}]


@pytest.mark.skipif(binaries() is None, reason="needs PostgreSQL server binaries (initdb, pg_ctl)")
def test_postgresql_restarted_mid_run_loses_nothing_and_the_daemon_carries_on(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """Crash-stop the server under `monitor run`, publish while it is down, start it again."""
    with private_postgres() as server, slack_webhook() as webhook:
        posts = [item(n, CHURN, f"author{n}") for n in range(3)]
        url = feed_server.add("/feed", rss(posts))
        config = write_config(
            tmp_path / "monitor.yaml",
            server.url,
            [url],
            rules=CHURN_RULE,
            channels={"ops": {"type": "slack", "webhook_url": webhook.url}},
        )
        process = start(config)
        try:
            wait_for(lambda: stored(server.url) == 3, what="the first items")
            wait_for(lambda: len(webhook.posts) == 3, what="the first alerts")
            server.stop("immediate")  # connections cut, no clean shutdown
            posts = [item(n, CHURN, f"author{n}") for n in range(3, 6)] + posts
            feed_server.add("/feed", rss(posts))
            hits = len(feed_server.hits_for("/feed"))
            time.sleep(3)  # several 1 s polls against a dead database
            assert process.poll() is None, "the daemon exited while the database was down"
            server.start()
            wait_for(lambda: stored(server.url) == 6, timeout=40, what="collection after the restart")
            wait_for(lambda: len(webhook.posts) >= 6, timeout=40, what="the alerts after the restart")
            assert len(feed_server.hits_for("/feed")) > hits
        finally:
            code, out, _ = stop(process)
        assert code == 0, out
        # The outage was reported, naming the database (no password in it) and what failed.
        assert "database error on postgresql+psycopg://postgres@127.0.0.1" in out, out
        texts = [p["text"] for p in webhook.posts]
        assert {f"author{n}" for n in range(6)} <= {a for t in texts for a in [_author(t)] if a}
        assert max(texts.count(t) for t in texts) <= 2  # at least once, at most one resend
        db = Database(server.url)
        try:
            with db.session() as session:
                ids = [m.external_id for m in session.query(MentionRow)]
        finally:
            db.dispose()
        assert sorted(ids) == sorted(f"post-{n}" for n in range(6))


def _author(text: str) -> str | None:
    return next(
        (word.strip("*_:,") for word in text.split() if word.strip("*_:,").startswith("author")), None
    )


def _full_after(db: Database, pages: int) -> None:
    """SQLite answers SQLITE_FULL ("database or disk is full") once the file would pass `pages` pages."""

    @event.listens_for(db.engine, "connect")
    def _limit(connection: Any, _record: Any) -> None:
        connection.execute(f"PRAGMA max_page_count = {pages}")

    db.engine.dispose()  # connections opened before the listener (schema check) are not reused


def test_a_full_disk_stores_nothing_half_and_recovers_when_space_is_back(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    url = feed_server.add("/feed", rss([item(n, CHURN + " " + "x" * 3000, f"a{n}") for n in range(20)]))
    db_url = f"sqlite:///{tmp_path / 'full.db'}"
    Database(db_url).dispose()  # schema created with room to spare
    settings = settings_from_dict(
        {"database": db_url, "brands": [BRAND], "sources": [{"type": "rss", "name": "blogs", "urls": [url]}]}
    )
    full = Database(db_url)
    with full.session() as session:
        used = int(session.connection().exec_driver_sql("PRAGMA page_count").scalar() or 0)
    full.dispose()
    full = Database(db_url)
    _full_after(full, used + 2)
    collector = Collector(settings, full)
    try:
        report = collector.collect()
    finally:
        collector.close()
        full.dispose()
    (error,) = report.errors
    assert "database or disk is full" in (error.error or ""), error
    db = Database(db_url)
    try:
        with db.session() as session:
            assert queries.count_mentions(session) == 0  # all or nothing: the batch rolled back
            assert all(not row.cursor for row in state.all_states(session))
        collector = Collector(settings, db)
        try:
            assert not collector.collect().errors
        finally:
            collector.close()
        with db.session() as session:
            assert queries.count_mentions(session) == 20
    finally:
        db.dispose()
