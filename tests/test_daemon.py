"""`monitor run` as a real process: schedule, signals, reload, single-node SQLite, scale-out on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import POSTGRES

from monitor.feedserver import FeedServer
from monitor.storage import queries, retention
from monitor.storage.db import Database
from monitor.storage.tables import MentionRow

from feeds import rss
from servers import slack_webhook

BRANDS = [{"name": "Bouygues Telecom"}]
CHURN = "Bouygues Telecom: je vais résilier"


def item(n: int, text: str = "Bouygues Telecom est en panne", author: str = "Anne") -> dict[str, str]:
    return {
        "title": f"{text} #{n}",
        "link": f"https://b.example/{n}",
        "guid": f"post-{n}",
        "description": text,
        "dc:creator": author,
    }


def write_config(path: Path, db_url: str, urls: list[str], **extra: Any) -> Path:
    raw = {
        "database": db_url,
        "brands": BRANDS,
        "poll_jitter": "1s",
        "sources": [
            {"type": "rss", "name": f"feed{i}", "every": "1s", "urls": [url]} for i, url in enumerate(urls)
        ],
        **extra,
    }
    path.write_text(json.dumps(raw))
    return path


def start(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "--config", str(config), "--log-level", "info", "run", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stored(db_url: str) -> int:
    db = Database(db_url)
    try:
        with db.session() as session:
            return queries.count_mentions(session)
    finally:
        db.dispose()


def stop(process: subprocess.Popen[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=15)
    return process.returncode, out, time.monotonic() - started


def test_run_polls_on_schedule_and_stops_cleanly_on_sigterm(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    url = feed_server.add("/feed", rss([item(1)]), content_type="application/rss+xml")
    config = write_config(tmp_path / "monitor.yaml", db_url, [url])
    process = start(config)
    try:
        wait_for(lambda: stored(db_url) == 1, what="the first poll")
        feed_server.add("/feed", rss([item(2), item(1)]), content_type="application/rss+xml")
        wait_for(lambda: stored(db_url) == 2, what="the next scheduled poll")
        assert len(feed_server.hits_for("/feed")) >= 2
    finally:
        code, out, seconds = stop(process)
    assert code == 0, out
    assert seconds < 10 and "monitor stopped" in out


def test_sighup_with_a_broken_config_keeps_the_old_one(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    first = feed_server.add("/a", rss([item(1)]), content_type="application/rss+xml")
    second = feed_server.add("/b", rss([item(2)]), content_type="application/rss+xml")
    config = write_config(tmp_path / "monitor.yaml", db_url, [first])
    process = start(config)
    try:
        wait_for(lambda: stored(db_url) == 1, what="the first poll")
        config.write_text("brands: [\n")  # broken YAML
        process.send_signal(signal.SIGHUP)
        feed_server.add("/a", rss([item(3), item(1)]), content_type="application/rss+xml")
        wait_for(lambda: stored(db_url) == 2, what="polling to go on with the old config")
        write_config(config, db_url, [first, second])
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: stored(db_url) == 3, what="the new source of the reloaded config")
    finally:
        code, out, _ = stop(process)
    assert code == 0
    assert "reload refused, still running the previous config" in out and "invalid YAML" in out
    assert "config reloaded: 2 sources" in out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_refuses_a_second_node(tmp_path: Path, db_url: str, feed_server: FeedServer) -> None:
    config = write_config(tmp_path / "monitor.yaml", db_url, [feed_server.add("/f", rss([item(1)]))])
    first = start(config)
    try:
        wait_for(lambda: stored(db_url) == 1, what="the first node")
        second = subprocess.run(
            [sys.executable, "-m", "monitor", "--config", str(config), "run"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert second.returncode == 1
        assert "SQLite is single-node" in second.stderr and f"pid {first.pid}" in second.stderr
    finally:
        assert stop(first)[0] == 0


def test_status_exit_codes(tmp_path: Path, db_url: str, feed_server: FeedServer) -> None:
    config = write_config(tmp_path / "monitor.yaml", db_url, [feed_server.add("/f", rss([item(1)]))])
    healthy = subprocess.run(
        [sys.executable, "-m", "monitor", "--config", str(config), "status", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert json.loads(healthy.stdout)["healthy"] is True
    broken = write_config(tmp_path / "broken.yaml", "postgresql://nobody@127.0.0.1:1/none", [])
    down = subprocess.run(
        [sys.executable, "-m", "monitor", "--config", str(broken), "status"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert down.returncode == 1 and "UNREACHABLE" in down.stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_metrics_endpoint(tmp_path: Path, db_url: str, feed_server: FeedServer) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path / "monitor.yaml", db_url, [feed_server.add("/f", rss([item(1)]))])
    process = start(config, "--metrics-port", str(port))
    try:
        wait_for(lambda: stored(db_url) == 1, what="the first poll")

        def scraped() -> bool:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                return False
            return 'monitor_mentions_collected_total{source="feed0"} 1.0' in body

        wait_for(scraped, what="the metrics")
    finally:
        assert stop(process)[0] == 0


def test_retention_keeps_flagged_and_open_case_mentions(
    db: Database, make_settings: Callable[..., Any]
) -> None:
    from monitor.mention import Mention
    from monitor.pipeline import Pipeline

    settings = make_settings(rules=[{"name": "outage", "when": {"words_any": ["panne"]}}])
    old = datetime(2026, 1, 1, tzinfo=UTC)
    posts = [
        Mention(source="s", external_id="flagged", text="Bouygues Telecom en panne", author_id="a"),
        Mention(source="s", external_id="plain", text="Bouygues Telecom lance une box", author_id="b"),
        Mention(source="s", external_id="followup", text="Bouygues Telecom merci", author_id="a"),
    ]
    with db.session() as session:
        Pipeline(settings, enrichers=[]).ingest(session, posts, source="s", now=old)
    assert retention.purge(db, 30, old + timedelta(days=31), batch=1) == 1
    with db.session() as session:
        remaining = {m.external_id for m in session.query(MentionRow)}
    assert remaining == {"flagged", "followup"}  # the follow-up is in the open case's timeline


@pytest.mark.parametrize("db_url", [POSTGRES], indirect=True)
def test_three_nodes_on_postgresql_share_the_work_and_survive_a_kill(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    """20 feeds, 3 nodes: every item stored once, every alert sent once, each feed polled about
    once per interval cluster-wide; kill -9 one node and the others carry on."""
    with slack_webhook() as webhook:
        urls = [feed_server.add(f"/f{i}", rss([item(i * 100, CHURN, f"author{i}")])) for i in range(20)]
        config = write_config(
            tmp_path / "monitor.yaml",
            db_url,
            urls,
            rules=[
                {"name": "churn", "severity": "high", "when": {"words_any": ["résilier"]}, "notify": ["ops"]}
            ],
            channels={"ops": {"type": "slack", "webhook_url": webhook.url}},
        )
        nodes = [start(config) for _ in range(3)]
        try:
            wait_for(lambda: stored(db_url) == 20, timeout=40, what="the first items")
            window_start = time.monotonic()
            hits_before = {i: len(feed_server.hits_for(f"/f{i}")) for i in range(20)}
            time.sleep(4)
            window = time.monotonic() - window_start
            for i in range(20):
                polls = len(feed_server.hits_for(f"/f{i}")) - hits_before[i]
                assert polls <= window / 1.0 + 2, f"feed {i} polled {polls} times in {window:.1f}s by 3 nodes"
            nodes[0].kill()  # kill -9: no cleanup, its advisory locks die with its connection
            nodes[0].wait(timeout=10)
            for i in range(20):
                posts = [item(i * 100 + 1, CHURN, f"author{i}"), item(i * 100, CHURN, f"author{i}")]
                feed_server.add(f"/f{i}", rss(posts))
            wait_for(lambda: stored(db_url) == 40, timeout=40, what="the survivors to collect the new items")
            wait_for(lambda: len(webhook.posts) >= 20, timeout=40, what="the alerts")
            time.sleep(2)
        finally:
            outputs = [stop(node)[1] for node in nodes[1:]]
        texts = [p["text"] for p in webhook.posts]
        # One case per author: one alert each; their second posts attach to the open cases.
        assert len(texts) == len(set(texts)) == 20, outputs
    db = Database(db_url)
    with db.session() as session:
        ids = [m.external_id for m in session.query(MentionRow)]
    db.dispose()
    assert len(ids) == len(set(ids)) == 40


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    yield
    os.environ.pop("MONITOR_CONFIG", None)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_sqlite_database_locked_by_another_process_is_waited_for(
    tmp_path: Path, db_url: str, feed_server: FeedServer
) -> None:
    """Another program holds the write lock for a while: collection waits (busy timeout), then stores."""
    import sqlite3

    config = write_config(tmp_path / "monitor.yaml", db_url, [feed_server.add("/f", rss([item(1)]))])
    Database(db_url).dispose()  # create the schema first
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "--config", str(config), "collect", "--once"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(2)  # the collector is now waiting for the lock
    assert process.poll() is None
    holder.execute("COMMIT")
    holder.close()
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    assert stored(db_url) == 1
