"""One end-to-end run with every source type at once (issue 11).

Each source has its own test module; this one checks what only shows when all six run together,
through the CLI and one config file as in production: RSS alert feeds (Google Alerts, Talkwalker),
X, Mastodon, Bluesky, Reddit and Hacker News polled by one `monitor collect --once` into one
database, secrets taken from the environment, a churn rule alerting Slack for posts from any of
them, a second poll that stores nothing new and asks from the saved cursors, a run where two
sources fail without stopping the others, and no secret in any output, log line or table.

The fakes are the per-source modules' own: `responses` for the requests-based SDKs (tweepy,
Mastodon.py, PRAW), their local HTTP servers for the httpx-based ones (atproto, monitor.http), the
feed server for RSS and `servers.slack_webhook` for Slack. Times in the Reddit and Hacker News
payloads are moved to the last hours: those sources only read back a few days on a first poll.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import responses
import test_bluesky as bluesky
import test_hackernews as hackernews
import test_mastodon as mastodon
import test_news_alerts as news_alerts
import test_reddit as reddit
import test_twitter as twitter
from conftest import reflected
from sqlalchemy import func, select

# The per-source fakes, registered here by import: `bsky` (local Bluesky), `algolia` (local HN
# search), `token` (Reddit's OAuth endpoint on `rsps`) and `sleeps` (autouse: prawcore never sleeps).
from test_bluesky import bsky  # noqa: F401
from test_hackernews import algolia  # noqa: F401
from test_reddit import sleeps, token  # noqa: F401

from monitor import logs
from monitor.cli import main
from monitor.feedserver import FeedServer
from monitor.storage.db import Database
from monitor.storage.tables import MentionRow, SourceStateRow

from servers import SlackWebhook, slack_webhook

BRAND = "Bouygues Telecom"
SLACK_SECRET_PATH = "s3cr3tw3bh00k"  # the secret part of the webhook URL (see servers.slack_webhook)
MASTO_TAG = "BouyguesTelecom"
MASTO_CHURN_ID = "113200000000000060"
HN_CHURN_ID = "46001500"
GOOGLE_PATH, TALKWALKER_PATH = "/alerts/feeds/0770/9780", "/alerts/rss/OPBC"
SOURCES = ("news", "x", "masto", "bsky", "reddit", "hn")
SUBS = "+".join(reddit.SUBS)
STREAMS = {
    ("x", "search"),
    ("masto", f"{mastodon.SOCIAL} search:{BRAND}"),
    ("masto", f"{mastodon.SOCIAL} tag:{MASTO_TAG}"),
    ("bsky", bluesky.STREAM),
    ("reddit", f"search:{SUBS}"),
    ("reddit", f"comments:{SUBS}"),
    ("hn", hackernews.PHRASE),
}
# What each source stores from the payloads below: every post naming the brand, once.
STORED = {
    "news": 4,  # 5 alert items; Bouygues Construction's stadium is an exclusion of the brand
    "x": 4,  # X's example page of 4 tweets (no retweet), the brand added to each text
    "masto": 5,  # the fixture's 5 statuses but the followers-only one, plus the churn post
    "bsky": 5,  # the fixture's search page
    "reddit": 7,  # 4 submissions and 3 comments naming the brand, out of 5 and 6
    "hn": 5,  # the phrase search's 5 hits, minus the story not naming the brand, plus the churn comment
}
FLAGGED = {
    "news": "Forum : résilier sa Bbox Bouygues Telecom sans frais ?",
    "x": "I am going to cancel",
    "masto": "je vais résilier",
    "bsky": "Je vais résilier.",
    "reddit": "Résilier chez Bouygues Télécom, mode d'emploi ?",
    "hn": "I am going to cancel",
}


@dataclass
class World:
    """The config file, the fakes behind it, and everything the CLI printed so far."""

    config: Path
    db_url: str
    rsps: responses.RequestsMock
    feeds: FeedServer
    bsky: bluesky.FakeBluesky
    algolia: hackernews.FakeAlgolia
    hook: SlackWebhook
    capfd: pytest.CaptureFixture[str]
    printed: list[str] = field(default_factory=list)

    def cli(self, *argv: str) -> tuple[int, str, str]:
        self.capfd.readouterr()
        code = main(["--config", str(self.config), "--log-level", "debug", *argv])
        out, err = self.capfd.readouterr()
        self.printed += [out, err]
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, _ = self.cli(*argv, "--format", "json")
        assert code == 0
        return json.loads(out)

    def secrets(self) -> list[str]:
        basic = base64.b64encode(f"{reddit.CLIENT_ID}:{reddit.SECRET}".encode()).decode()
        return [
            twitter.TOKEN,
            mastodon.TOKEN,
            bluesky.APP_PASSWORD,
            *self.bsky.issued,  # the Bluesky session's access and refresh tokens
            reddit.SECRET,
            basic,
            reddit.fixture("token.json")["access_token"],
            SLACK_SECRET_PATH,
        ]


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db_url: str,
    rsps: responses.RequestsMock,
    feed_server: FeedServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> Iterator[World]:
    fake_bsky: bluesky.FakeBluesky = request.getfixturevalue("bsky")
    fake_algolia: hackernews.FakeAlgolia = request.getfixturevalue("algolia")
    request.getfixturevalue("token")
    with slack_webhook() as hook:
        for name, value in {
            "X_BEARER_TOKEN": twitter.TOKEN,
            "MASTODON_ACCESS_TOKEN": mastodon.TOKEN,
            "BSKY_HANDLE": bluesky.HANDLE,
            "BSKY_APP_PASSWORD": bluesky.APP_PASSWORD,
            "REDDIT_CLIENT_ID": reddit.CLIENT_ID,
            "REDDIT_CLIENT_SECRET": reddit.SECRET,
            "SLACK_WEBHOOK_URL": hook.url,
        }.items():
            monkeypatch.setenv(name, value)
        config = tmp_path / "monitor.yaml"
        config.write_text(
            json.dumps(
                {
                    "database": db_url,
                    "brands": [
                        {
                            "name": BRAND,
                            "handles": [
                                "@bouyguestelecom",
                                "@bouyguestelecom@mastodon.social",
                                "@bouyguestelecom.bsky.social",
                            ],
                        }
                    ],
                    "sources": [
                        {
                            "type": "rss",
                            "name": "news",
                            "urls": [feed_server.url(GOOGLE_PATH), feed_server.url(TALKWALKER_PATH)],
                        },
                        {"type": "twitter", "name": "x", "bearer_token": "${X_BEARER_TOKEN}"},
                        {
                            "type": "mastodon",
                            "name": "masto",
                            "instances": [mastodon.SOCIAL],
                            "hashtags": [MASTO_TAG],
                            "access_token": "${MASTODON_ACCESS_TOKEN}",
                        },
                        {
                            "type": "bluesky",
                            "name": "bsky",
                            "handle": "${BSKY_HANDLE}",
                            "app_password": "${BSKY_APP_PASSWORD}",
                            "service": fake_bsky.url,
                        },
                        {
                            "type": "reddit",
                            "name": "reddit",
                            "client_id": "${REDDIT_CLIENT_ID}",
                            "client_secret": "${REDDIT_CLIENT_SECRET}",
                            "subreddits": list(reddit.SUBS),
                        },
                        {"type": "hackernews", "name": "hn", "api_url": fake_algolia.url},
                    ],
                    "rules": [
                        {
                            "name": "churn",
                            "severity": "high",
                            "when": {"words_any": ["résilier", "cancel"]},
                            "notify": ["slack"],
                        }
                    ],
                    "channels": {
                        "slack": {"type": "slack", "webhook_url": "${SLACK_WEBHOOK_URL}", "timeout": "2s"}
                    },
                },
                ensure_ascii=False,
            ),
            encoding="utf-8",
        )
        try:
            yield World(config, db_url, rsps, feed_server, fake_bsky, fake_algolia, hook, capfd)
        finally:
            logs.configure("WARNING", "human")  # main() installed a debug handler on the root logger


# --- what each fake serves ----------------------------------------------------------------------


def x_page() -> dict[str, Any]:
    page = twitter.without_next_token(twitter.naming_brand(twitter.fixture(twitter.USERS_PAGE)))
    page["data"][0]["text"] += " I am going to cancel"
    return page


def masto_churn() -> dict[str, Any]:
    return mastodon.make_status(MASTO_CHURN_ID, f"{BRAND} : troisième panne ce mois-ci, je vais résilier")


def reddit_listing(name: str) -> dict[str, Any]:
    """A saved listing with its posts moved to the last hours (its newest 5 minutes ago)."""
    listing = reddit.fixture(name)
    shift = time.time() - reddit.NOW.timestamp() - 300
    for child in listing["data"]["children"]:
        child["data"]["created_utc"] += shift
    return listing


def hn_hits() -> list[dict[str, Any]]:
    """The recorded hits moved to the last hours, and a new comment threatening to leave."""
    hits = hackernews.recorded_hits()
    shift = int(time.time()) - 120 - max(h["created_at_i"] for h in hits)
    for hit in hits:
        hit["created_at_i"] += shift
    churn = hackernews.comment(
        int(HN_CHURN_ID), int(time.time()) - 60, f"{BRAND} doubled my bill again. I am going to cancel"
    )
    return [*hits, churn]


def serve_all(world: World, failing: frozenset[str] = frozenset()) -> None:
    """Every source's answers; the sources in `failing` get an error instead (Mastodon a 500,
    Reddit a 429)."""
    world.feeds.add(GOOGLE_PATH, news_alerts.GOOGLE)
    world.feeds.add(TALKWALKER_PATH, news_alerts.TALKWALKER, content_type="application/rss+xml")
    twitter.serve(world.rsps, x_page())
    if "masto" in failing:
        world.rsps.add(
            responses.GET, mastodon.SEARCH_URL, json={"error": "Internal Server Error"}, status=500
        )
    else:
        mastodon.serve_search(world.rsps, [masto_churn(), *mastodon.load("search_statuses.json")["statuses"]])
    mastodon.serve_tag(world.rsps, mastodon.SOCIAL, MASTO_TAG, [masto_churn()])
    world.bsky.serve(bluesky.fixture_posts())
    if "reddit" in failing:
        limited = {"x-ratelimit-used": "101", "x-ratelimit-remaining": "0.0", "x-ratelimit-reset": "245"}
        reddit.serve(
            world.rsps, reddit.SEARCH_SUBS, reddit.fixture("error_429.json"), status=429, headers=limited
        )
    else:
        reddit.serve(world.rsps, reddit.SEARCH_SUBS, reddit_listing("search_page1.json"))
        reddit.serve(world.rsps, reddit.SEARCH_SUBS, reddit_listing("search_page2.json"), after="t3_1dcnz1a")
    reddit.serve(world.rsps, reddit.COMMENTS_SUBS, reddit_listing("comments_page1.json"))
    reddit.serve(world.rsps, reddit.COMMENTS_SUBS, reddit_listing("comments_page2.json"), after="t1_l7xh7bb")
    world.algolia.hits = hn_hits()


# --- what the database holds --------------------------------------------------------------------


def mentions_per_source(db_url: str) -> dict[str, int]:
    db = Database(db_url)
    try:
        with db.session() as session:
            rows = session.execute(
                select(MentionRow.source, MentionRow.brand, func.count()).group_by(
                    MentionRow.source, MentionRow.brand
                )
            ).all()
            unique = session.scalar(
                select(func.count()).select_from(
                    select(MentionRow.source, MentionRow.external_id).distinct().subquery()
                )
            )
    finally:
        db.dispose()
    assert {brand for _, brand, _ in rows} <= {BRAND}, rows
    counts = {source: count for source, _, count in rows}
    assert unique == sum(counts.values())  # no post stored twice
    return counts


def cursors(db_url: str) -> dict[tuple[str, str], dict[str, Any]]:
    db = Database(db_url)
    try:
        with db.session() as session:
            return {(r.source, r.stream): r.cursor for r in session.scalars(select(SourceStateRow))}
    finally:
        db.dispose()


def brand_accounts(db_url: str) -> set[str | None]:
    db = Database(db_url)
    try:
        with db.session() as session:
            return set(session.scalars(select(MentionRow.author_handle).where(MentionRow.author_is_brand)))
    finally:
        db.dispose()


def assert_no_secret_anywhere(world: World) -> None:
    """Not in anything printed or logged (at debug level), not in any column of any table."""
    output = "\n".join(world.printed)
    db = Database(world.db_url)
    try:
        metadata = reflected(db.engine)
        with db.session() as session:
            dumped = "\n".join(
                f"{table.name}: {tuple(row)!r}"
                for table in metadata.sorted_tables
                for row in session.execute(select(table))
            )
    finally:
        db.dispose()
    assert " DEBUG " in output  # the debug log was captured too
    assert "mentions: " in dumped and "source_state: " in dumped
    for secret in world.secrets():
        assert secret not in output, f"secret {secret[:6]}… printed or logged"
        assert secret not in dumped, f"secret {secret[:6]}… stored in the database"


def calls_to(rsps: responses.RequestsMock, url: str) -> list[Any]:
    """The requests the `responses` mock saw for this endpoint."""
    return [c for c in rsps.calls if (c.request.url or "").startswith(url)]


def slack_alerts(hook: SlackWebhook) -> list[tuple[str, int]]:
    """(source, case id) of each Slack post, from its Block Kit fields."""
    found = []
    for text in hook.texts():
        post = json.loads(text)
        fields = [f["text"] for b in post["blocks"] for f in b.get("fields", ())]
        value = {f.split("\n", 1)[0]: f.split("\n", 1)[1] for f in fields}
        found.append((value["*Source*"], int(value["*Case*"].removeprefix("#"))))
    return found


# --- the tests ----------------------------------------------------------------------------------


def test_every_source_in_one_run_then_a_second_poll_from_the_saved_cursors(world: World) -> None:
    serve_all(world)

    code, out, err = world.cli("collect", "--once")

    assert code == 0, err
    total = sum(STORED.values())
    assert f"collected {total} new mentions" in out and f"{len(SOURCES)} cases opened" in out
    assert mentions_per_source(world.db_url) == STORED
    # The brand's own Bluesky account, recognised from its handle in the brand.
    assert brand_accounts(world.db_url) == {"bouyguestelecom.bsky.social"}
    health = world.json("sources")
    streams = {(row["source"], row["stream"]) for row in health}
    assert streams == STREAMS | {("news", world.feeds.url(p)) for p in (GOOGLE_PATH, TALKWALKER_PATH)}
    assert {(row["source"], row["status"], row["last_error"]) for row in health} == {
        (source, "ok", None) for source in SOURCES
    }
    per_source: Counter[str] = Counter()
    for row in health:
        per_source[row["source"]] += row["mentions"]
    assert per_source == STORED
    saved = cursors(world.db_url)
    assert set(saved) == streams and all(saved.values()), saved

    # One case per flagged author, one Slack alert per case; the report has flags from every source.
    cases = world.json("cases", "list")
    assert len(cases) == len(SOURCES) and {c["severity"] for c in cases} == {"high"}
    code, out, err = world.cli("alerts", "send")
    assert (code, out) == (0, f"sent {len(SOURCES)}, will retry 0, failed 0\n"), err
    alerts = slack_alerts(world.hook)
    assert sorted(case for _, case in alerts) == sorted(c["id"] for c in cases)
    assert sorted(source for source, _ in alerts) == sorted(SOURCES)
    flags = world.json("report")
    assert {f["rule"] for f in flags} == {"churn"}
    assert {f["source"] for f in flags} == set(SOURCES)
    for flag in flags:
        assert FLAGGED[flag["source"]] in f"{flag['title'] or ''} {flag['text']}", flag

    # The second poll: nothing new stored, and each source asked from where the first one stopped.
    world.rsps.calls.reset()
    bsky_searches, hn_calls = len(world.bsky.searches()), len(world.algolia.requests)

    code, out, err = world.cli("collect", "--once")

    assert code == 0, err
    assert out.startswith("collected 0 new mentions") and "0 flags, 0 cases opened" in out
    assert mentions_per_source(world.db_url) == STORED
    x_search = calls_to(world.rsps, twitter.SEARCH_URL)
    assert [twitter.params(c).get("since_id") for c in x_search] == [saved[("x", "search")]["since_id"]]
    masto_tag = calls_to(world.rsps, mastodon.tag_url(mastodon.SOCIAL, MASTO_TAG))
    assert [mastodon.params(c).get("since_id") for c in masto_tag] == [MASTO_CHURN_ID]
    # Mastodon's search is never sent since_id (see monitor/sources/mastodon.py): nothing stored is proof.
    assert [c.param("since") for c in world.bsky.searches()[bsky_searches:]] == [bluesky.FLOOR]
    # Reddit: the search reads its first page only, as it reaches the saved position there.
    reddit_search = calls_to(world.rsps, reddit.SEARCH_SUBS)
    assert [reddit.params(c).get("after") for c in reddit_search] == [None]
    hn_since = saved[("hn", hackernews.PHRASE)]["since"]
    assert [r["numericFilters"] for r in world.algolia.requests[hn_calls:]] == [
        f"created_at_i>={hn_since - 120}"  # the saved `since` minus the overlap
    ]
    for path in (GOOGLE_PATH, TALKWALKER_PATH):
        first, second = world.feeds.hits_for(path)
        assert (first.status, second.status) == (200, 304)
        assert second.headers["If-None-Match"] == saved[("news", world.feeds.url(path))]["etag"]
    assert {row["status"] for row in world.json("sources")} == {"ok"}
    assert world.cli("alerts", "send")[1] == "sent 0, will retry 0, failed 0\n"
    assert len(world.hook.posts) == len(SOURCES)

    assert_no_secret_anywhere(world)


def test_failing_sources_do_not_stop_the_others_and_are_named_in_their_errors(world: World) -> None:
    serve_all(world, failing=frozenset({"masto", "reddit"}))

    code, _, err = world.cli("collect", "--once")

    assert code == 1
    working = {s: n for s, n in STORED.items() if s not in ("masto", "reddit")}
    assert mentions_per_source(world.db_url) == working
    search, tag = (f"{mastodon.SOCIAL} search:{BRAND}", f"{mastodon.SOCIAL} tag:{MASTO_TAG}")
    assert f"error masto [{search}]: mastodon.social server error (500); will retry" in err
    assert f"error masto [{tag}]: mastodon.social server error (500)" in err
    assert f"error reddit [search:{SUBS}]: Reddit API rate limit reached (429)" in err
    health = {(row["source"], row["stream"]): row for row in world.json("sources")}
    for (source, _), row in health.items():
        if source in working:
            assert (row["status"], row["last_error"]) == ("ok", None), row
            continue
        assert row["status"] in ("error", "parked"), row
        assert row["last_error"].startswith(f"source {source}: "), row
    assert "server error (500)" in health[("masto", search)]["last_error"]
    assert health[("masto", search)]["status"] == "error"
    limited = health[("reddit", f"search:{SUBS}")]
    assert limited["status"] == "parked" and "rate limit reached (429)" in limited["last_error"]
    assert "rate limit" in health[("reddit", f"comments:{SUBS}")]["last_error"]

    # The working sources' flags still reach Slack.
    assert world.cli("alerts", "send")[0] == 0
    assert sorted(source for source, _ in slack_alerts(world.hook)) == sorted(working)

    assert_no_secret_anywhere(world)
