"""`monitor demo`: the whole pipeline, offline, on bundled sample posts.

A local feed server serves a Blogger-style Atom feed (French) and an RSS feed (English); the
demo collects them into a temporary SQLite database with the default rules and prints the report.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path
from typing import TextIO

from monitor.collector import Collector
from monitor.config import Settings, settings_from_dict
from monitor.feedserver import FeedServer
from monitor.report import MENTION_TABLE, REPORT_TABLE, render, with_why
from monitor.storage.db import Database
from monitor.storage.queries import flagged_posts, list_mentions

DEMO_FEEDS = {
    "/feeds/posts/default": ("blog.atom.xml", "application/atom+xml; charset=UTF-8"),
    "/travel/rss.xml": ("travel.rss.xml", "application/rss+xml; charset=UTF-8"),
}


def demo_settings(server: FeedServer, database: str) -> Settings:
    return settings_from_dict(
        {
            "database": database,
            "brands": [
                {
                    "name": "Bouygues Telecom",
                    "aliases": ["Bouygues Télécom", "BouyguesTelecom", "Bouygues"],
                    "handles": ["@bouyguestelecom"],
                    "exclude": ["Bouygues Construction", "Bouygues Immobilier"],
                }
            ],
            "sources": [
                {"type": "rss", "name": "blogs", "every": "15m", "urls": [server.url(p) for p in DEMO_FEEDS]}
            ],
        },
        file="<demo>",
    )


def run_demo(out: TextIO, *, database: str | None = None, fmt: str = "table") -> int:
    """Collect the bundled sample, print mentions and report; return the number of flags."""
    data = resources.files("monitor.data").joinpath("demo")
    with tempfile.TemporaryDirectory(prefix="monitor-demo-") as tmp, FeedServer() as server:
        for path, (name, content_type) in DEMO_FEEDS.items():
            server.add(path, data.joinpath(name).read_bytes(), content_type=content_type)
        settings = demo_settings(server, database or f"sqlite:///{Path(tmp) / 'demo.db'}")
        db = Database(settings.database)
        collector = Collector(settings, db)
        try:
            cycle = collector.collect()
        finally:
            collector.close()
        with db.session() as session:
            mentions = list_mentions(session)
            flagged = with_why(flagged_posts(session))
        db.dispose()
    totals = cycle.totals
    if fmt == "table":
        out.write(
            f"Collected {totals.received} posts from {len(DEMO_FEEDS)} local feeds: {totals.stored} mention "
            f"the brand ({totals.unmatched} do not), {totals.flags} flagged, {totals.cases_opened} cases opened.\n\n"
        )
        render(mentions, fmt, table_columns=MENTION_TABLE, title="Mentions", out=out)
        out.write("\n")
    render(
        flagged, fmt, table_columns=REPORT_TABLE, title="Report: flagged posts, most urgent first", out=out
    )
    return totals.flags
